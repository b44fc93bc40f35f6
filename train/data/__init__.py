"""What a run trains on, one folder per domain, and what every domain shares.

* ``batch``: ``Batch``, token rows with an explicit loss mask.
* ``objective``: the next-token loss on the scored positions (``mean_loss``,
  ``make_loss_fn``) and ``TokenRows``, the objective of the token sources.
* ``evaluation``: the ``Evaluator`` protocol and the mean-loss evaluator.
* ``sources``: the ``DataSource`` protocol and ``open_source``, which picks the source for
  ``data.path``.
* ``text/``: documents (files, ``builtin:stdlib``, ``hf:``), tokenizers, the corpus and
  its packed windows, the text source.
* ``synthetic/``: the paper's synthetic tasks (``synthetic:TASK``): formal languages,
  MQAR, their evaluation and source.
* ``series/``: time series for the forecaster (``series:...``): CSV/Parquet tables, the
  M1/M3/Tourism competitions, training windows and the series source.

Every source indexes its training batches by the step, so resuming at step k needs no
iterator state. Nothing here imports the loop or the run folders.
"""

"""The sLSTM op: reference (the spec), public entries (api), Pallas kernels by backend and
phase (``triton_scan.py``, ``triton_forward.py``, ``triton_backward.py``,
``triton_pointwise.py``)."""

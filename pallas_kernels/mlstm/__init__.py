"""The mLSTM op: reference (the spec), public entries (api), Pallas kernels by backend and
phase (``triton_chunkwise.py``, ``triton_forward.py``, ``triton_backward.py``,
``triton_step.py``; ``mosaic_chunkwise.py`` with its kernels in ``mosaic_kernels.py``)."""

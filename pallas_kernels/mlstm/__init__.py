"""The mLSTM op: reference (the spec), public entries (api), Pallas kernels by phase."""

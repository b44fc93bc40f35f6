"""The xLSTM-7B family ("xLSTM Large"): ``config`` (xLSTMLargeConfig and the reference's and
Hugging Face's field tables), ``model`` (xLSTMLarge), ``family`` (its registry entry),
``convert`` (name maps, state dicts) and ``checkpoint`` (checkpoint folders)."""

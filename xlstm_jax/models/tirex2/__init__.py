"""TiRex-2, the multivariate forecaster with covariates: ``config`` (TiRex2Config, the
reference's ``config.json``), ``model`` (TiRex2), ``forecast`` (packing, post-processing,
``predict``), ``convert`` (state dicts and checkpoint folders), ``family`` (its registry
entry)."""

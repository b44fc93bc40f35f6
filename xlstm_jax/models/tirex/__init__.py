"""The TiRex forecaster: ``config`` (TiRexConfig, ForecastError), ``model`` (TiRex),
``forecast`` (forecast, Forecast, quantile_loss, instance scaling), ``family`` (its registry
entry), ``convert`` (TiRex checkpoints, load_forecaster)."""

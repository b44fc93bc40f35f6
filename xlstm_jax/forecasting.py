"""One forecasting API for every forecaster family (TiRex and TiRex-2).

    import xlstm_jax
    model = xlstm_jax.load_forecaster("TiRex-2/")          # or tirex/model.ckpt, or a run
    out = xlstm_jax.forecast(model, [np.sin(np.arange(300) / 8)], prediction_length=64)
    out[0].quantiles                                       # (V_t, Q, H) = (1, 9, 64)
    out[0].mean                                            # (V_t, H): the median

    s = xlstm_jax.Series(target=demand, past_covariates=None, future_covariates=temp)
    out = xlstm_jax.forecast(model, [s], 48, quantile_levels=[0.1, 0.5, 0.9])

``series`` is a list whose items are 1-D arrays (one target; ragged lengths, NaN =
missing) or ``Series`` (several targets with covariates). TiRex forecasts univariate
targets only: each target row of a ``Series`` is forecast on its own and covariates are
refused. ``forecast_frame`` is the same call on a long-format ``pandas.DataFrame``.

Shape legend: V_t target variates of a series, V_p past and V_f future covariates, T the
series' length, H the horizon, Q quantile levels.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Series", "SeriesForecast"]


class Series(NamedTuple):
    """One (possibly multivariate) series: ``target`` (V_t, T) (or (T,)), ``past_covariates``
    (V_p, T) or None, ``future_covariates`` (V_f, >= T + H) or None (values beyond T + H are
    ignored). NaN marks a missing value."""

    target: np.ndarray
    past_covariates: np.ndarray | None = None
    future_covariates: np.ndarray | None = None


class SeriesForecast(NamedTuple):
    """One series' forecast: ``quantiles`` (V_t, Q, H) and ``mean`` (V_t, H), float32
    NumPy; ``quantile_levels`` the Q levels in order. The mean is the median (the point
    forecast TiRex and TiRex-2 give)."""

    quantiles: np.ndarray
    mean: np.ndarray
    quantile_levels: tuple[float, ...]

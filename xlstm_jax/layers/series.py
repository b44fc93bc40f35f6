"""The forecasters' input and output types, shared by every forecaster family and the one
forecasting API (``xlstm_jax.forecasting``, which exports them).

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

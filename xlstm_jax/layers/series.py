"""The forecasters' input and output types, shared by every forecaster family and the one
forecasting API (``xlstm_jax.forecasting``, which exports them).

Shape legend: V_t target variates of a series, V_p past and V_f future covariates, T the
series' length, H the horizon, Q quantile levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from xlstm_jax.layers.config import ForecastError

__all__ = ["Series", "SeriesForecast", "pick_levels"]


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

    @classmethod
    def of(cls, q: np.ndarray, idx: Sequence[int], median: int, levels) -> SeriesForecast:
        """From quantiles at all the model's levels, q (V_t, Q_all, H): those at ``idx``
        (the ``levels`` asked, ``pick_levels``) and the ``median`` row as the mean."""
        f32 = np.float32
        return cls(
            np.ascontiguousarray(q[:, idx], f32), np.ascontiguousarray(q[:, median], f32), levels
        )


def pick_levels(model_levels: Sequence[float], wanted) -> tuple[tuple[float, ...], list[int]]:
    """The levels asked (None: all the model's), as floats in the order asked, and their
    indices among the model's ``model_levels``.

    Raises:
      ForecastError: none asked, or a level the model does not predict.
    """
    levels = tuple(model_levels) if wanted is None else tuple(float(q) for q in wanted)
    if not levels or any(q not in model_levels for q in levels):
        raise ForecastError(
            f"quantile_levels {list(levels)}: the model predicts the levels "
            f"{list(model_levels)}; pick from those."
        )
    return levels, [list(model_levels).index(q) for q in levels]

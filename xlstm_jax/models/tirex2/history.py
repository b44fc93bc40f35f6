"""TiRex-2's whole-history forecast with a fixed scaling: the reference that
``xlstm_jax.streaming.ForecastStream`` is held to, computed in one pass and independently of
the stream.

``predict`` (``forecast.py``) cuts the context to ``context_len``, left-pads it and scales
each row over its window. Here every step of the history is read (patches aligned to its
end), the scaling is given (``history_scale`` of a first history, then frozen) and so is the
trend decision (``history_rows``' ``diff``). For a history of at most ``context_len`` steps
and H <= ``future_len``, with its own ``history_scale`` and ``detect_trends``' decision,
``predict_history`` is ``predict(..., pad_context=False)`` without the sign flip.

Shape legend: R rows of a series (targets, past covariates, future covariates), V_t its
targets, T its history, H the horizon, W the future window, Q quantile levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from xlstm_jax.layers.config import ForecastError
from xlstm_jax.layers.series import Series
from xlstm_jax.models.tirex2.forecast import (
    _forecast_rows_jit,
    _last_observed,
    _rows,
    detect_trends,
    differenced,
    window,
)
from xlstm_jax.models.tirex2.model import RowScale, TiRex2, scale_rows

__all__ = ["HistoryRows", "history_rows", "history_scale", "predict_history"]

_F32 = np.float32


class HistoryRows(NamedTuple):
    """One series as the rows of a whole-history pass: ``x`` (R, T + W) float32 (targets,
    differenced where ``is_diff``, and past covariates NaN over the window W; future
    covariates up to T + H, then NaN), ``target_mask`` (R,) bool, ``is_diff`` (R,) bool,
    ``last`` (R,) float32 last observed target levels, ``V_t`` the number of targets."""

    x: np.ndarray
    target_mask: np.ndarray
    is_diff: np.ndarray
    last: np.ndarray
    V_t: int
    window: int


def history_rows(model: TiRex2, series, H: int, diff: Sequence[bool] | None) -> HistoryRows:
    """The rows of one series (a ``Series`` or a target array) for ``predict_history``,
    the whole history kept (no ``context_len`` cut, no left padding). ``diff``: per target
    row whether it is differenced (None: ``detect_trends`` decides).

    Raises:
      ForecastError: as ``pack`` (a bad target, covariates of the wrong length).
    """
    s = series if isinstance(series, Series) else Series(series)
    t = _rows(s.target, "target", 0)
    if t.shape[1] == 0 or np.isnan(t).all(1).any():
        raise ForecastError("the target is empty or has a row with no observed value.")
    T, W = t.shape[1], window(model.config, H)
    diff = np.asarray(detect_trends(t) if diff is None else diff, bool)
    rows = [differenced(t, diff)]
    if s.past_covariates is not None:
        rows.append(_rows(s.past_covariates, "past_covariates", 0, T))
    rows = [np.pad(r, ((0, 0), (0, W)), constant_values=np.nan) for r in rows]
    if s.future_covariates is not None:
        fc = _rows(s.future_covariates, "future_covariates", 0, T + H, True)[:, : T + H]
        rows.append(np.pad(fc, ((0, 0), (0, T + W - fc.shape[1])), constant_values=np.nan))
    x = np.concatenate(rows).astype(_F32)
    V_t = len(t)
    tmask = np.arange(len(x)) < V_t
    is_diff = np.concatenate([diff, np.zeros(len(x) - V_t, bool)])
    last = np.concatenate([_last_observed(t), np.zeros(len(x) - V_t, _F32)])
    return HistoryRows(x, tmask, is_diff, last, V_t, W)


def history_scale(model: TiRex2, rows: HistoryRows) -> RowScale:
    """The scaling ``predict`` gives the rows of a history (``history_rows``): per row over
    its last ``context_len`` history steps and the future window (R, 1) each."""
    c = model.config
    x = rows.x[:, -(c.context_len + rows.window) :]
    return _scale_rows_jit(jnp.asarray(x), c)[1]


_scale_rows_jit = jax.jit(scale_rows, static_argnums=1)


def predict_history(
    model: TiRex2, rows: Sequence[HistoryRows], H: int, scales: Sequence[RowScale]
) -> list[np.ndarray]:
    """The forecast of whole histories with a fixed scaling, in one pass: the reference
    ``xlstm_jax.streaming.ForecastStream`` is held to.

    ``predict`` without the ``context_len`` cut or the left padding (patches aligned to the
    end of each history), the rows' scaling given (``history_scale`` of a first history,
    frozen) instead of computed, the trend decision fixed in the rows; a future window of
    ``max(future_len, H rounded up to patches)``. For a history of at most ``context_len``
    steps and H <= ``future_len``, with ``history_scale`` of its own rows and
    ``detect_trends``' decision, it is ``predict(..., pad_context=False)`` without the sign
    flip.

    Args:
      model: a ``TiRex2``.
      rows: the series' ``history_rows`` for the horizon H, all of one length (one pass).
      H: the horizon.
      scales: per series its rows' ``RowScale``, (R_i, 1) each.

    Returns:
      Per series (V_t, Q, H) float32: the post-processed quantiles of its targets.

    Raises:
      ForecastError: histories of different lengths.
    """
    if len({r.x.shape[1] for r in rows}) != 1 or len(rows) != len(scales):
        raise ForecastError(
            "predict_history runs one pass: give histories of one length, one scale each."
        )
    F = model.config.future_len
    x = np.concatenate([r.x for r in rows])
    tmask = np.concatenate([r.target_mask for r in rows])
    group = np.concatenate([np.full(len(r.x), g, np.int32) for g, r in enumerate(rows)])
    known = ~tmask & ~np.isnan(x[:, -F:]).all(1)
    parts = zip(*scales, strict=True)  # loc, scale, binary: each the series' (R_i, 1)
    scale = RowScale(*(jnp.asarray(np.concatenate([np.asarray(a) for a in z])) for z in parts))
    q = _forecast_rows_jit(
        model,
        jnp.asarray(x),
        jnp.asarray(tmask),
        jnp.asarray(group),
        jnp.asarray(np.concatenate([r.is_diff for r in rows])),
        jnp.asarray(np.concatenate([r.last for r in rows])),
        jnp.asarray(H, jnp.int32),
        bool(known.any()),
        window(model.config, H),
        scale,
    )
    q, out, start = np.asarray(q), [], 0
    for r in rows:
        out.append(q[start : start + r.V_t, :, :H])
        start += len(r.x)
    return out

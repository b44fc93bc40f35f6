"""TiRex's forecast API: instance scaling, the patch-by-patch rollout, ``forecast`` over
ragged series, and the training objective ``quantile_loss``.

Forecasting follows the reference exactly: the context is cut (or left-padded with NaN) to
``train_ctx_len`` values, the last position's prediction is the next patch, and a longer
horizon is rolled out patch by patch by appending a patch of NaN (the model was trained to
forecast across missing patches) and predicting again on the shifted window. The point
forecast ("mean") is the median, as TiRex returns it. (A released checkpoint loads with
``xlstm_jax.load_forecaster``.)

Shape legend: B batch, L context values, N = L / P patches, P patch size, Q quantile
levels, H forecast horizon.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xlstm_jax.layers.series import pick_levels
from xlstm_jax.models.tirex.config import ForecastError
from xlstm_jax.models.tirex.model import TiRex

__all__ = [
    "MAX_PREDICTION_LENGTH",
    "Forecast",
    "ScaleState",
    "context_windows",
    "forecast",
    "forecast_history",
    "instance_scale",
    "quantile_loss",
]

_F32 = jnp.float32

# The longest horizon ``forecast`` accepts. Every step beyond ``train_ctx_len`` values is
# forecast from a window of NaN patches alone, so this is far past any useful horizon; it
# keeps an absurd request (2e9 steps) from becoming an XLA shape that aborts or exhausts
# memory.
MAX_PREDICTION_LENGTH = 1_000_000


def max_magnitude(length: int) -> float:
    """The largest |value| a window of ``length`` values may hold so that ``instance_scale``
    stays finite in float32.

    The scaling sums the values (the mean) and the squares of their deviations from the
    mean (the variance) in float32. With every |x| <= M, |x - mean| <= 2M, so the sum of
    squares is at most length * (2M)^2 = 4 * length * M^2 (the plain sum, length * M, is
    far smaller). Keeping that under half the float32 maximum (a factor of 2 for the
    rounding of the float32 sums) gives M = sqrt(f32max / (8 * length)): about 1.4e17 for
    TiRex's 2048 values. Series inside this bound are scaled exactly as before.
    """
    return float(np.sqrt(np.finfo(np.float32).max / (8.0 * length)))


class ScaleState(NamedTuple):
    """Per-series location and scale of a context window, each (B, 1)."""

    loc: jax.Array
    scale: jax.Array


def instance_scale(x: jax.Array, eps: float = 1e-5) -> tuple[jax.Array, ScaleState]:
    """x (B, L) with NaN -> ((x - loc) / scale (B, L), ``ScaleState``), NaN-aware (see the
    module docstring)."""
    present = ~jnp.isnan(x)
    count = present.sum(-1, keepdims=True)
    safe = jnp.maximum(count, 1)
    loc = jnp.where(count > 0, jnp.where(present, x, 0.0).sum(-1, keepdims=True) / safe, 0.0)
    var = jnp.where(present, jnp.square(x - loc), 0.0).sum(-1, keepdims=True) / safe
    scale = jnp.where(count > 0, jnp.sqrt(var), 1.0)
    scale = jnp.where(scale == 0, jnp.abs(loc) + eps, scale)
    return (x - loc) / scale, ScaleState(loc, scale)


def _next_patches(model: TiRex, context: jax.Array, steps: int) -> jax.Array:
    """context (B, train_ctx_len) float32 -> the next ``steps`` patches' quantiles
    (B, Q, steps * P), rescaled: the reference's rollout, one patch per model call."""
    P = model.config.patch_size

    def one(ctx, _):
        scaled, st = instance_scale(ctx)
        patches = scaled.reshape(ctx.shape[0], -1, P)
        q = model.next_patch(patches)  # (B, Q, P)
        q = q * st.scale[:, :, None] + st.loc[:, :, None]
        # The next call sees the window shifted by a patch of NaN: TiRex forecasts across
        # missing patches instead of feeding its own forecast back.
        ctx = jnp.concatenate([ctx[:, P:], jnp.full_like(ctx[:, :P], jnp.nan)], axis=1)
        return ctx, q

    _, qs = jax.lax.scan(one, context, None, length=steps)  # (steps, B, Q, P)
    return jnp.moveaxis(qs, 0, 2).reshape(context.shape[0], qs.shape[2], steps * P)


_next_patches_jit = nnx.jit(_next_patches, static_argnums=2)


class Forecast(NamedTuple):
    """``quantiles`` (N, H, Q) and ``mean`` (N, H), float32 numpy; ``quantile_levels`` the
    Q levels in order. The mean is the median (TiRex's point forecast)."""

    quantiles: np.ndarray
    mean: np.ndarray
    quantile_levels: tuple[float, ...]


def context_windows(contexts, length: int) -> np.ndarray:
    """A list of 1-D series (ragged, NaN allowed) or a 2-D array (N, L) -> (N, length)
    float32: each series' last ``length`` values, left-padded with NaN.

    Raises:
      ForecastError: no series, a series that is not 1-D, empty, entirely NaN, holding
        inf, or with last ``length`` values too large to scale in float32
        (``max_magnitude``).
    """
    if isinstance(contexts, np.ndarray | jax.Array) and np.ndim(contexts) == 2:
        contexts = list(np.asarray(contexts))
    elif isinstance(contexts, np.ndarray | jax.Array) and np.ndim(contexts) == 1:
        contexts = [np.asarray(contexts)]
    if not isinstance(contexts, Sequence) or isinstance(contexts, str) or not len(contexts):
        raise ForecastError(
            "contexts must be a non-empty list of 1-D series or a 2-D array (series, time)."
        )
    out = np.full((len(contexts), length), np.nan, np.float32)
    for i, s in enumerate(contexts):
        try:
            a = np.asarray(s, np.float64)
        except (TypeError, ValueError) as e:
            raise ForecastError(f"series {i} is not numeric: {e}") from None
        if a.ndim != 1:
            raise ForecastError(f"series {i} must be 1-D; got shape {a.shape}.")
        if a.size == 0:
            raise ForecastError(f"series {i} is empty: give at least one observed value.")
        if np.isnan(a).all():
            raise ForecastError(
                f"series {i} has no observed value (all {a.size} are NaN): drop it or fill it."
            )
        if np.isinf(a).any():
            raise ForecastError(f"series {i} holds inf; replace it with NaN (missing).")
        a = a[-length:]
        big, limit = np.nanmax(np.abs(a), initial=0.0), max_magnitude(length)
        if big > limit:
            raise ForecastError(
                f"series {i} reaches magnitude {big:.3g} in its last {a.size} values (the "
                f"context the model sees), beyond the safe range |value| <= {limit:.3g}: the "
                f"forecaster scales a {length}-value context in float32, which would overflow "
                f"and give inf or NaN forecasts. Rescale the series, e.g. divide it by 1e6 "
                f"(and multiply the forecasts back)."
            )
        out[i, length - a.size :] = a
    return out


def forecast(
    model: TiRex,
    contexts,
    prediction_length: int,
    quantile_levels: Sequence[float] | None = None,
    batch_size: int = 256,
) -> Forecast:
    """Quantile forecasts of every series, ``prediction_length`` steps ahead.

    Args:
      model: a ``TiRex``.
      contexts: a list of 1-D series of any lengths (NaN = missing; longer than
        ``train_ctx_len`` keeps the last values) or a 2-D array (N, L).
      prediction_length: H >= 1; beyond one patch the forecast is rolled out patch by patch.
      quantile_levels: a subset of the model's levels (None: all of them).
      batch_size: series per compiled call (the last batch is padded, so one shape
        compiles once per horizon).

    Returns:
      ``Forecast`` with quantiles (N, H, Q) and mean (N, H). The same call gives the same
      numbers bit for bit, whatever the subset of levels. A series' forecast does not depend
      on the other series in its batch beyond float32 rounding (about 1e-6 of the series'
      scale): XLA does not promise bit-identical results across batch shapes, so a series
      forecast alone or with a different ``batch_size`` may differ in the last bits.

    Raises:
      ForecastError: a bad series (empty, all NaN, not 1-D, inf, or values too large to
        scale in float32: ``context_windows``), H < 1 or H > ``MAX_PREDICTION_LENGTH``, a
        level the model does not predict, batch_size < 1.
    """
    c = model.config
    if isinstance(prediction_length, bool) or not isinstance(prediction_length, int | np.integer):
        raise ForecastError(f"prediction_length must be an int >= 1; got {prediction_length!r}.")
    if prediction_length < 1:
        raise ForecastError(f"prediction_length must be >= 1; got {prediction_length}.")
    if prediction_length > MAX_PREDICTION_LENGTH:
        raise ForecastError(
            f"prediction_length {prediction_length} is beyond the limit of "
            f"{MAX_PREDICTION_LENGTH:,} steps (past train_ctx_len = {c.train_ctx_len} steps the "
            f"rollout forecasts from missing values only); ask for a shorter horizon."
        )
    if batch_size < 1:
        raise ForecastError(f"batch_size must be >= 1; got {batch_size}.")
    levels, idx = pick_levels(c.quantiles, quantile_levels)
    windows = context_windows(contexts, c.train_ctx_len)
    n = windows.shape[0]
    steps = -(-prediction_length // c.patch_size)
    bs = min(batch_size, n)
    outs = []
    for start in range(0, n, bs):
        chunk = windows[start : start + bs]
        pad = bs - chunk.shape[0]
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, chunk.shape[1]), np.float32)])
        q = _next_patches_jit(model, jnp.asarray(chunk), steps)
        outs.append(np.asarray(q)[: bs - pad])
    q = np.concatenate(outs)[:, :, :prediction_length]  # (N, Q_all, H)
    median = q[:, c.median_index]
    return Forecast(np.ascontiguousarray(q[:, idx].transpose(0, 2, 1)), median, levels)


def quantile_loss(model: TiRex, windows: jax.Array, hidden: jax.Array | None = None) -> jax.Array:
    """The training objective: mean pinball loss of every position's next-patch quantiles.

    Args:
      windows: (B, L) float, L a multiple of P, NaN = missing (left padding included).
        Patches 0..N-2 are the inputs, patches 1..N-1 the targets; the scaling comes from
        the inputs only.
      hidden: (B, N - 1) bool or None: input patches to hide (set missing) while their
        targets stay scored: TiRex's contiguous patch masking, which teaches the model to
        forecast across missing patches (the multi-patch rollout).

    Returns:
      A scalar: the pinball loss averaged over the levels and every observed target value,
      in the scaled domain.
    """
    c = model.config
    B, L = windows.shape
    P, Q = c.patch_size, len(c.quantiles)
    inputs, targets = windows[:, :-P], windows[:, P:]
    scaled, st = instance_scale(inputs)
    patches = scaled.reshape(B, -1, P)
    if hidden is not None:
        patches = jnp.where(hidden[:, :, None], jnp.nan, patches)
    pred = model(patches)  # (B, N-1, Q, P)
    y = ((targets - st.loc) / st.scale).reshape(B, -1, 1, P)
    observed = ~jnp.isnan(y)
    levels = jnp.asarray(c.quantiles, _F32).reshape(1, 1, Q, 1)
    err = jnp.where(observed, y, 0.0) - pred
    pinball = jnp.maximum(levels * err, (levels - 1.0) * err)
    total = jnp.sum(jnp.where(observed, pinball, 0.0))
    return total / (Q * jnp.maximum(jnp.sum(observed), 1))


def _history_forecast(model: TiRex, history: jax.Array, loc, scale, steps: int) -> jax.Array:
    P = model.config.patch_size
    B, T = history.shape
    scaled = (history - loc) / scale
    # Patches aligned to the end of the history (NaN on the left), then ``steps - 1``
    # patches of NaN: the rollout's missing patches, all in one causal pass.
    scaled = jnp.pad(scaled, ((0, 0), (-T % P, (steps - 1) * P)), constant_values=jnp.nan)
    q = model(scaled.reshape(B, -1, P))[:, -steps:]  # (B, steps, Q, P)
    q = q * scale[:, :, None, None] + loc[:, :, None, None]
    return jnp.moveaxis(q, 1, 2).reshape(B, q.shape[2], steps * P)


_history_forecast_jit = nnx.jit(_history_forecast, static_argnums=4)


def forecast_history(
    model: TiRex, history, scale: ScaleState, prediction_length: int
) -> np.ndarray:
    """The forecast of whole histories with a fixed scaling, in one pass: the reference
    ``xlstm_jax.streaming.ForecastStream`` is held to.

    Unlike ``forecast``, the history is not cut to ``train_ctx_len`` (every value is read,
    patches aligned to its end, the first left-padded with NaN), the scaling is given
    instead of computed from the window, and the rollout keeps that scaling: the model
    runs once over the history followed by ``ceil(H / P) - 1`` patches of NaN (the model
    is causal, so step k's output is the k-th rollout step). ``forecast`` rescales the
    shifted window at each step, which changes nothing while the shift drops only the
    NaN padding: for a history of at most ``train_ctx_len - (ceil(H/P) - 1) * P`` values,
    left-padded with NaN to ``train_ctx_len`` and given ``instance_scale`` of that window,
    the two agree.

    Args:
      model: a ``TiRex``.
      history: (B, T) float, NaN = missing (no inf).
      scale: ``ScaleState`` with loc and scale (B, 1).
      prediction_length: H >= 1.

    Returns:
      quantiles (B, Q, H) float32 on the series' scale, all the model's levels.
    """
    steps = -(-int(prediction_length) // model.config.patch_size)
    x = jnp.asarray(history, _F32)
    loc, sc = jnp.asarray(scale.loc, _F32), jnp.asarray(scale.scale, _F32)
    q = _history_forecast_jit(model, x, loc, sc, steps)
    return np.asarray(q)[:, :, :prediction_length]

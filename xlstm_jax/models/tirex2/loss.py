"""TiRex-2's training objective: the pinball loss of one pass's future window.

The reference ships no training code; this scores what its forecast reads
(``forecast.py``, step 3): the quantiles at the last ``future_len`` positions before the
final patch, against the true future of the target rows, in the scaled domain (each row's
``loc``/``scale`` from its context, then ``arcsinh`` unless the row is binary), so every
series weighs the same whatever its units.

Shape legend: R rows (targets, past and future covariates of all series), L = context +
F values per row, F = ``future_len``, Q quantile levels, N = L / P patches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from xlstm_jax.models.tirex2.model import TiRex2

__all__ = ["quantile_loss"]


def quantile_loss(
    model: TiRex2,
    x: jax.Array,
    target_mask: jax.Array,
    group: jax.Array,
    future: jax.Array,
) -> jax.Array:
    """The mean pinball loss of the model's future-window quantiles (differentiable).

    Args:
      model: a ``TiRex2``.
      x: (R, L) float, the packed rows as the forecast packs them: the context, then the
        future window, NaN where missing, and NaN over the future window of the targets and
        past covariates (future covariates keep their known values there). L a multiple
        of the patch size.
      target_mask: (R,) bool, True for a target row.
      group: (R,) int, the series id of each row (attention mixes rows of one id only).
      future: (R, F) float, the true values of the future window; scored where not NaN
        on target rows (covariate and padding rows, missing values: never scored).

    Returns:
      A scalar: the pinball loss averaged over the Q levels and every scored value, in the
      scaled domain (0 when nothing is scored).
    """
    c = model.config
    P, Q, F = c.patch_size, len(c.quantiles), c.future_len
    out, st = model.scaled_forecast(x, target_mask, group)  # (R, N, Q * P)
    R, N, _ = out.shape
    pred = out.reshape(R, N, Q, P).transpose(0, 2, 1, 3).reshape(R, Q, N * P)
    # Position n * P + j predicts step j of patch n + 1: the window is the last F steps
    # before the final patch's own prediction (which looks past the window).
    pred = pred[..., :-P][..., -F:]  # (R, Q, F)
    scored = ~jnp.isnan(future) & target_mask[:, None]
    # NaN labels are zeroed before any arithmetic: a NaN behind ``where`` still gives NaN
    # gradients.
    y = (jnp.where(scored, future, 0.0).astype(pred.dtype) - st.loc) / st.scale
    if c.use_arcsinh:
        y = jnp.where(st.binary, y, jnp.arcsinh(y))
    err = y[:, None, :] - pred
    levels = jnp.asarray(c.quantiles, pred.dtype)[None, :, None]
    pinball = jnp.maximum(levels * err, (levels - 1.0) * err)
    total = jnp.sum(jnp.where(scored[:, None, :], pinball, 0.0))
    return total / (Q * jnp.maximum(jnp.sum(scored), 1))

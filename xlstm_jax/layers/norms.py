"""Normalisations, all over one helper (``normalise``): the paper model's offset-weight
layer norms and the xLSTM-7B / TiRex RMS and per-head norms.

Reductions run in float32 (or wider) unless a layer turns that off; the variance is the
biased one, as ``torch.nn.functional.layer_norm``.

Shape legend: E features, NH heads, DH head dim.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xlstm_jax.layers.sharding import Axes, param

__all__ = ["HeadwiseLayerNorm", "LayerNorm", "MultiHeadLayerNorm", "RMSNorm", "normalise"]


def normalise(x: jax.Array, eps: float, *, center: bool = True, float32: bool = True) -> jax.Array:
    """Layer (``center``) or RMS normalisation of the last axis, no affine part.

    x (..., E) -> (..., E): ``x' = x - mean(x)`` when centring (else ``x``), then
    ``x' / sqrt(mean(x'^2) + eps)``; with ``float32`` the input is first promoted to float32
    (a float64 input stays float64).
    """
    if float32:
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if center:
        x = x - x.mean(-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.square(x).mean(-1, keepdims=True) + eps)


class LayerNorm(nnx.Module):
    """LayerNorm without bias whose weight is an offset: the scale is ``1 + weight``.

    Args: x (..., E) -> (..., E) in ``dtype``.
    """

    def __init__(
        self,
        ndim: int,
        *,
        weight: bool = True,
        bias: bool = False,
        eps: float = 1e-5,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        self.eps, self.dtype = eps, dtype
        self.weight = param(jnp.zeros((ndim,), param_dtype)) if weight else None
        self.bias = param(jnp.zeros((ndim,), param_dtype)) if bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = normalise(x, self.eps)
        if self.weight is not None:
            y = y * (1.0 + self.weight[...].astype(y.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        return y.astype(self.dtype)


class MultiHeadLayerNorm(nnx.Module):
    """Per-head layer norm (group norm with NH groups) with an offset weight of NH * DH.

    Args: x (..., NH, DH) -> (..., NH, DH) in ``dtype``.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        *,
        weight: bool = True,
        eps: float = 1e-5,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        self.eps, self.dtype = eps, dtype
        self.num_heads, self.head_dim = num_heads, head_dim
        self.weight = param(jnp.zeros((num_heads * head_dim,), param_dtype)) if weight else None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = normalise(x, self.eps)
        if self.weight is not None:
            scale = 1.0 + self.weight[...].astype(y.dtype)
            y = y * scale.reshape(self.num_heads, self.head_dim)
        return y.astype(self.dtype)


class RMSNorm(nnx.Module):
    """``x / rms(x) * weight (+ bias)`` over the last axis. x (..., E) -> (..., E) in ``dtype``."""

    def __init__(
        self,
        num_features: int,
        *,
        eps: float,
        use_bias: bool,
        force_float32_reductions: bool = True,
        axes: Axes = ("embed",),
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        self.eps, self.force_f32, self.dtype = eps, force_float32_reductions, dtype
        self.weight = param(jnp.ones((num_features,), param_dtype), axes)
        self.bias = param(jnp.zeros((num_features,), param_dtype), axes) if use_bias else None

    def _affine(self, y: jax.Array) -> jax.Array:
        y = y * self.weight[...].astype(y.dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        return y.astype(self.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._affine(normalise(x, self.eps, center=False, float32=self.force_f32))


class HeadwiseLayerNorm(RMSNorm):
    """Layer norm of each head, then one weight over all heads.

    x (B, S, NH, DH) -> (B, S, NH * DH) in ``dtype``.
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        y = normalise(x, self.eps, center=True, float32=self.force_f32)
        return self._affine(y.reshape(*y.shape[:-2], -1))

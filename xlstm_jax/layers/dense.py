"""Linear maps and the token embedding, each parameter created with its logical axes
(``xlstm_jax.layers.sharding.param``; a parameter without axes is left to the FSDP fallback).

Shape legend: F features, V vocabulary, E embedding dim.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xlstm_jax.layers.sharding import Axes, param

__all__ = ["Dense", "Embedding", "LinearHeadwiseExpand"]


class Dense(nnx.Module):
    """``x @ kernel (+ bias)`` over the last axis, computed in ``dtype``.

    Args: x (..., in_features) -> (..., out_features). ``kernel_axes``/``bias_axes`` are the
    parameters' logical axes (see ``xlstm_jax.layers.sharding``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool,
        kernel_init: nnx.Initializer,
        rngs: nnx.Rngs,
        bias_init: nnx.Initializer = nnx.initializers.zeros,
        kernel_axes: Axes | None = None,
        bias_axes: Axes | None = None,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        self.dtype = dtype
        shape = (in_features, out_features)
        self.kernel = param(kernel_init(rngs.params(), shape, param_dtype), kernel_axes)
        self.bias = (
            param(bias_init(rngs.params(), (out_features,), param_dtype), bias_axes)
            if use_bias
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        dims = (((x.ndim - 1,), (0,)), ((), ()))
        y = jax.lax.dot_general(x, self.kernel[...].astype(self.dtype), dims)
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class Embedding(nnx.Module):
    """Token embedding ``(V, E)`` (logical axes vocab, embed); ``attend`` is the tied LM head.

    Args: ids int (...) -> (..., E) in ``dtype``.
    """

    def __init__(
        self,
        num_embeddings: int,
        features: int,
        *,
        init: nnx.Initializer,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        self.dtype = dtype
        value = init(rngs.params(), (num_embeddings, features), param_dtype)
        self.embedding = param(value, ("vocab", "embed"))

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...].astype(self.dtype), ids, axis=0)

    def attend(self, x: jax.Array) -> jax.Array:
        """Logits (..., V) of hidden states x (..., E) against the embedding."""
        return jnp.dot(x.astype(self.dtype), self.embedding[...].astype(self.dtype).T)


class LinearHeadwiseExpand(nnx.Module):
    """Block-diagonal linear map: ``out[..., h, o] = sum_d x[..., h, d] W[h, o, d] (+ b)``.

    Args: x (..., F) -> (..., F) with F split into ``num_heads`` blocks. ``head_axis`` is
    the logical axis of the blocks (the weight's first dim and the bias).
    """

    def __init__(
        self,
        in_features: int,
        num_heads: int,
        *,
        bias: bool,
        init: nnx.Initializer,
        rngs: nnx.Rngs,
        head_axis: str,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        if in_features % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide in_features={in_features}.")
        self.num_heads, self.dtype = num_heads, dtype
        d = in_features // num_heads
        weight = init(rngs.params(), (num_heads, d, d), param_dtype)
        self.weight = param(weight, (head_axis, None, None))
        self.bias = param(jnp.zeros((in_features,), param_dtype), (head_axis,)) if bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        xh = x.astype(self.dtype).reshape(*x.shape[:-1], self.num_heads, -1)
        y = jnp.einsum("...hd,hod->...ho", xh, self.weight[...].astype(self.dtype))
        y = y.reshape(x.shape)
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y

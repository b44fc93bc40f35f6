"""Building blocks shared by the layers (reference semantics, our code).

Every parameter is created with its logical axes (``xlstm_jax.sharding.param``), which the
sharding rules map to the mesh; a parameter without axes is left to the FSDP fallback.

Shape legend: B batch, S sequence, E/F feature dim, NH heads, DH head dim, K conv taps,
V vocabulary.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from xlstm_jax.config import FeedForwardConfig
from xlstm_jax.sharding import Axes, param
from xlstm_jax.state import ConvState


def small_init(dim: int) -> nnx.Initializer:
    """N(0, sqrt(2 / (5 dim))) (Nguyen & Salazar, "Transformers without Tears")."""
    return nnx.initializers.normal(math.sqrt(2.0 / (5.0 * dim)))


def wang_init(dim: int, num_blocks: int) -> nnx.Initializer:
    """N(0, 2 / (num_blocks sqrt(dim))), for output projections into the residual stream."""
    return nnx.initializers.normal(2.0 / num_blocks / math.sqrt(dim))


class Dense(nnx.Module):
    """``x @ kernel (+ bias)`` over the last axis, computed in ``dtype``.

    Args: x (..., in_features) -> (..., out_features). ``kernel_axes``/``bias_axes`` are the
    parameters' logical axes (see ``xlstm_jax.sharding``).
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


def _layer_norm(x: jax.Array, eps: float) -> jax.Array:
    """Normalises the last axis in float32 or wider (biased variance, as ``F.layer_norm``)."""
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    return (x32 - mean) * jax.lax.rsqrt(var + eps)


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
        y = _layer_norm(x, self.eps)
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
        y = _layer_norm(x, self.eps)
        if self.weight is not None:
            scale = 1.0 + self.weight[...].astype(y.dtype)
            y = y * scale.reshape(self.num_heads, self.head_dim)
        return y.astype(self.dtype)


class CausalConv1d(nnx.Module):
    """Depthwise causal convolution over time: ``y_t = sum_k w[k] x_{t-K+1+k} + b``.

    The carried state is the last ``K - 1`` inputs, so a sequence processed in pieces
    equals the whole. Tap ``K - 1`` multiplies the current step.

    Args: x (B, S, F), state a ``ConvState`` (buffer (B, K-1, F)) or None (zeros) ->
    (y (B, S, F), the new ``ConvState``).
    """

    def __init__(
        self,
        feature_dim: int,
        kernel_size: int,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        self.kernel_size, self.feature_dim, self.dtype = kernel_size, feature_dim, dtype
        # PyTorch's Conv1d default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = K (depthwise).
        bound = 1.0 / math.sqrt(kernel_size)
        uniform = nnx.initializers.uniform(2 * bound)
        self.weight = param(uniform(rngs.params(), (kernel_size, feature_dim), param_dtype) - bound)
        self.bias = param(uniform(rngs.params(), (feature_dim,), param_dtype) - bound)

    def init_state(self, batch_size: int) -> ConvState:
        return ConvState(
            jnp.zeros((batch_size, self.kernel_size - 1, self.feature_dim), self.dtype)
        )

    def __call__(
        self, x: jax.Array, state: ConvState | None = None, doc_starts: jax.Array | None = None
    ) -> tuple[jax.Array, ConvState]:
        """``doc_starts`` (B, S) bool: taps that would reach back across a document start
        read zeros (as at the start of a sequence)."""
        K, S = self.kernel_size, x.shape[1]
        if state is None:
            state = self.init_state(x.shape[0])
        xp = jnp.concatenate([state.buffer.astype(self.dtype), x.astype(self.dtype)], axis=1)
        w = self.weight[...].astype(self.dtype)
        if doc_starts is None:
            y = sum(xp[:, k : k + S] * w[k] for k in range(K))
        else:
            # Input t - d is in output t's document iff no document starts in (t - d, t].
            seg = jnp.cumsum(doc_starts.astype(jnp.int32), axis=1)
            segp = jnp.concatenate([jnp.zeros_like(seg[:, : K - 1]), seg], axis=1)
            y = sum(
                xp[:, k : k + S] * w[k] * (segp[:, k : k + S] == seg)[..., None].astype(xp.dtype)
                for k in range(K)
            )
        y = y + self.bias[...].astype(self.dtype)
        return y, ConvState(xp[:, xp.shape[1] - (K - 1) :])


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


_ACTS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # torch's default GELU is exact
    "relu": jax.nn.relu,
    "relu^2": lambda x: jnp.square(jax.nn.relu(x)),
    "sigmoid": jax.nn.sigmoid,
    "swish": jax.nn.silu,
    "selu": jax.nn.selu,
}


class GatedFeedForward(nnx.Module):
    """``proj_down(act(gate) * up)`` with ``[gate | up] = proj_up(x)``.

    Args: x (B, S, E) -> (B, S, E).
    """

    def __init__(
        self,
        config: FeedForwardConfig,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        E, P = config.embedding_dim, config.proj_up_dim
        self.act = _ACTS[config.act_fn]
        kw = dict(use_bias=config.bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.proj_up = Dense(
            E,
            2 * P,
            kernel_init=small_init(E),
            kernel_axes=("embed", "mlp"),
            bias_axes=("mlp",),
            **kw,
        )
        self.proj_down = Dense(
            P, E, kernel_init=wang_init(E, config._num_blocks), kernel_axes=("mlp", "embed"), **kw
        )
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs) if config.dropout > 0 else None

    def __call__(self, x: jax.Array) -> jax.Array:
        gate, up = jnp.split(self.proj_up(x), 2, axis=-1)
        y = self.proj_down(self.act(gate) * up)
        return self.dropout(y) if self.dropout is not None else y

"""The depthwise causal convolution of the paper's mLSTM and sLSTM layers.

Shape legend: B batch, S sequence, F features, K conv taps.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from xlstm_jax.layers.sharding import param
from xlstm_jax.layers.state import ConvState

__all__ = ["CausalConv1d"]


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

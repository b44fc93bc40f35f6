"""sLSTM layer and block (post-up-projection block: sLSTM cell then a gated feed-forward).

Shape legend: B batch, S sequence, E embedding dim, NH heads, DH = E / NH, G = 4 gates.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

import pallas_kernels as pk
from xlstm_jax.components import (
    CausalConv1d,
    GatedFeedForward,
    LayerNorm,
    LinearHeadwiseExpand,
    MultiHeadLayerNorm,
    small_init,
)
from xlstm_jax.config import sLSTMBlockConfig, sLSTMLayerConfig
from xlstm_jax.sharding import param, shard_op
from xlstm_jax.state import BlockState, SLSTMState

# Logical axes of the cell's operands: heads and batch are independent.
_UNIT = ("batch", "heads", None)


def _bias_init(config: sLSTMLayerConfig) -> jax.Array:
    """Gate biases (NH, 4, DH) by ``bias_init`` (gate order i, f, z, o)."""
    NH, DH = config.num_heads, config.head_dim
    b = jnp.zeros((NH, 4, DH), jnp.float32)
    if config.bias_init == "powerlaw_blockdependent":
        # Forget bias spread over a power law whose exponent grows with depth.
        ratio = config._block_idx / (config._num_blocks - 1) if config._num_blocks > 1 else 0.0
        pos = jnp.arange(DH, dtype=jnp.float32) / max(DH - 1, 1)
        fb = -(-5.0 + 12.0 * pos ** (0.3 + 1.3 * ratio))
        b = b.at[:, 1].set(fb)
    elif config.bias_init == "small_init":
        b = b.at[:, 1].set(jnp.linspace(3.0, 6.0, DH))
    return b


class sLSTMLayer(nnx.Module):
    """x (B, S, E) -> (y (B, S, E), new state): conv, headwise gate projections, sLSTM cell,
    group norm. The state is a ``BlockState`` (conv buffer or None, ``SLSTMState``).

    Our ``igate`` feeds the cell's input gate and ``fgate`` its forget gate. (The reference
    swaps the two *names*; ``xlstm_jax.convert`` maps them.)
    """

    def __init__(
        self,
        config: sLSTMLayerConfig,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        config.validate()
        self.config, self.dtype = config, dtype
        E, NH, DH = config.embedding_dim, config.num_heads, config.head_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1d = (
            CausalConv1d(E, config.conv1d_kernel_size, **kw)
            if config.conv1d_kernel_size > 0
            else None
        )
        for name in ("igate", "fgate", "zgate", "ogate"):
            gate = LinearHeadwiseExpand(
                E, NH, bias=False, init=small_init(E), head_axis="heads", **kw
            )
            setattr(self, name, gate)
        if config.recurrent_weight_init == "zeros":
            R = jnp.zeros((NH, DH, 4, DH), param_dtype)
        else:
            bound = 1.0 / math.sqrt(E)
            R = jax.random.uniform(rngs.params(), (NH, DH, 4, DH), param_dtype, -bound, bound)
        self.recurrent_kernel = param(R, ("heads", None, None, None))  # (NH, DH_in, 4, DH_out)
        if config.bias_init == "standard":
            bound = 1.0 / math.sqrt(E)
            bias = jax.random.uniform(rngs.params(), (NH, 4, DH), jnp.float32, -bound, bound)
        else:
            bias = _bias_init(config)
        self.bias = param(bias.astype(param_dtype), ("heads", None, None))  # (NH, 4, DH)
        self.group_norm = MultiHeadLayerNorm(
            NH, DH, weight=config.group_norm_weight, dtype=dtype, param_dtype=param_dtype
        )
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs) if config.dropout > 0 else None

    def init_state(self, batch_size: int) -> BlockState:
        c = self.config
        return BlockState(
            conv=None if self.conv1d is None else self.conv1d.init_state(batch_size),
            cell=pk.slstm_zero_state(batch_size, c.num_heads, c.head_dim),
        )

    def __call__(
        self, x: jax.Array, state: BlockState | None = None
    ) -> tuple[jax.Array, BlockState]:
        """x (B, S, E) and the state (None: zeros) -> (y (B, S, E), the new state)."""
        c = self.config
        B, S, E = x.shape
        conv_state = None
        if self.conv1d is not None:
            x_c, conv_state = self.conv1d(x, None if state is None else state.conv)
            x_c = jax.nn.silu(x_c)
        else:
            x_c = x.astype(self.dtype)
        gates = jnp.stack(
            [self.igate(x_c), self.fgate(x_c), self.zgate(x), self.ogate(x)], axis=2
        ).reshape(B, S, 4, c.num_heads, c.head_dim)

        def cell(gates, R, b, *state):
            y, last = pk.slstm(
                gates,
                R,
                b,
                initial_state=SLSTMState(*state) if state else None,
                return_last_state=True,
                function=c.function,
                impl=c.impl,
            )
            return y, tuple(last)

        args = (gates, self.recurrent_kernel[...], self.bias[...])
        in_axes = [
            ("batch", None, None, "heads", None),
            ("heads", None, None, None),
            ("heads", None, None),
        ]
        if state is not None:
            args += tuple(state.cell)
            in_axes += [_UNIT] * 4
        y, cell_state = shard_op(
            cell, args, in_axes, (("batch", None, "heads", None), (_UNIT,) * 4)
        )
        if self.dropout is not None:
            y = self.dropout(y)
        y = self.group_norm(y).reshape(B, S, E)
        return y, BlockState(conv=conv_state, cell=SLSTMState(*cell_state))


class sLSTMBlock(nnx.Module):
    """``x + sLSTMLayer(LayerNorm(x))`` then ``x + FFN(LayerNorm(x))``.

    x (B, S, E) and a ``BlockState`` (None: zeros) -> (y (B, S, E), the new state).
    """

    def __init__(
        self,
        config: sLSTMBlockConfig,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        E = config.slstm.embedding_dim
        norm_kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.xlstm_norm = LayerNorm(E, **norm_kw)
        self.xlstm = sLSTMLayer(config.slstm, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        if config.feedforward is not None:
            self.ffn_norm = LayerNorm(E, **norm_kw)
            self.ffn = GatedFeedForward(
                config.feedforward, rngs=rngs, dtype=dtype, param_dtype=param_dtype
            )
        else:
            self.ffn_norm = self.ffn = None

    def init_state(self, batch_size: int) -> BlockState:
        return self.xlstm.init_state(batch_size)

    def __call__(
        self,
        x: jax.Array,
        state: BlockState | None = None,
        doc_starts: jax.Array | None = None,
    ) -> tuple[jax.Array, BlockState]:
        """``doc_starts`` must be None: resetting the sLSTM's recurrent h at document starts
        is not implemented (``xLSTMBlockStack`` says so before calling)."""
        if doc_starts is not None:
            raise ValueError("sLSTMBlock does not support document-boundary resets.")
        y, state = self.xlstm(self.xlstm_norm(x), state)
        x = x + y
        if self.ffn is not None:
            x = x + self.ffn(self.ffn_norm(x))
        return x, state

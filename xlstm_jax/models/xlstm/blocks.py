"""The paper model's blocks: the mLSTM layer and block (pre-up-projection, matrix memory)
and the sLSTM block (post-up-projection: sLSTM layer, then a gated feed-forward).

Shape legend: B batch, S sequence, E embedding dim, I inner dim (= proj_factor E rounded),
NH heads, DH = I / NH head dim, K conv taps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

import pallas_kernels as pk
from xlstm_jax.layers.conv import CausalConv1d
from xlstm_jax.layers.dense import Dense, LinearHeadwiseExpand
from xlstm_jax.layers.feedforward import GatedFeedForward
from xlstm_jax.layers.init import linspace, normal, small_init, wang_init
from xlstm_jax.layers.mlstm import mlstm_cell, reset_forget_gate
from xlstm_jax.layers.norms import LayerNorm, MultiHeadLayerNorm
from xlstm_jax.layers.sharding import param
from xlstm_jax.layers.slstm import sLSTMLayer
from xlstm_jax.layers.state import BlockState
from xlstm_jax.models.xlstm.config import mLSTMLayerConfig, sLSTMBlockConfig

__all__ = ["mLSTMBlock", "mLSTMLayer", "sLSTMBlock", "sLSTMLayer"]


class mLSTMLayer(nnx.Module):
    """x (B, S, E) -> (y (B, S, E), new state).

    ``x_m, z = proj_up(x)``; ``x_c = silu(conv(x_m))``; ``q, k = proj(x_c)``, ``v = proj(x_m)``;
    scalar gates per head from ``[q, k, v]``; ``h = (outnorm(cell) + skip * x_c) * silu(z)``;
    ``y = proj_down(h)``. The state is a ``BlockState`` (conv buffer, ``MLSTMState``).
    """

    def __init__(
        self,
        config: mLSTMLayerConfig,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        config.validate()
        self.config, self.dtype = config, dtype
        E, I, NH = config.embedding_dim, config.inner_embedding_dim, config.num_heads
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.proj_up = Dense(
            E,
            2 * I,
            use_bias=config.bias,
            kernel_init=small_init(E),
            kernel_axes=("embed", "inner"),
            bias_axes=("inner",),
            **kw,
        )
        n_blocks = I // config.qkv_proj_blocksize
        # The reference initialises q, k, v with the *embedding* dim, not the inner dim.
        for name in ("q_proj", "k_proj", "v_proj"):
            proj = LinearHeadwiseExpand(
                I, n_blocks, bias=config.bias, init=small_init(E), head_axis="inner", **kw
            )
            setattr(self, name, proj)
        self.conv1d = CausalConv1d(I, config.conv1d_kernel_size, **kw)
        # Gate pre-activations are computed in float32 whatever the compute dtype.
        gate_kw = dict(
            use_bias=True,
            kernel_init=nnx.initializers.zeros,
            kernel_axes=(None, "heads"),
            bias_axes=("heads",),
            dtype=jnp.promote_types(dtype, jnp.float32),
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.igate = Dense(3 * I, NH, bias_init=normal(0.1), **gate_kw)
        self.fgate = Dense(3 * I, NH, bias_init=linspace(3.0, 6.0), **gate_kw)
        self.outnorm = MultiHeadLayerNorm(NH, I // NH, dtype=dtype, param_dtype=param_dtype)
        self.learnable_skip = param(jnp.ones((I,), param_dtype))
        self.proj_down = Dense(
            I,
            E,
            use_bias=config.bias,
            kernel_init=wang_init(E, config._num_blocks),
            kernel_axes=("inner", "embed"),
            **kw,
        )
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs) if config.dropout > 0 else None

    def init_state(self, batch_size: int) -> BlockState:
        c = self.config
        cell = pk.mlstm_zero_state(batch_size, c.num_heads, c.head_dim, c.head_dim)
        return BlockState(conv=self.conv1d.init_state(batch_size), cell=cell)

    def __call__(
        self,
        x: jax.Array,
        state: BlockState | None = None,
        doc_starts: jax.Array | None = None,
    ) -> tuple[jax.Array, BlockState]:
        """x (B, S, E) and the state (None: zeros) -> (y (B, S, E), the new state).

        ``doc_starts`` (B, S) bool marks the first token of each packed document: the
        forget gate is closed there and the conv does not reach across it."""
        c = self.config
        B, S, _ = x.shape
        NH, I = c.num_heads, c.inner_embedding_dim
        x_m, z = jnp.split(self.proj_up(x), 2, axis=-1)
        x_c, conv_state = self.conv1d(x_m, None if state is None else state.conv, doc_starts)
        x_c = jax.nn.silu(x_c)
        q, k, v = self.q_proj(x_c), self.k_proj(x_c), self.v_proj(x_m)
        gate_in = jnp.concatenate([q, k, v], axis=-1)
        gate_in = gate_in.astype(jnp.promote_types(gate_in.dtype, jnp.float32))
        i = jnp.swapaxes(self.igate(gate_in), 1, 2)  # (B, NH, S)
        f = reset_forget_gate(jnp.swapaxes(self.fgate(gate_in), 1, 2), doc_starts)

        def heads(t):
            return t.reshape(B, S, NH, I // NH).transpose(0, 2, 1, 3)

        h, cell_state = mlstm_cell(
            heads(q),
            heads(k),
            heads(v),
            i,
            f,
            None if state is None else state.cell,
            form=c.form,
            chunk_size=c.chunk_size,
            impl=c.impl,
        )
        h = self.outnorm(h.transpose(0, 2, 1, 3)).reshape(B, S, I)
        h = (h + self.learnable_skip[...].astype(self.dtype) * x_c) * jax.nn.silu(z)
        y = self.proj_down(h)
        if self.dropout is not None:
            y = self.dropout(y)
        return y, BlockState(conv=conv_state, cell=cell_state)


class mLSTMBlock(nnx.Module):
    """``x + mLSTMLayer(LayerNorm(x))`` (no feed-forward).

    x (B, S, E) and a ``BlockState`` (None: zeros) -> (y (B, S, E), the new state).
    """

    def __init__(
        self,
        config: mLSTMLayerConfig,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        self.xlstm_norm = LayerNorm(config.embedding_dim, dtype=dtype, param_dtype=param_dtype)
        self.xlstm = mLSTMLayer(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

    def init_state(self, batch_size: int) -> BlockState:
        return self.xlstm.init_state(batch_size)

    def __call__(
        self,
        x: jax.Array,
        state: BlockState | None = None,
        doc_starts: jax.Array | None = None,
    ) -> tuple[jax.Array, BlockState]:
        y, state = self.xlstm(self.xlstm_norm(x), state, doc_starts)
        return x + y, state


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
            self.ffn = GatedFeedForward.from_config(
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

"""mLSTM layer and block (paper version: pre-up-projection block with matrix memory).

Shape legend: B batch, S sequence, E embedding dim, I inner dim (= proj_factor E rounded),
NH heads, DH = I / NH head dim, K conv taps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

import pallas_kernels as pk
from xlstm_jax.components import (
    CausalConv1d,
    LayerNorm,
    LinearHeadwiseExpand,
    MultiHeadLayerNorm,
    small_init,
    wang_init,
)
from xlstm_jax.config import mLSTMLayerConfig
from xlstm_jax.sharding import shard_op

# Per-layer recurrent state: {"conv": (B, K-1, I), "cell": (C (B,NH,DH,DH), n (B,NH,DH), m (B,NH))}
MLSTMLayerState = dict


class mLSTMLayer(nnx.Module):
    """x (B, S, E) -> y (B, S, E).

    ``x_m, z = proj_up(x)``; ``x_c = silu(conv(x_m))``; ``q, k = proj(x_c)``, ``v = proj(x_m)``;
    scalar gates per head from ``[q, k, v]``; ``h = (outnorm(cell) + skip * x_c) * silu(z)``;
    ``y = proj_down(h)``.
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
        zeros = nnx.initializers.zeros
        self.proj_up = nnx.Linear(
            E, 2 * I, use_bias=config.bias, kernel_init=small_init(E), bias_init=zeros, **kw
        )
        n_blocks = I // config.qkv_proj_blocksize
        # The reference initialises q, k, v with the *embedding* dim, not the inner dim.
        for name in ("q_proj", "k_proj", "v_proj"):
            setattr(
                self,
                name,
                LinearHeadwiseExpand(I, n_blocks, bias=config.bias, init=small_init(E), **kw),
            )
        self.conv1d = CausalConv1d(I, config.conv1d_kernel_size, **kw)
        # Gate pre-activations are computed in float32 whatever the compute dtype.
        gate_kw = dict(
            dtype=jnp.promote_types(dtype, jnp.float32), param_dtype=param_dtype, rngs=rngs
        )
        self.igate = nnx.Linear(
            3 * I, NH, kernel_init=zeros, bias_init=nnx.initializers.normal(0.1), **gate_kw
        )
        self.fgate = nnx.Linear(
            3 * I, NH, kernel_init=zeros, bias_init=_linspace(3.0, 6.0), **gate_kw
        )
        self.outnorm = MultiHeadLayerNorm(NH, I // NH, dtype=dtype, param_dtype=param_dtype)
        self.learnable_skip = nnx.Param(jnp.ones((I,), param_dtype))
        self.proj_down = nnx.Linear(
            I,
            E,
            use_bias=config.bias,
            kernel_init=wang_init(E, config._num_blocks),
            bias_init=zeros,
            **kw,
        )
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs) if config.dropout > 0 else None

    def init_state(self, batch_size: int) -> MLSTMLayerState:
        c = self.config
        return {
            "conv": self.conv1d.init_state(batch_size),
            "cell": pk.mlstm_zero_state(batch_size, c.num_heads, c.head_dim, c.head_dim),
        }

    def _cell(self, q, k, v, i, f, state):
        """q, k, v: (B, NH, S, DH); i, f: (B, NH, S) float32. Returns (h, new state)."""
        c = self.config
        S = q.shape[2]
        if state is None:
            backend = c.backend
            if backend == "auto":
                backend = "parallel" if c.chunk_size >= S else "chunkwise"
        elif S == 1:
            backend = "step"  # decoding: one fused step
        else:
            backend = "recurrent" if c.backend == "recurrent" else "chunkwise"

        def cell(q, k, v, i, f, *state):
            state = state or None
            if backend == "parallel":
                return pk.mlstm_parallel(q, k, v, i, f), None
            if backend == "step":
                h, new = pk.mlstm_step(
                    q[:, :, 0],
                    k[:, :, 0],
                    v[:, :, 0],
                    i[..., 0],
                    f[..., 0],
                    state,
                    impl=c.impl,
                    interpret=c.interpret,
                )
                return h[:, :, None], new
            if backend == "recurrent":
                return pk.mlstm_recurrent(
                    q, k, v, i, f, initial_state=state, return_last_state=True
                )
            return pk.mlstm_chunkwise(
                q,
                k,
                v,
                i,
                f,
                chunk_size=c.chunk_size,
                initial_state=state,
                return_last_state=True,
                impl=c.impl,
                interpret=c.interpret,
            )

        # Heads and batch are independent: run the op per shard (no hidden all-gathers).
        seq, gate = ("batch", "heads", None, None), ("batch", "heads", None)
        state_axes = (seq, gate, ("batch", "heads"))
        args = (q, k, v, i, f) + (tuple(state) if state is not None else ())
        in_axes = (seq, seq, seq, gate, gate) + (state_axes if state is not None else ())
        out_axes = (seq, None if backend == "parallel" else state_axes)
        return shard_op(cell, args, in_axes, out_axes)

    def __call__(self, x: jax.Array, state: MLSTMLayerState | None = None):
        """Returns y (B, S, E), and the new state when ``state`` is given."""
        c = self.config
        B, S, _ = x.shape
        NH, I = c.num_heads, c.inner_embedding_dim
        x_m, z = jnp.split(self.proj_up(x), 2, axis=-1)
        x_c, conv_state = self.conv1d(x_m, None if state is None else state["conv"])
        x_c = jax.nn.silu(x_c)
        q, k, v = self.q_proj(x_c), self.k_proj(x_c), self.v_proj(x_m)
        gate_in = jnp.concatenate([q, k, v], axis=-1)
        gate_in = gate_in.astype(jnp.promote_types(gate_in.dtype, jnp.float32))
        i = jnp.swapaxes(self.igate(gate_in), 1, 2)  # (B, NH, S)
        f = jnp.swapaxes(self.fgate(gate_in), 1, 2)

        def heads(t):
            return t.reshape(B, S, NH, I // NH).transpose(0, 2, 1, 3)

        h, cell_state = self._cell(
            heads(q), heads(k), heads(v), i, f, None if state is None else state["cell"]
        )
        h = self.outnorm(h.transpose(0, 2, 1, 3)).reshape(B, S, I)
        h = (h + self.learnable_skip[...].astype(self.dtype) * x_c) * jax.nn.silu(z)
        y = self.proj_down(h)
        if self.dropout is not None:
            y = self.dropout(y)
        if state is None:
            return y
        return y, {"conv": conv_state, "cell": cell_state}


def _linspace(start: float, end: float) -> nnx.Initializer:
    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.linspace(start, end, shape[0], dtype=dtype)

    return init


class mLSTMBlock(nnx.Module):
    """``x + mLSTMLayer(LayerNorm(x))`` (no feed-forward). x (B, S, E) -> (B, S, E)."""

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

    def init_state(self, batch_size: int):
        return self.xlstm.init_state(batch_size)

    def __call__(self, x: jax.Array, state=None):
        if state is None:
            return x + self.xlstm(self.xlstm_norm(x))
        y, state = self.xlstm(self.xlstm_norm(x), state)
        return x + y, state

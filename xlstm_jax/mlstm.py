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
    Dense,
    LayerNorm,
    LinearHeadwiseExpand,
    MultiHeadLayerNorm,
    small_init,
    wang_init,
)
from xlstm_jax.config import mLSTMLayerConfig
from xlstm_jax.sharding import param, shard_op
from xlstm_jax.state import BlockState, MLSTMState

# Logical axes of the cell's operands: heads and batch are independent.
_SEQ, _GATE = ("batch", "heads", None, None), ("batch", "heads", None)
_STATE = (_SEQ, _GATE, ("batch", "heads"))


# The forget-gate pre-activation forced at a document's first token: log sigmoid(-60) = -60,
# so the carried state is scaled by e^-60 (~1e-26), below float32 (and float64) rounding
# next to any new input (gates are soft-capped or bounded well inside +-60). A finite value
# keeps the chunkwise cumulative gate sums free of inf - inf.
RESET_FGATE_PREACT = -60.0


def reset_forget_gate(f: jax.Array, doc_starts: jax.Array | None) -> jax.Array:
    """``f`` (B, NH, S) with the gate closed where ``doc_starts`` (B, S) bool is set: no state
    crosses into a new document (packed training). None: ``f`` unchanged."""
    if doc_starts is None:
        return f
    return jnp.where(doc_starts[:, None, :], jnp.asarray(RESET_FGATE_PREACT, f.dtype), f)


def cell_form(form: str, chunk_size: int, impl: str, S: int, has_state: bool) -> str:
    """Which op runs the cell for S tokens: "step", "parallel", "chunkwise" or "recurrent",
    given a layer's ``form`` knob ("auto" or one of those), ``chunk_size`` and ``impl``."""
    if has_state and S == 1:
        return "step"  # decoding: one fused step (every form computes the same there)
    if form != "auto":
        return form
    return "parallel" if chunk_size >= S and impl != "pallas" else "chunkwise"


def mlstm_cell(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    i: jax.Array,
    f: jax.Array,
    state: MLSTMState | None,
    *,
    form: str,
    chunk_size: int,
    impl: str,
    eps: float = 1e-6,
) -> tuple[jax.Array, MLSTMState]:
    """The mLSTM cell of every layer that has one, sharded over batch and heads.

    q, k (B, NH, S, DHQK), v (B, NH, S, DHV), i, f (B, NH, S) float32 gate pre-activations
    and the state (None: zeros) -> (h (B, NH, S, DHV), the state after the last step).
    ``form``/``chunk_size``/``impl`` are the layer's knobs (see ``cell_form``).
    """
    S = q.shape[2]
    form = cell_form(form, chunk_size, impl, S, state is not None)

    def cell(q, k, v, i, f, *state):
        state = MLSTMState(*state) if state else None
        if form == "step":
            h, new = pk.mlstm_step(
                q[:, :, 0],
                k[:, :, 0],
                v[:, :, 0],
                i[..., 0],
                f[..., 0],
                state,
                eps=eps,
                impl=impl,
            )
            return h[:, :, None], tuple(new)
        if form == "recurrent":
            h, last = pk.mlstm_recurrent(
                q, k, v, i, f, initial_state=state, return_last_state=True, eps=eps, impl=impl
            )
            return h, tuple(last)
        # The parallel form with a carried state is one chunk of the chunkwise form (on
        # XLA, the parallel form's only implementation).
        L, cimpl = (S, "xla") if form == "parallel" else (chunk_size, impl)
        h, last = pk.mlstm_chunkwise(
            q,
            k,
            v,
            i,
            f,
            chunk_size=L,
            initial_state=state,
            return_last_state=True,
            eps=eps,
            impl=cimpl,
        )
        if form == "parallel" and state is None:
            # From a zero state, the outputs are the reference's stabilised parallel form;
            # the final state above continues them (dead code under jit when unused).
            h = pk.mlstm_parallel(q, k, v, i, f, eps=eps, impl=impl)
        return h, tuple(last)

    args = (q, k, v, i, f) + (tuple(state) if state is not None else ())
    in_axes = (_SEQ, _SEQ, _SEQ, _GATE, _GATE) + (_STATE if state is not None else ())
    h, last = shard_op(cell, args, in_axes, (_SEQ, _STATE))
    return h, MLSTMState(*last)


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
        self.igate = Dense(3 * I, NH, bias_init=nnx.initializers.normal(0.1), **gate_kw)
        self.fgate = Dense(3 * I, NH, bias_init=_linspace(3.0, 6.0), **gate_kw)
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


def _linspace(start: float, end: float) -> nnx.Initializer:
    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.linspace(start, end, shape[0], dtype=dtype)

    return init


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

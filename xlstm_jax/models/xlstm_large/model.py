"""The xLSTM-7B family ("xLSTM Large", Beck et al. 2025, arXiv 2503.13427) in Flax NNX.

    from xlstm_jax import xLSTMLarge, xLSTMLargeConfig
    model = xLSTMLarge(xLSTMLargeConfig(embedding_dim=128, num_heads=2, num_blocks=2,
                                        vocab_size=256), rngs=nnx.Rngs(0))
    logits = model(tokens)                                  # (B, S) int -> (B, S, V) float32
    logits, state = model.with_state(tokens, model.init_state(B))

The architecture, as ``xlstm.xlstm_large.model`` (xlstm 2.0.6) and transformers'
``xLSTMForCausalLM`` define it: token embedding; per block ``x + mLSTM(RMSNorm(x))`` then
``x + SwiGLU(RMSNorm(x))`` (``layers.feedforward.GatedFeedForward``); a final RMSNorm; an
untied LM head; logits soft-capped ``cap * tanh(logits / cap)``. The mLSTM layer computes,
from the normed input x (B, S, E) with plain linear maps (no conv, no skip, no
block-diagonal projections):
``q, k`` (qk_dim), ``v`` and the output-gate pre-activation ``o`` (v_dim), and per head the
input/forget gate pre-activations ``i, f`` (with bias, soft-capped at ``gate_soft_cap``);
``h = cell(q, k, v, i, f)`` (the same ``pallas_kernels`` ops as the v1 mLSTM: parallel,
chunkwise, recurrent, step); ``y = out_proj(sigmoid(o) * LayerNorm_per_head(h))``.

Norm weights multiply directly (initialised to 1), unlike the v1 blocks' ``1 + weight``.
Gate pre-activations, normalisation reductions, soft caps and recurrent states are float32
whatever the compute dtype.

Initialisation follows transformers' ``xLSTMPreTrainedModel._init_weights`` (single
layout): every linear map whose name contains "gate" (``igate_preact``, ``fgate_preact``,
``ogate_preact``, ``ffn.proj_up_gate``) starts with zero weights; the input-gate bias is -10
and the forget-gate bias ``linspace(3, 6, NH)``; ``out_proj`` and ``ffn.proj_down`` use
Wang's init (std ``2 / num_blocks / sqrt(dim)``, dim E and the FFN width), all other
matrices and the embedding small init (std ``sqrt(2 / (5 E))``); biases 0, norm weights 1.

Shape legend: B batch, S sequence, E embedding dim, NH heads, DHQK / DHV head dims of
q, k / v, F feed-forward width, V vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

import pallas_kernels as pk
from xlstm_jax.layers.dense import Dense, Embedding
from xlstm_jax.layers.feedforward import GatedFeedForward
from xlstm_jax.layers.init import linspace, small_init, wang_init
from xlstm_jax.layers.mlstm import mlstm_cell, reset_forget_gate
from xlstm_jax.layers.norms import HeadwiseLayerNorm, RMSNorm
from xlstm_jax.layers.stack import check_doc_starts, check_tokens, run_blocks
from xlstm_jax.layers.state import BlockState, StackState
from xlstm_jax.models.xlstm_large.config import xLSTMLargeConfig

__all__ = ["xLSTMLarge", "xLSTMLargeBlock", "xLSTMLargeBlockStack", "xLSTMLargeLayer", "soft_cap"]

_F32 = jnp.float32


def soft_cap(x: jax.Array, cap: float | None) -> jax.Array:
    """``cap * tanh(x / cap)`` in float32 (or wider); ``x`` itself when ``cap`` is None."""
    if cap is None:
        return x
    x = x.astype(jnp.promote_types(x.dtype, _F32))
    return cap * jnp.tanh(x / cap)


class xLSTMLargeLayer(nnx.Module):
    """The mLSTM layer. x (B, S, E) and an ``MLSTMState`` (None: zeros) ->
    (y (B, S, E), the state after the last step)."""

    def __init__(self, config: xLSTMLargeConfig, *, rngs: nnx.Rngs, dtype, param_dtype):
        self.config, self.dtype = config, dtype
        c = config
        E, NH = c.embedding_dim, c.num_heads
        kw = dict(use_bias=c.use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        zeros = nnx.initializers.zeros
        self.q = Dense(E, c.qk_dim, kernel_init=small_init(E), kernel_axes=("embed", "inner"), **kw)
        self.k = Dense(E, c.qk_dim, kernel_init=small_init(E), kernel_axes=("embed", "inner"), **kw)
        self.v = Dense(E, c.v_dim, kernel_init=small_init(E), kernel_axes=("embed", "inner"), **kw)
        self.ogate_preact = Dense(
            E, c.v_dim, kernel_init=zeros, kernel_axes=("embed", "inner"), **kw
        )
        # The gate pre-activations are float32 whatever the compute dtype.
        gate_kw = dict(
            use_bias=True,
            kernel_init=zeros,
            kernel_axes=(None, "heads"),
            bias_axes=("heads",),
            dtype=jnp.promote_types(dtype, _F32),
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.igate_preact = Dense(E, NH, bias_init=nnx.initializers.constant(-10.0), **gate_kw)
        self.fgate_preact = Dense(E, NH, bias_init=linspace(3.0, 6.0), **gate_kw)
        self.multihead_norm = HeadwiseLayerNorm(
            c.v_dim,
            eps=c.norm_eps,
            use_bias=c.use_bias,
            force_float32_reductions=c.norm_reduction_force_float32,
            axes=("inner",),
            dtype=dtype,
            param_dtype=param_dtype,
        )
        self.out_proj = Dense(
            c.v_dim,
            E,
            kernel_init=wang_init(E, c.num_blocks),
            kernel_axes=("inner", "embed"),
            **kw,
        )

    def init_state(self, batch_size: int) -> pk.MLSTMState:
        c = self.config
        return pk.mlstm_zero_state(batch_size, c.num_heads, c.qk_head_dim, c.v_head_dim)

    def __call__(
        self,
        x: jax.Array,
        state: pk.MLSTMState | None = None,
        doc_starts: jax.Array | None = None,
    ) -> tuple[jax.Array, pk.MLSTMState]:
        """``doc_starts`` (B, S) bool: the forget gate is closed at each document's first
        token (packed training), so no state crosses documents."""
        c = self.config
        B, S, _ = x.shape
        NH = c.num_heads

        def heads(t):  # (B, S, NH * D) -> (B, NH, S, D)
            return t.reshape(B, S, NH, -1).transpose(0, 2, 1, 3)

        x_gate = x.astype(jnp.promote_types(x.dtype, _F32))
        i = soft_cap(self.igate_preact(x_gate), c.gate_soft_cap).swapaxes(1, 2)  # (B, NH, S)
        f = soft_cap(self.fgate_preact(x_gate), c.gate_soft_cap).swapaxes(1, 2)
        f = reset_forget_gate(f, doc_starts)  # after the cap, which would bound it at -15
        h, state = mlstm_cell(
            heads(self.q(x)),
            heads(self.k(x)),
            heads(self.v(x)),
            i,
            f,
            state,
            form=c.form,
            chunk_size=c.chunk_size,
            impl=c.impl,
            eps=c.eps,
        )
        h = self.multihead_norm(h.transpose(0, 2, 1, 3))  # (B, S, v_dim)
        y = self.out_proj(jax.nn.sigmoid(self.ogate_preact(x)) * h)
        return y, state


class xLSTMLargeBlock(nnx.Module):
    """``x + mLSTM(RMSNorm(x))``, then ``x + FFN(RMSNorm(x))``.

    x (B, S, E) and a ``BlockState`` (None: zeros) -> (y (B, S, E), the new state).
    """

    def __init__(self, config: xLSTMLargeConfig, *, rngs: nnx.Rngs, dtype, param_dtype):
        c = config
        norm = dict(
            eps=c.norm_eps,
            use_bias=c.use_bias,
            force_float32_reductions=c.norm_reduction_force_float32,
            dtype=dtype,
            param_dtype=param_dtype,
        )
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.norm_mlstm = RMSNorm(c.embedding_dim, **norm)
        self.mlstm_layer = xLSTMLargeLayer(c, **kw)
        self.norm_ffn = RMSNorm(c.embedding_dim, **norm)
        self.ffn = GatedFeedForward(
            c.embedding_dim,
            c.ffn_dim,
            gate_init=nnx.initializers.zeros,
            down_init=wang_init(c.ffn_dim, c.num_blocks),
            use_bias=c.use_bias,
            **kw,
        )

    def init_state(self, batch_size: int) -> BlockState:
        return BlockState(conv=None, cell=self.mlstm_layer.init_state(batch_size))

    def __call__(
        self,
        x: jax.Array,
        state: BlockState | None = None,
        doc_starts: jax.Array | None = None,
    ) -> tuple[jax.Array, BlockState]:
        cell_state = None if state is None else state.cell
        y, cell = self.mlstm_layer(self.norm_mlstm(x), cell_state, doc_starts)
        x = x + y
        x = x + self.ffn(self.norm_ffn(x))
        return x, BlockState(conv=None, cell=cell)


class xLSTMLargeBlockStack(nnx.Module):
    """The blocks, then the output RMSNorm (``add_out_norm``).

    x (B, S, E) and a ``StackState`` (None: zeros) -> (y (B, S, E), the new state).
    """

    def __init__(self, config: xLSTMLargeConfig, *, rngs: nnx.Rngs):
        self.config = config
        dtype, param_dtype = jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.blocks = nnx.List([xLSTMLargeBlock(config, **kw) for _ in range(config.num_blocks)])
        self.out_norm = (
            RMSNorm(
                config.embedding_dim,
                eps=config.norm_eps,
                use_bias=config.use_bias,
                force_float32_reductions=config.norm_reduction_force_float32,
                dtype=dtype,
                param_dtype=param_dtype,
            )
            if config.add_out_norm
            else None
        )

    def init_state(self, batch_size: int) -> StackState:
        return StackState(tuple(block.init_state(batch_size) for block in self.blocks))

    def __call__(
        self,
        x: jax.Array,
        state: StackState | None = None,
        doc_starts: jax.Array | None = None,
    ) -> tuple[jax.Array, StackState]:
        states = (None,) * len(self.blocks) if state is None else state.blocks
        x, new_states = run_blocks(self.blocks, x, states, doc_starts, self.config)
        if self.out_norm is not None:
            x = self.out_norm(x)
        return x, StackState(new_states)


class xLSTMLarge(nnx.Module):
    """The xLSTM-Large language model: ``soft_cap(lm_head(backbone(embedding(tokens))))``.

    ``model(tokens)``: tokens int (B, S) -> logits (B, S, V) float32 (float64 for a float64
    model), from the zero state; any S. ``model.with_state(tokens, state)`` -> ``(logits,
    new StackState)`` continues from ``model.init_state(B)`` or an earlier call's state, so
    prefill and decoding are pieces of one sequence. The same interface as ``xLSTMLMModel``
    (``hidden_states``, ``logits``), so ``generate`` and the trainer take either.
    """

    def __init__(self, config: xLSTMLargeConfig, *, rngs: nnx.Rngs):
        self.config = config
        dtype, param_dtype = jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)
        E, V = config.embedding_dim, config.vocab_size
        self.embedding = Embedding(
            V, E, init=small_init(E), dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.backbone = xLSTMLargeBlockStack(config, rngs=rngs)
        self.lm_head = Dense(
            E,
            V,
            use_bias=False,
            kernel_init=small_init(E),
            kernel_axes=("embed", "vocab"),
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def init_state(self, batch_size: int) -> StackState:
        """The zero state: per block C (B, NH, DHQK, DHV), n (B, NH, DHQK), m (B, NH)."""
        return self.backbone.init_state(batch_size)

    def __call__(self, tokens: jax.Array, doc_starts: jax.Array | None = None) -> jax.Array:
        return self.logits(self.hidden_states(tokens, doc_starts))

    def with_state(
        self, tokens: jax.Array, state: StackState | None
    ) -> tuple[jax.Array, StackState]:
        """Logits (B, S, V) of ``tokens`` (B, S) continuing from ``state`` (None: zeros),
        and the state after them."""
        check_tokens(tokens)
        x, state = self.backbone(self.embedding(tokens), state)
        return self.logits(x), state

    def hidden_states(self, tokens: jax.Array, doc_starts: jax.Array | None = None) -> jax.Array:
        """The final hidden states (B, S, E) of ``tokens`` (B, S) from a zero state;
        ``doc_starts`` (B, S) bool marks packed documents' first tokens (no state crosses
        them)."""
        check_tokens(tokens)
        check_doc_starts(doc_starts, tokens)
        return self.backbone(self.embedding(tokens), None, doc_starts)[0]

    def logits(self, x: jax.Array) -> jax.Array:
        """The LM head and the logit soft cap on hidden states (..., E) -> (..., V) float32."""
        logits = self.lm_head(x)
        logits = logits.astype(jnp.promote_types(logits.dtype, _F32))
        return soft_cap(logits, self.config.output_logit_soft_cap)

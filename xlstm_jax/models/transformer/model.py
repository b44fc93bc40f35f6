"""A small causal Transformer (Llama-style) baseline with the xLSTM LM's interface.

Shape legend: B batch, S sequence, E embedding dim, N heads, H head dim, F feed-forward
dim, V vocabulary.

Pre-norm blocks ``x + attn(rmsnorm(x))`` then ``x + swiglu(rmsnorm(x))``; rotary
positions (Su et al. 2021) on queries and keys; causal ``jax.nn.dot_product_attention``; a
final RMSNorm and an (optionally tied) LM head. ``TransformerLM(config, rngs=...)`` is
called like ``xLSTMLMModel``: ``model(tokens)`` with int (B, S) -> float32 logits (B, S, V),
and exposes ``.config``; the training CLI builds it for a ``model`` section of type
``TransformerConfig`` (``xlstm_jax.models.transformer.config``; the ``llama_*`` configs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xlstm_jax.layers.dense import Dense, Embedding
from xlstm_jax.layers.feedforward import GatedFeedForward
from xlstm_jax.layers.init import small_init, wang_init
from xlstm_jax.models.transformer.config import TransformerConfig

__all__ = ["TransformerLM", "apply_rotary"]


def apply_rotary(x: jax.Array, theta: float) -> jax.Array:
    """Rotary position embedding of ``x`` (B, S, N, H): pairs ``(x_i, x_{i+H/2})`` rotate by
    ``pos * theta^(-2i/H)``, so ``q_s . k_t`` depends on positions only through ``s - t``."""
    S, H = x.shape[1], x.shape[-1]
    freqs = theta ** (-jnp.arange(0, H // 2, dtype=jnp.float32) * 2 / H)  # (H/2,)
    angles = jnp.arange(S, dtype=jnp.float32)[:, None] * freqs  # (S, H/2)
    cos, sin = jnp.cos(angles)[None, :, None], jnp.sin(angles)[None, :, None]
    x32 = x.astype(jnp.float32)
    a, b = x32[..., : H // 2], x32[..., H // 2 :]
    return jnp.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1).astype(x.dtype)


class _Block(GatedFeedForward):
    """One pre-norm block: causal self-attention, then a SwiGLU feed-forward.

    The feed-forward's weights are the block's own ``gate_up`` ([gate | up]) and
    ``ffn_down`` (the baseline's checkpoint names), hence a ``GatedFeedForward`` subclass
    rather than a child module. x (B, S, E) -> (B, S, E).
    """

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        E, F = cfg.embedding_dim, cfg.ffn_dim
        kw = {"dtype": jnp.dtype(cfg.dtype), "param_dtype": jnp.dtype(cfg.param_dtype)}
        lin = {"use_bias": False, "rngs": rngs, **kw}
        self.cfg = cfg
        self.attn_norm = nnx.RMSNorm(E, epsilon=cfg.norm_eps, rngs=rngs, **kw)
        self.qkv = Dense(E, 3 * E, kernel_init=small_init(E), **lin)
        self.attn_out = Dense(E, E, kernel_init=wang_init(E, cfg.num_blocks), **lin)
        self.ffn_norm = nnx.RMSNorm(E, epsilon=cfg.norm_eps, rngs=rngs, **kw)
        GatedFeedForward.__init__(
            self,
            E,
            F,
            names=(None, "gate_up", "ffn_down"),
            down_init=wang_init(E, cfg.num_blocks),
            axes=None,
            rngs=rngs,
            **kw,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        B, S, E = x.shape
        N, H = self.cfg.num_heads, self.cfg.head_dim
        q, k, v = jnp.split(self.qkv(self.attn_norm(x)).reshape(B, S, 3 * N, H), 3, axis=2)
        q, k = apply_rotary(q, self.cfg.rope_theta), apply_rotary(k, self.cfg.rope_theta)
        att = jax.nn.dot_product_attention(q, k, v, is_causal=True)  # (B, S, N, H)
        x = x + self.attn_out(att.reshape(B, S, E))
        return x + self.feed_forward(self.ffn_norm(x))


class TransformerLM(nnx.Module):
    """Causal Transformer language model: ``head(norm(blocks(embed(tokens))))``.

    Call: ``model(tokens)`` with tokens int (B, S) -> logits (B, S, V) in float32 (float64
    for a float64 model). Any S works.
    """

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        self.config = config
        E, V = config.embedding_dim, config.vocab_size
        kw = {"dtype": jnp.dtype(config.dtype), "param_dtype": jnp.dtype(config.param_dtype)}
        self.token_embedding = Embedding(V, E, init=small_init(E), rngs=rngs, **kw)
        self.blocks = nnx.List([_Block(config, rngs=rngs) for _ in range(config.num_blocks)])
        self.final_norm = nnx.RMSNorm(E, epsilon=config.norm_eps, rngs=rngs, **kw)
        self.lm_head = (
            None
            if config.tie_weights
            else Dense(
                E,
                V,
                use_bias=False,
                kernel_init=small_init(E),
                kernel_axes=("embed", "vocab"),
                rngs=rngs,
                **kw,
            )
        )

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return self.logits(self.hidden_states(tokens))

    def hidden_states(self, tokens: jax.Array) -> jax.Array:
        """The final (normalised) hidden states (B, S, E) of ``tokens`` (B, S):
        ``model(tokens) == model.logits(model.hidden_states(tokens))``."""
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(
                f"`tokens` must be an integer array (B, S); got {tokens.dtype} {tokens.shape}."
            )
        x = self.token_embedding(tokens)
        for block in self.blocks:
            x = nnx.remat(lambda blk, h: blk(h))(block, x) if self.config.remat else block(x)
        return self.final_norm(x)

    def logits(self, x: jax.Array) -> jax.Array:
        """The LM head on hidden states (..., E) -> logits (..., V) in float32 (float64 for
        a float64 model)."""
        logits = self.token_embedding.attend(x) if self.lm_head is None else self.lm_head(x)
        return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))

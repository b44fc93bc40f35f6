"""A small causal Transformer (Llama-style) baseline with the xLSTM LM's interface.

Shape legend: B batch, S sequence, E embedding dim, N heads, H head dim, F feed-forward
dim, V vocabulary.

Pre-norm blocks ``x + attn(rmsnorm(x))`` then ``x + swiglu(rmsnorm(x))``; rotary
positions (Su et al. 2021) on queries and keys; causal ``jax.nn.dot_product_attention``; a
final RMSNorm and an (optionally tied) LM head. ``TransformerLM(config, rngs=...)`` is
called like ``xLSTMLMModel``: ``model(tokens)`` with int (B, S) -> float32 logits (B, S, V),
and exposes ``.config``; the training CLI builds it for a ``model`` section of type
``TransformerConfig`` (the ``llama_*`` configs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from xlstm_jax.components import small_init, wang_init
from xlstm_jax.config import ConfigError

__all__ = ["TransformerConfig", "TransformerLM", "apply_rotary"]

_DTYPES = ("float32", "bfloat16", "float16", "float64")


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class TransformerConfig:
    """The baseline's shape. Field names follow ``xLSTMLMModelConfig`` where they mean the
    same (``embedding_dim``, ``num_blocks``, ``vocab_size``, ``dtype``, ``remat``, ...).

    ``ffn_proj_factor`` sets the SwiGLU hidden size ``F`` (Llama's 8/3, rounded up to a
    multiple of ``ffn_round_to``). ``dropout`` exists for the trainer's checks and must be 0.
    """

    vocab_size: int = -1
    embedding_dim: int = 128
    num_blocks: int = 2
    num_heads: int = 4
    ffn_proj_factor: float = 8 / 3
    ffn_round_to: int = 64
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-6
    # Informational, as for the xLSTM: nothing is sized from it, any S works.
    context_length: int = -1
    tie_weights: bool = False
    weight_decay_on_embedding: bool = False
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False
    dropout: float = 0.0

    @property
    def head_dim(self) -> int:
        return self.embedding_dim // self.num_heads

    @property
    def ffn_dim(self) -> int:
        f = self.ffn_proj_factor * self.embedding_dim
        return int(math.ceil(f / self.ffn_round_to) * self.ffn_round_to)

    def __post_init__(self):
        _require(
            self.vocab_size >= 1,
            f"TransformerConfig.vocab_size must be >= 1; got {self.vocab_size}.",
        )
        _require(self.num_blocks >= 1, "TransformerConfig.num_blocks must be >= 1.")
        _require(self.num_heads >= 1, "TransformerConfig.num_heads must be >= 1.")
        _require(
            self.embedding_dim % self.num_heads == 0 and self.head_dim % 2 == 0,
            f"TransformerConfig.num_heads={self.num_heads} must divide embedding_dim="
            f"{self.embedding_dim} into an even head dim (rotary positions rotate pairs).",
        )
        _require(self.ffn_proj_factor > 0 and self.ffn_round_to >= 1, "bad feed-forward size.")
        _require(self.dtype in _DTYPES, f"TransformerConfig.dtype must be one of {_DTYPES}.")
        _require(
            self.param_dtype in _DTYPES, f"TransformerConfig.param_dtype must be one of {_DTYPES}."
        )
        _require(self.dropout == 0.0, "TransformerConfig.dropout is not implemented; set it to 0.")


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


class _Block(nnx.Module):
    """One pre-norm block: causal self-attention, then a SwiGLU feed-forward."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        E, F = cfg.embedding_dim, cfg.ffn_dim
        kw = {"dtype": jnp.dtype(cfg.dtype), "param_dtype": jnp.dtype(cfg.param_dtype)}
        lin = {"use_bias": False, "rngs": rngs, **kw}
        self.cfg = cfg
        self.attn_norm = nnx.RMSNorm(E, epsilon=cfg.norm_eps, rngs=rngs, **kw)
        self.qkv = nnx.Linear(E, 3 * E, kernel_init=small_init(E), **lin)
        self.attn_out = nnx.Linear(E, E, kernel_init=wang_init(E, cfg.num_blocks), **lin)
        self.ffn_norm = nnx.RMSNorm(E, epsilon=cfg.norm_eps, rngs=rngs, **kw)
        self.gate_up = nnx.Linear(E, 2 * F, kernel_init=small_init(E), **lin)
        self.ffn_down = nnx.Linear(F, E, kernel_init=wang_init(E, cfg.num_blocks), **lin)

    def __call__(self, x: jax.Array) -> jax.Array:
        B, S, E = x.shape
        N, H = self.cfg.num_heads, self.cfg.head_dim
        q, k, v = jnp.split(self.qkv(self.attn_norm(x)).reshape(B, S, 3 * N, H), 3, axis=2)
        q, k = apply_rotary(q, self.cfg.rope_theta), apply_rotary(k, self.cfg.rope_theta)
        att = jax.nn.dot_product_attention(q, k, v, is_causal=True)  # (B, S, N, H)
        x = x + self.attn_out(att.reshape(B, S, E))
        gate, up = jnp.split(self.gate_up(self.ffn_norm(x)), 2, axis=-1)
        return x + self.ffn_down(jax.nn.silu(gate) * up)


class TransformerLM(nnx.Module):
    """Causal Transformer language model: ``head(norm(blocks(embed(tokens))))``.

    Call: ``model(tokens)`` with tokens int (B, S) -> logits (B, S, V) in float32 (float64
    for a float64 model). Any S works.
    """

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        self.config = config
        E, V = config.embedding_dim, config.vocab_size
        kw = {"dtype": jnp.dtype(config.dtype), "param_dtype": jnp.dtype(config.param_dtype)}
        self.token_embedding = nnx.Embed(V, E, embedding_init=small_init(E), rngs=rngs, **kw)
        self.blocks = nnx.List([_Block(config, rngs=rngs) for _ in range(config.num_blocks)])
        self.final_norm = nnx.RMSNorm(E, epsilon=config.norm_eps, rngs=rngs, **kw)
        self.lm_head = (
            None
            if config.tie_weights
            else nnx.Linear(E, V, use_bias=False, kernel_init=small_init(E), rngs=rngs, **kw)
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

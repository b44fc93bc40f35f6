"""The Transformer baseline's registry entry (``xlstm_jax.registry.family("transformer")``)."""

from __future__ import annotations

from xlstm_jax.models.transformer.config import TransformerConfig
from xlstm_jax.models.transformer.model import TransformerLM
from xlstm_jax.registry import Activations, Family

__all__ = ["FAMILY"]


def _transformer_activations(m: TransformerConfig, B: int, S: int, c_bytes: int):
    # q, k, v, attention output, residuals and the SwiGLU's (B, S, F) tensors, plus the
    # fp32 (S x S) attention weights per head.
    E = m.embedding_dim
    act = B * S * (8 * E + 4 * m.ffn_dim) * c_bytes + B * m.num_heads * S * S * 4
    return Activations([act] * m.num_blocks, B * S * E * c_bytes, 3 * B * S * m.vocab_size * 4)


FAMILY = Family(
    name="transformer",
    description="the Llama-style Transformer baseline (RoPE, SwiGLU, RMSNorm)",
    config=TransformerConfig,
    model=TransformerLM,
    task="lm",
    summary=lambda m: f"Transformer, {m.num_heads} heads",
    activation_bytes=_transformer_activations,
    doc_resets=lambda m: "the baseline would need a per-document attention mask",
)

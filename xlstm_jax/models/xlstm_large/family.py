"""The xLSTM-7B family's registry entry (``xlstm_jax.registry.family("xlstm_large")``)."""

from __future__ import annotations

from xlstm_jax.models.xlstm_large.config import xLSTMLargeConfig
from xlstm_jax.models.xlstm_large.model import xLSTMLarge
from xlstm_jax.registry import Activations, Family, imported_on_call

__all__ = ["FAMILY"]


def _large_summary(m: xLSTMLargeConfig) -> str:
    return f"xLSTM-Large, {m.num_heads} heads, DHQK {m.qk_head_dim}, DHV {m.v_head_dim}"


def _large_activations(m: xLSTMLargeConfig, B: int, S: int, c_bytes: int):
    # Per block: the norms' outputs and residuals (E), q, k (qk_dim), v, the output gate,
    # the cell output and its normed and gated forms (v_dim), the SwiGLU's gate, up and
    # product (F) in the compute dtype; the chunk-local (S x chunk) gate matrices and the
    # fp32 chunk-start states (B, NH, S / chunk, DHQK, DHV).
    E = m.embedding_dim
    chunk = min(S, m.chunk_size)
    act = B * S * (4 * E + 2 * m.qk_dim + 5 * m.v_dim + 3 * m.ffn_dim) * c_bytes
    act += 3 * B * m.num_heads * S * chunk * 4
    act += B * m.num_heads * -(-S // chunk) * m.qk_head_dim * m.v_head_dim * 4
    return Activations([act] * m.num_blocks, B * S * E * c_bytes, 3 * B * S * m.vocab_size * 4)


FAMILY = Family(
    name="xlstm_large",
    description="the xLSTM-7B family (mLSTM-only blocks with a SwiGLU, soft-capped gates)",
    config=xLSTMLargeConfig,
    model=xLSTMLarge,
    task="lm",
    summary=_large_summary,
    activation_bytes=_large_activations,
    doc_resets=lambda m: None,
    from_torch=imported_on_call("xlstm_jax.models.xlstm_large.convert:from_torch"),
    torch_classes=("xLSTMLarge", "xLSTMForCausalLM"),
    load=imported_on_call("xlstm_jax.models.xlstm_large.checkpoint:load_pretrained"),
)

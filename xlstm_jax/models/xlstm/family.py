"""The paper xLSTM's registry entry (``xlstm_jax.registry.family("xlstm")``)."""

from __future__ import annotations

from xlstm_jax.models.xlstm.config import xLSTMLMModelConfig
from xlstm_jax.models.xlstm.model import xLSTMLMModel
from xlstm_jax.registry import Activations, Family, imported_on_call

__all__ = ["FAMILY"]


def _xlstm_summary(m: xLSTMLMModelConfig) -> str:
    return f"{m.block_map.count(0)} mLSTM, {m.block_map.count(1)} sLSTM"


def _xlstm_activations(m: xLSTMLMModelConfig, B: int, S: int, c_bytes: int):
    # mLSTM: about a dozen (B, S, inner) tensors (projections, conv, gates, cell output) in
    # the compute dtype and the chunk-local (S x chunk) gate matrices in fp32; sLSTM: fp32
    # cell states and gates, the norms and residuals, the feed-forward's three tensors.
    E = m.embedding_dim
    per_block = []
    for idx, kind in enumerate(m.block_map):
        block = m.block_config(idx)
        if kind == 0:
            layer = block.mlstm
            inner, nh = layer.inner_embedding_dim, layer.num_heads
            chunk = min(S, layer.chunk_size)
            per_block.append(12 * B * S * inner * c_bytes + 3 * B * nh * S * chunk * 4)
        else:
            ff = block.feedforward
            up = ff.proj_up_dim if ff is not None else 0
            per_block.append(B * S * (16 * E * 4 + 4 * E * c_bytes + 3 * up * c_bytes))
    # The head: fp32 logits, their softmax and gradient.
    return Activations(per_block, B * S * E * c_bytes, 3 * B * S * m.vocab_size * 4)


def _xlstm_doc_resets(m: xLSTMLMModelConfig) -> str | None:
    if any(m.block_map):
        return (
            "an sLSTM block's recurrent hidden state would still cross documents (an "
            "mLSTM-only model, model.slstm_at=[], resets at each one)"
        )
    return None


FAMILY = Family(
    name="xlstm",
    description="the 2024 paper's xLSTM language model (mLSTM and sLSTM blocks)",
    config=xLSTMLMModelConfig,
    model=xLSTMLMModel,
    task="lm",
    summary=_xlstm_summary,
    activation_bytes=_xlstm_activations,
    doc_resets=_xlstm_doc_resets,
    from_torch=imported_on_call("xlstm_jax.models.xlstm.convert:from_torch"),
    torch_classes=("xLSTMLMModel", "xLSTMBlockStack"),
)

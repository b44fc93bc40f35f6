"""The TiRex forecaster's registry entry (``xlstm_jax.registry.family("tirex")``)."""

from __future__ import annotations

from xlstm_jax.models.tirex.config import TiRexConfig
from xlstm_jax.models.tirex.model import TiRex
from xlstm_jax.registry import Activations, Family, imported_on_call

__all__ = ["FAMILY"]


def _tirex_summary(m: TiRexConfig) -> str:
    return f"TiRex sLSTM, {m.num_heads} heads, patch {m.patch_size}, {len(m.quantiles)} quantiles"


def _tirex_activations(m: TiRexConfig, B: int, S: int, c_bytes: int):
    # The forecaster's sequence is its patches; per block as an sLSTM block (fp32 cell
    # states and gates, the SwiGLU's three (B, N, F) tensors); the head: the quantiles,
    # their loss and gradient.
    E = m.embedding_dim
    N = S // m.patch_size
    act = B * N * (16 * E * 4 + 4 * E * c_bytes + 3 * m.ffn_dim * c_bytes)
    head = 3 * B * N * len(m.quantiles) * m.patch_size * 4
    return Activations([act] * m.num_blocks, B * N * E * c_bytes, head)


FAMILY = Family(
    name="tirex",
    description="the TiRex forecaster (sLSTM blocks over patches, quantile head)",
    config=TiRexConfig,
    model=TiRex,
    task="forecast",
    summary=_tirex_summary,
    activation_bytes=_tirex_activations,
    doc_resets=lambda m: "the forecaster reads one series per row, with no documents in it",
    from_torch=imported_on_call("xlstm_jax.models.tirex.convert:from_torch"),
    torch_classes=("TiRexZero",),
    load=imported_on_call("xlstm_jax.models.tirex.convert:load_forecaster"),
)

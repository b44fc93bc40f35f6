"""The four families' registry entries (``xlstm_jax.registry``), before each moves into its
own package."""

from __future__ import annotations

from xlstm_jax.config import TransformerConfig, xLSTMLargeConfig, xLSTMLMModelConfig
from xlstm_jax.large import xLSTMLarge
from xlstm_jax.model import xLSTMLMModel
from xlstm_jax.registry import Activations, Family
from xlstm_jax.tirex import TiRex, TiRexConfig
from xlstm_jax.transformer import TransformerLM


# The converters and loaders, imported when first called (the registry builds no
# converter until asked).
def _from_torch_v1(torch_model, *args, **kwargs):
    from xlstm_jax.models.xlstm.convert import from_torch

    return from_torch(torch_model, *args, **kwargs)


def _from_torch_large(torch_model, **overrides):
    from xlstm_jax.models.xlstm_large.convert import from_torch

    return from_torch(torch_model, **overrides)


def _load_pretrained(path, **kwargs):
    from xlstm_jax.models.xlstm_large.checkpoint import load_pretrained

    return load_pretrained(path, **kwargs)


def _from_torch_tirex(torch_model, **overrides):
    from xlstm_jax.models.tirex.convert import from_torch

    return from_torch(torch_model, **overrides)


def _load_forecaster(path, **overrides):
    from xlstm_jax.models.tirex.convert import load_forecaster

    return load_forecaster(path, **overrides)


# --- the paper's xLSTM -------------------------------------------------------------------


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


XLSTM = Family(
    name="xlstm",
    description="the 2024 paper's xLSTM language model (mLSTM and sLSTM blocks)",
    config=xLSTMLMModelConfig,
    model=xLSTMLMModel,
    task="lm",
    summary=_xlstm_summary,
    activation_bytes=_xlstm_activations,
    doc_resets=_xlstm_doc_resets,
    from_torch=_from_torch_v1,
    torch_classes=("xLSTMLMModel", "xLSTMBlockStack"),
)

# --- xLSTM-7B ("Large") ------------------------------------------------------------------


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


LARGE = Family(
    name="xlstm_large",
    description="the xLSTM-7B family (mLSTM-only blocks with a SwiGLU, soft-capped gates)",
    config=xLSTMLargeConfig,
    model=xLSTMLarge,
    task="lm",
    summary=_large_summary,
    activation_bytes=_large_activations,
    doc_resets=lambda m: None,
    from_torch=_from_torch_large,
    torch_classes=("xLSTMLarge", "xLSTMForCausalLM"),
    load=_load_pretrained,
)

# --- the Transformer baseline ------------------------------------------------------------


def _transformer_activations(m: TransformerConfig, B: int, S: int, c_bytes: int):
    # q, k, v, attention output, residuals and the SwiGLU's (B, S, F) tensors, plus the
    # fp32 (S x S) attention weights per head.
    E = m.embedding_dim
    act = B * S * (8 * E + 4 * m.ffn_dim) * c_bytes + B * m.num_heads * S * S * 4
    return Activations([act] * m.num_blocks, B * S * E * c_bytes, 3 * B * S * m.vocab_size * 4)


TRANSFORMER = Family(
    name="transformer",
    description="the Llama-style Transformer baseline (RoPE, SwiGLU, RMSNorm)",
    config=TransformerConfig,
    model=TransformerLM,
    task="lm",
    summary=lambda m: f"Transformer, {m.num_heads} heads",
    activation_bytes=_transformer_activations,
    doc_resets=lambda m: "the baseline would need a per-document attention mask",
)

# --- TiRex -------------------------------------------------------------------------------


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


TIREX = Family(
    name="tirex",
    description="the TiRex forecaster (sLSTM blocks over patches, quantile head)",
    config=TiRexConfig,
    model=TiRex,
    task="forecast",
    summary=_tirex_summary,
    activation_bytes=_tirex_activations,
    doc_resets=lambda m: "the forecaster reads one series per row, with no documents in it",
    from_torch=_from_torch_tirex,
    torch_classes=("TiRexZero",),
    load=_load_forecaster,
)

FAMILIES = {f.name: f for f in (XLSTM, LARGE, TRANSFORMER, TIREX)}

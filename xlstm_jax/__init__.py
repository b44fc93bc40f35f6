"""xLSTM (Beck et al. 2024) in Flax NNX: sLSTM and mLSTM layers, blocks, stacks and the LM.

from flax import nnx
from xlstm_jax import xLSTMLMModel, xLSTMLMModelConfig, mLSTMBlockConfig
model = xLSTMLMModel(xLSTMLMModelConfig(mlstm_block=mLSTMBlockConfig(), vocab_size=256,
                                        num_blocks=2, embedding_dim=64), rngs=nnx.Rngs(0))
logits = model(tokens)  # (B, S) int -> (B, S, V) float32
"""

from xlstm_jax.components import (
    CausalConv1d,
    GatedFeedForward,
    LayerNorm,
    LinearHeadwiseExpand,
    MultiHeadLayerNorm,
)
from xlstm_jax.config import (
    ConfigError,
    FeedForwardConfig,
    mLSTMBlockConfig,
    mLSTMLayerConfig,
    sLSTMBlockConfig,
    sLSTMLayerConfig,
    xLSTMBlockStackConfig,
    xLSTMLMModelConfig,
)
from xlstm_jax.generation import generate, sample_logits
from xlstm_jax.mlstm import mLSTMBlock, mLSTMLayer
from xlstm_jax.model import xLSTMBlockStack, xLSTMLMModel
from xlstm_jax.slstm import sLSTMBlock, sLSTMLayer
from xlstm_jax.transformer import TransformerConfig, TransformerLM

__all__ = [
    "CausalConv1d",
    "ConfigError",
    "FeedForwardConfig",
    "GatedFeedForward",
    "LayerNorm",
    "LinearHeadwiseExpand",
    "MultiHeadLayerNorm",
    "TransformerConfig",
    "TransformerLM",
    "generate",
    "mLSTMBlock",
    "mLSTMBlockConfig",
    "mLSTMLayer",
    "mLSTMLayerConfig",
    "sLSTMBlock",
    "sLSTMBlockConfig",
    "sLSTMLayer",
    "sLSTMLayerConfig",
    "sample_logits",
    "xLSTMBlockStack",
    "xLSTMBlockStackConfig",
    "xLSTMLMModel",
    "xLSTMLMModelConfig",
]

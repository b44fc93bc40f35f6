"""xLSTM (Beck et al. 2024) in Flax NNX: sLSTM and mLSTM layers, blocks, stacks and the LM.

    from flax import nnx
    from xlstm_jax import xLSTMLMModel, xLSTMLMModelConfig, mLSTMBlockConfig
    model = xLSTMLMModel(xLSTMLMModelConfig(mlstm_block=mLSTMBlockConfig(), vocab_size=256,
                                            num_blocks=2, embedding_dim=64), rngs=nnx.Rngs(0))
    logits = model(tokens)                                  # (B, S) int -> (B, S, V) float32
    logits, state = model.with_state(tokens, model.init_state(B))   # and the state after it

Layout: ``config`` (frozen configs), ``state`` (typed recurrent state), ``components``
(norms, conv, projections), ``mlstm`` / ``slstm`` (layers and blocks), ``model`` (stack and
LM), ``large`` (the xLSTM-7B family), ``transformer`` (the baseline), ``sharding``
(logical axes -> mesh), ``convert`` / ``convert_large`` (PyTorch and Hugging Face
checkpoints), ``pretrained`` (Hugging Face and reference checkpoint folders), ``generation``
(sampling).
"""

from xlstm_jax.components import (
    CausalConv1d,
    Dense,
    Embedding,
    GatedFeedForward,
    LayerNorm,
    LinearHeadwiseExpand,
    MultiHeadLayerNorm,
)
from xlstm_jax.config import (
    ConfigError,
    FeedForwardConfig,
    TransformerConfig,
    mLSTMBlockConfig,
    mLSTMLayerConfig,
    sLSTMBlockConfig,
    sLSTMLayerConfig,
    xLSTMBlockStackConfig,
    xLSTMLargeConfig,
    xLSTMLMModelConfig,
)
from xlstm_jax.generation import generate, sample_logits
from xlstm_jax.large import xLSTMLarge
from xlstm_jax.mlstm import mLSTMBlock, mLSTMLayer
from xlstm_jax.model import xLSTMBlockStack, xLSTMLMModel
from xlstm_jax.pretrained import PretrainedError, load_pretrained, save_pretrained
from xlstm_jax.slstm import sLSTMBlock, sLSTMLayer
from xlstm_jax.state import BlockState, ConvState, MLSTMState, SLSTMState, StackState
from xlstm_jax.transformer import TransformerLM

__all__ = [
    "BlockState",
    "CausalConv1d",
    "ConfigError",
    "ConvState",
    "Dense",
    "Embedding",
    "FeedForwardConfig",
    "GatedFeedForward",
    "LayerNorm",
    "LinearHeadwiseExpand",
    "MLSTMState",
    "MultiHeadLayerNorm",
    "PretrainedError",
    "SLSTMState",
    "StackState",
    "TransformerConfig",
    "TransformerLM",
    "generate",
    "load_pretrained",
    "mLSTMBlock",
    "mLSTMBlockConfig",
    "mLSTMLayer",
    "mLSTMLayerConfig",
    "sLSTMBlock",
    "sLSTMBlockConfig",
    "sLSTMLayer",
    "sLSTMLayerConfig",
    "sample_logits",
    "save_pretrained",
    "xLSTMBlockStack",
    "xLSTMBlockStackConfig",
    "xLSTMLMModel",
    "xLSTMLMModelConfig",
    "xLSTMLarge",
    "xLSTMLargeConfig",
]

"""The model families the trainer builds, by the type of ``ExperimentConfig.model``."""

from __future__ import annotations

from types import MappingProxyType

from flax import nnx

from xlstm_jax import TransformerLM, xLSTMLarge, xLSTMLMModel
from xlstm_jax.config import ConfigError, TransformerConfig, xLSTMLargeConfig, xLSTMLMModelConfig
from xlstm_jax.tirex import TiRex, TiRexConfig

__all__ = ["MODELS", "build_model"]

# Config type -> model class. Every LM is called ``model(tokens) -> logits`` and has
# ``hidden_states(tokens)`` and ``logits(h)`` (the loss heads only the scored positions);
# the forecaster maps patches to quantiles (its source's loss knows how to call it).
MODELS = MappingProxyType(
    {
        xLSTMLMModelConfig: xLSTMLMModel,
        xLSTMLargeConfig: xLSTMLarge,
        TransformerConfig: TransformerLM,
        TiRexConfig: TiRex,
    }
)


def build_model(model_cfg, rngs: nnx.Rngs) -> nnx.Module:
    """The model for ``model_cfg`` (a config type in ``MODELS``)."""
    cls = MODELS.get(type(model_cfg))
    if cls is None:
        raise ConfigError(
            f"model: {type(model_cfg).__name__} is not a model config the trainer knows "
            f"({', '.join(c.__name__ for c in MODELS)})."
        )
    return cls(model_cfg, rngs=rngs)

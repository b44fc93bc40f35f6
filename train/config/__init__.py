"""The run's config: schemas (``schema``), ``--set`` overrides and the ``config.json``
round trip (``overrides``), and the named configs of ``configs/`` (``named``).

    from train.config import ExperimentConfig, DataConfig   # what configs/NAME.py build
    from train.config.named import load                     # configs/NAME.py by name
    from train.config.overrides import apply_overrides, from_dict, to_dict

Importing this package imports no model family: the registry (``xlstm_jax.registry``) is
asked about a config's model only when a config is written or read.
"""

from train.config.schema import (
    CheckpointConfig,
    ConfigError,
    DataConfig,
    ExperimentConfig,
    LoggingConfig,
    MeshConfig,
    ModelConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
)

__all__ = [
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "LoggingConfig",
    "MeshConfig",
    "ModelConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "TrainConfig",
]

"""A CPU-sized TiRex forecaster trained from scratch on the training parts of the M3 and
Tourism competitions (all subsets; their test horizons are never read): patch 8, E 128,
4 heads, 4 sLSTM blocks, context 256 values (32 patches), 9 quantile levels, float32.

``python -m train.main --config tirex_tiny`` needs the optional data package
(``pip install "xlstm-jax[forecast]"``) and no accelerator. ``benchmarks/forecast.py``
scores the run on the M3 and Tourism test horizons.
"""

from train.config import (
    CheckpointConfig,
    DataConfig,
    ExperimentConfig,
    LoggingConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
)
from xlstm_jax.tirex import TiRexConfig


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    model = TiRexConfig(
        input_patch_size=8,
        output_patch_size=8,
        embedding_dim=128,
        num_heads=4,
        num_blocks=4,
        input_ff_dim=256,
        train_ctx_len=256,
    )
    return ExperimentConfig(
        name="tirex_tiny",
        model=model,
        # M3 monthly's horizon is 18 values: 3 patches, so masked runs of up to 4 patches
        # cover its rollout.
        data=DataConfig(path="series:m3+tourism", seq_len=256, val_fraction=0.05, series_mask_span=4),
        optimizer=OptimizerConfig(lr=1e-3, weight_decay=0.01, grad_clip=1.0),
        schedule=ScheduleConfig(warmup_steps=100, final_lr_ratio=0.1),
        train=TrainConfig(steps=2000, batch_size=64, eval_every=250, eval_batches=2),
        checkpoint=CheckpointConfig(every=500, keep=2),
        logging=LoggingConfig(every=25),
    )

"""A CPU-sized TiRex forecaster trained from scratch on the training parts of the M3 and
Tourism competitions (all subsets; their test horizons are never read): patch 12, E 128,
4 heads, 4 sLSTM blocks, context 288 values (24 patches), 9 quantile levels, float32.

Patch 12 holds a year of monthly data (M3 monthly's horizon of 18 and Tourism monthly's 24
are two patches); every training window hides a run of up to 3 input patches, so the
second patch of the rollout is trained as often as the first. (Measured on M3 and Tourism:
patch 8 and masking half the windows forecast the second patch far worse.)

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
from xlstm_jax.models.tirex.config import TiRexConfig


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    model = TiRexConfig(
        input_patch_size=12,
        output_patch_size=12,
        embedding_dim=128,
        num_heads=4,
        num_blocks=4,
        input_ff_dim=256,
        train_ctx_len=288,
    )
    return ExperimentConfig(
        name="tirex_tiny",
        model=model,
        data=DataConfig(
            path="series:m3+tourism",
            seq_len=288,
            val_fraction=0.05,
            series_mask_rate=1.0,
            series_mask_span=3,
        ),
        optimizer=OptimizerConfig(lr=1e-3, weight_decay=0.01, grad_clip=1.0),
        schedule=ScheduleConfig(warmup_steps=100, final_lr_ratio=0.1),
        train=TrainConfig(steps=5000, batch_size=64, eval_every=500, eval_batches=2),
        checkpoint=CheckpointConfig(every=500, keep=2),
        logging=LoggingConfig(every=25),
    )

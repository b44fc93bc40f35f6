"""The TiRex architecture at its published size (35M parameters: patch 32, E 512, 4 heads,
12 sLSTM blocks, context 2048, 9 quantile levels), trained on the M1, M3 and Tourism
training parts; ``--set train.init_from=model.ckpt`` fine-tunes a TiRex checkpoint instead
of starting from scratch. Sized for a GPU; bf16 compute.

The optimizer and schedule are ours (TiRex's training recipe is not published with its
weights); the architecture is the checkpoint's, so a ``model.ckpt`` loads into it.
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
    return ExperimentConfig(
        name="tirex_35m",
        model=TiRexConfig(dtype="bfloat16"),
        data=DataConfig(path="series:m1+m3+tourism", seq_len=2048, val_fraction=0.05),
        optimizer=OptimizerConfig(lr=3e-4, weight_decay=0.01, grad_clip=1.0),
        schedule=ScheduleConfig(warmup_steps=500, final_lr_ratio=0.1),
        train=TrainConfig(steps=20000, batch_size=256, eval_every=1000, eval_batches=4),
        checkpoint=CheckpointConfig(every=1000, keep=3),
        logging=LoggingConfig(every=50),
    )

"""A few-minute CPU run of the xLSTM-7B architecture: E 128, 4 blocks, 2 heads (DHQK 32,
DHV 64), byte tokenizer, the stdlib corpus, float32.

``python -m train.main --config xlstm_large_tiny`` needs no download and no accelerator.
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
from xlstm_jax.models.xlstm_large.config import xLSTMLargeConfig


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    model = xLSTMLargeConfig(
        # 256 bytes + end-of-document, padded to a multiple of 64.
        vocab_size=320,
        embedding_dim=128,
        num_blocks=4,
        num_heads=2,
        ffn_proj_factor=2.667,
        chunk_size=32,
        context_length=128,
    )
    return ExperimentConfig(
        name="xlstm_large_tiny",
        model=model,
        data=DataConfig(path="builtin:stdlib", tokenizer="bytes", seq_len=128),
        optimizer=OptimizerConfig(lr=3e-3, weight_decay=0.1, grad_clip=1.0),
        schedule=ScheduleConfig(warmup_steps=30, final_lr_ratio=0.1),
        train=TrainConfig(steps=300, batch_size=16, eval_every=100, eval_batches=4),
        checkpoint=CheckpointConfig(every=100, keep=2),
        logging=LoggingConfig(every=10),
    )

"""A few-minute CPU run: 4 blocks (sLSTM at 1), E 128, byte tokenizer, the stdlib corpus.

``python -m train.main --config xlstm_tiny`` needs no download and no accelerator.
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
from xlstm_jax.models.xlstm.config import (
    FeedForwardConfig,
    mLSTMBlockConfig,
    mLSTMLayerConfig,
    sLSTMBlockConfig,
    sLSTMLayerConfig,
    xLSTMLMModelConfig,
)


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    model = xLSTMLMModelConfig(
        # 256 bytes + end-of-document, padded to a multiple of 64.
        vocab_size=320,
        embedding_dim=128,
        num_blocks=4,
        context_length=128,
        slstm_at=(1,),
        mlstm_block=mLSTMBlockConfig(
            mlstm=mLSTMLayerConfig(conv1d_kernel_size=4, qkv_proj_blocksize=4, num_heads=4)
        ),
        slstm_block=sLSTMBlockConfig(
            slstm=sLSTMLayerConfig(num_heads=4, conv1d_kernel_size=4),
            feedforward=FeedForwardConfig(proj_factor=1.3, act_fn="gelu"),
        ),
        dtype="float32",
        param_dtype="float32",
    )
    return ExperimentConfig(
        name="xlstm_tiny",
        model=model,
        data=DataConfig(path="builtin:stdlib", tokenizer="bytes", seq_len=128),
        optimizer=OptimizerConfig(lr=3e-3, weight_decay=0.1, grad_clip=1.0),
        schedule=ScheduleConfig(warmup_steps=30, final_lr_ratio=0.1),
        train=TrainConfig(steps=300, batch_size=16, eval_every=100, eval_batches=4),
        checkpoint=CheckpointConfig(every=100, keep=2),
        logging=LoggingConfig(every=10),
    )

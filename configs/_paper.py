"""Shared pieces of the paper's language-model recipes (xLSTM paper, App. D)."""

from __future__ import annotations

from train.config import (
    CheckpointConfig,
    DataConfig,
    ExperimentConfig,
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

# GPT-2's 50257 tokens padded to a multiple of 64.
GPT2_VOCAB = 50304
# The paper's 350M xLSTM[7:1] places its sLSTM blocks early and late in the 48-block stack.
SLSTM_AT_48 = (3, 5, 7, 40, 42, 44)


def paper_config(
    name: str,
    embedding_dim: int,
    num_blocks: int,
    slstm_at: tuple[int, ...],
    lr: float,
    num_heads: int = 4,
) -> ExperimentConfig:
    """A paper-style LM recipe: GPT-2 vocabulary, context 2048, batch 256, AdamW
    (0.9, 0.95) eps 1e-5, wd 0.1 without embeddings, 750 warm-up steps, cosine to 10%,
    bf16 compute with fp32 weights, ~28k steps (~15B tokens)."""
    model = xLSTMLMModelConfig(
        vocab_size=GPT2_VOCAB,
        embedding_dim=embedding_dim,
        num_blocks=num_blocks,
        context_length=2048,
        slstm_at=slstm_at,
        mlstm_block=mLSTMBlockConfig(
            mlstm=mLSTMLayerConfig(conv1d_kernel_size=4, qkv_proj_blocksize=4, num_heads=num_heads)
        ),
        slstm_block=sLSTMBlockConfig(
            slstm=sLSTMLayerConfig(num_heads=num_heads, conv1d_kernel_size=4),
            feedforward=FeedForwardConfig(proj_factor=1.3, act_fn="gelu"),
        )
        if slstm_at
        else None,
        tie_weights=False,
        weight_decay_on_embedding=False,
        dtype="bfloat16",
        param_dtype="float32",
    )
    return ExperimentConfig(
        name=name,
        model=model,
        data=DataConfig(path="builtin:stdlib", tokenizer="gpt2", seq_len=2048),
        optimizer=OptimizerConfig(lr=lr, b1=0.9, b2=0.95, eps=1e-5, weight_decay=0.1),
        schedule=ScheduleConfig(warmup_steps=750, final_lr_ratio=0.1),
        train=TrainConfig(steps=28_000, batch_size=256, eval_every=1000, eval_batches=16),
        checkpoint=CheckpointConfig(every=1000, keep=3),
    )

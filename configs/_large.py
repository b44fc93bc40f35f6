"""Shared pieces of the xLSTM-7B family's recipes (``xLSTMLargeConfig``).

The architecture is the xLSTM-7B paper's (Beck et al. 2025, arXiv 2503.13427): pre-RMSNorm
mLSTM and SwiGLU blocks, qk dim E/2, v dim E, SwiGLU width 2.667 E rounded to 64, gate soft
cap 15, logit soft cap 30. The optimizer values follow NX-AI/xlstm-jax's mLSTM-7B experiment
config (peak LR 5e-4, 2,000 linear warm-up steps) with our 350M recipe's AdamW (0.9, 0.95),
eps 1e-5, weight decay 0.1 without embeddings and cosine decay to 10%. The published 7B
run's batch size and step count were not available offline: the values here are ours.
"""

from __future__ import annotations

from train.config import (
    CheckpointConfig,
    DataConfig,
    ExperimentConfig,
    MeshConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
)
from xlstm_jax.models.xlstm_large.config import xLSTMLargeConfig

GPT2_VOCAB = 50304


def large_config(
    name: str,
    embedding_dim: int,
    num_blocks: int,
    num_heads: int,
    *,
    context: int = 2048,
    lr: float = 5e-4,
    batch_size: int = 256,
    steps: int = 30_000,
    mesh: MeshConfig | None = None,
) -> ExperimentConfig:
    """An xLSTM-Large LM recipe on the GPT-2 vocabulary: bf16 compute, fp32 weights, remat
    per block, the chunkwise mLSTM (chunk 64)."""
    model = xLSTMLargeConfig(
        embedding_dim=embedding_dim,
        num_heads=num_heads,
        num_blocks=num_blocks,
        vocab_size=GPT2_VOCAB,
        ffn_proj_factor=2.667,
        chunk_size=64,
        context_length=context,
        dtype="bfloat16",
        param_dtype="float32",
        remat=True,
    )
    return ExperimentConfig(
        name=name,
        model=model,
        data=DataConfig(path="builtin:stdlib", tokenizer="gpt2", seq_len=context),
        optimizer=OptimizerConfig(lr=lr, b1=0.9, b2=0.95, eps=1e-5, weight_decay=0.1),
        schedule=ScheduleConfig(warmup_steps=2000, final_lr_ratio=0.1),
        train=TrainConfig(steps=steps, batch_size=batch_size, eval_every=1000, eval_batches=16),
        checkpoint=CheckpointConfig(every=1000, keep=3),
        mesh=mesh or MeshConfig(),
    )

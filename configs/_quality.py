"""The language-model comparison in miniature (xLSTM paper §4.3 at CPU scale; issue "LM quality").

Four architectures at matched non-embedding size, one optimizer recipe, equal tokens:

* ``xlstm10``: xLSTM[1:0], mLSTM blocks only (2N blocks: an mLSTM block holds about half
  the weights of a Llama layer, so the paper's stacks have twice as many).
* ``xlstm71``: xLSTM[7:1], one sLSTM block in every 8 (at 3, 11, ...), the rest mLSTM.
* ``large``: the xLSTM-7B block (``xlstm_jax.models.xlstm_large``), N blocks.
* ``llama``: the Transformer baseline (``xlstm_jax.models.transformer``, verified against
  Hugging Face's Llama), N layers.

Sizes (``SIZES``): ``small`` E 192, N 4 (about 1.8M weights outside the embeddings);
``medium`` E 320, N 8 (about 10.2M). Every model has 4 heads and an untied head.

``benchmarks/lm_quality.py`` trains and evaluates them; ``docs/quality.md`` has the results.
"""

from __future__ import annotations

from dataclasses import dataclass

from train.config import (
    CheckpointConfig,
    DataConfig,
    ExperimentConfig,
    LoggingConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
)
from xlstm_jax.models.transformer.config import TransformerConfig
from xlstm_jax.models.xlstm.config import (
    FeedForwardConfig,
    mLSTMBlockConfig,
    mLSTMLayerConfig,
    sLSTMBlockConfig,
    sLSTMLayerConfig,
    xLSTMLMModelConfig,
)
from xlstm_jax.models.xlstm_large.config import xLSTMLargeConfig

ARCHS = ("xlstm10", "xlstm71", "large", "llama")
LABELS = {
    "xlstm10": "xLSTM[1:0]",
    "xlstm71": "xLSTM[7:1]",
    "large": "xLSTM-7B block",
    "llama": "Llama",
}
HEADS = 4


@dataclass(frozen=True)
class Size:
    """A model size: width, and the depth in Llama layers (xLSTM[a:b] stacks use twice
    as many blocks)."""

    embedding_dim: int
    layers: int


SIZES = {"small": Size(192, 4), "medium": Size(320, 8)}


def model_config(arch: str, size: Size, vocab_size: int, context_length: int):
    """The model of ``arch`` at ``size`` (float32, untied head)."""
    e, n = size.embedding_dim, size.layers
    if arch == "llama":
        return TransformerConfig(
            vocab_size=vocab_size,
            embedding_dim=e,
            num_blocks=n,
            num_heads=HEADS,
            context_length=context_length,
        )
    if arch == "large":
        return xLSTMLargeConfig(
            embedding_dim=e,
            num_heads=HEADS,
            num_blocks=n,
            vocab_size=vocab_size,
            chunk_size=64,
            context_length=context_length,
        )
    if arch not in ("xlstm10", "xlstm71"):
        raise ValueError(f"unknown architecture {arch!r}; one of {', '.join(ARCHS)}")
    blocks = 2 * n
    slstm_at = tuple(range(3, blocks, 8)) if arch == "xlstm71" else ()
    return xLSTMLMModelConfig(
        vocab_size=vocab_size,
        embedding_dim=e,
        num_blocks=blocks,
        context_length=context_length,
        slstm_at=slstm_at,
        mlstm_block=mLSTMBlockConfig(
            mlstm=mLSTMLayerConfig(conv1d_kernel_size=4, qkv_proj_blocksize=4, num_heads=HEADS)
        ),
        slstm_block=sLSTMBlockConfig(
            slstm=sLSTMLayerConfig(num_heads=HEADS, conv1d_kernel_size=4),
            feedforward=FeedForwardConfig(proj_factor=1.3, act_fn="gelu"),
        )
        if slstm_at
        else None,
        dtype="float32",
        param_dtype="float32",
    )


def quality_config(
    arch: str,
    size: str,
    data: DataConfig,
    vocab_size: int,
    lr: float,
    steps: int,
    batch_size: int,
    seed: int = 0,
    evals: int = 4,
) -> ExperimentConfig:
    """One run of the comparison: AdamW (0.9, 0.95), weight decay 0.1, clipping 1.0, 10%
    linear warm-up then cosine decay to lr / 10 (the paper's recipe), ``evals``
    evaluations of 8 validation batches spread over the run."""
    every = max(1, steps // evals)
    return ExperimentConfig(
        name=f"lmq_{arch}_{size}",
        model=model_config(arch, SIZES[size], vocab_size, data.seq_len),
        data=data,
        optimizer=OptimizerConfig(lr=lr, b1=0.9, b2=0.95, weight_decay=0.1, grad_clip=1.0),
        schedule=ScheduleConfig(warmup_steps=max(1, steps // 10), final_lr_ratio=0.1),
        train=TrainConfig(
            steps=steps, batch_size=batch_size, seed=seed, eval_every=every, eval_batches=8
        ),
        checkpoint=CheckpointConfig(every=steps, keep=1),
        logging=LoggingConfig(every=max(1, steps // 20)),
    )

"""The training run's typed, frozen config tree (the schemas; no logic beyond validation).

``ExperimentConfig`` holds one section per concern: ``model`` (any model family's config:
``xLSTMLMModelConfig``, ``xLSTMLargeConfig``, ``TransformerConfig`` or ``TiRexConfig``;
``xlstm_jax.registry.family_of`` says which), ``data``, ``optimizer``, ``schedule``,
``train``, ``checkpoint``, ``logging`` and ``mesh``. Named runs live in ``configs/NAME.py``
(resolved by ``train.config.named``); ``--set key=value`` overrides and the JSON round trip
are ``train.config.overrides``.

This module imports no model family: a config's ``model`` is whatever the named config
built, and the family registry is asked about it only when needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from xlstm_jax.layers.config import ConfigError, require
from xlstm_jax.layers.sharding import DEFAULT_RULES

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

# A model family's frozen config dataclass (``xlstm_jax.registry.family_of(config)`` names
# the family). Left open here so that the schemas need no model module.
ModelConfig = Any


@dataclass(frozen=True)
class DataConfig:
    """Where tokens come from and how they are cut into training sequences.

    ``path`` is ``builtin:stdlib`` (this Python's standard-library sources, no download),
    a text / JSONL / Parquet file or a directory of them, a folder written by
    ``python -m train.prepare_data`` (memory-mapped tokens), or ``hf:NAME_OR_PATH`` for a
    Hugging Face ``datasets`` dataset. ``tokenizer`` is ``bytes`` (built in), a path to a
    ``tokenizer.json`` (or its folder), or a Hugging Face hub name such as ``gpt2``.

    ``synthetic:TASK`` generates one of the paper's synthetic tasks on the fly (formal
    languages such as ``synthetic:parity``, or ``synthetic:mqar``; see ``train.data.synthetic``):
    the tokenizer is then unused, ``seq_len + 1`` is the training width, and
    ``train_lengths``, ``eval_buckets`` and ``num_kv_pairs`` apply.

    ``series:m3`` (``series:m3/monthly``, ``series:m1+m3+tourism``, ``series:FILE.csv``)
    trains the forecaster (``TiRexConfig`` models) on time series (``train.data.series``):
    ``seq_len`` is then the window in values (a multiple of the patch size),
    ``val_fraction`` the share of series held out, and ``series_mask_rate`` /
    ``series_mask_span`` the contiguous patch masking. The multivariate forecaster
    (``TiRex2Config`` models, ``train.data.series.covariates``) reads each series as
    ``series_rows`` rows: from a long table ``series:FILE`` (an ``id_column``, a
    ``timestamp_column``) its ``target_columns``, ``past_covariates`` (known up to the
    forecast origin) and ``future_covariates`` (known over the future window too); then
    ``seq_len`` is the context in values and the model's ``future_len`` the window scored.
    """

    path: str = "builtin:stdlib"
    tokenizer: str = "bytes"
    seq_len: int = 128
    # Fraction of documents (chosen by a hash of their name) held out for validation.
    val_fraction: float = 0.02
    # Column / JSON field holding the text in JSONL, Parquet and HF datasets.
    text_field: str = "text"
    hf_split: str = "train"
    # Synthetic formal languages: input lengths (min, max) of training examples, and the
    # edges of the evaluation length buckets (40-63, 64-127, 128-256 by default).
    train_lengths: tuple[int, ...] = (3, 40)
    eval_buckets: tuple[int, ...] = (40, 64, 128, 256)
    # Synthetic MQAR: key-value pairs per sequence (the context is seq_len + 1 tokens).
    num_kv_pairs: int = 8
    # Text packs documents into rows separated by the end-of-document token; with this set,
    # each document's first token closes the forget gate (and the conv does not reach back)
    # so no state crosses documents, as if each were run alone. mLSTM-only models.
    reset_at_document_boundaries: bool = False
    # Series (forecaster): the share of training windows that hide a contiguous run of
    # input patches, and the longest run (0 turns the masking off). The rollout beyond one
    # patch relies on it: set the span to at least the horizon in patches minus one.
    series_mask_rate: float = 0.5
    series_mask_span: int = 4
    # Series with covariates (TiRex-2): a long table's columns by role, and the rows one
    # batch element holds (a series' targets and covariates, then empty padding rows), a
    # fixed number so that every batch has one shape.
    id_column: str = "id"
    timestamp_column: str = "timestamp"
    target_columns: tuple[str, ...] = ("value",)
    past_covariates: tuple[str, ...] = ()
    future_covariates: tuple[str, ...] = ()
    series_rows: int = 1

    def __post_init__(self):
        require(self.seq_len >= 1, f"data.seq_len must be >= 1; got {self.seq_len}.")
        lo_hi, edges = self.train_lengths, self.eval_buckets
        require(
            len(lo_hi) == 2 and 1 <= lo_hi[0] <= lo_hi[1],
            f"data.train_lengths must be (min, max) with 1 <= min <= max; got {lo_hi}.",
        )
        require(
            len(edges) >= 2 and edges[0] >= 1 and list(edges) == sorted(set(edges)),
            f"data.eval_buckets must be >= 2 increasing lengths, e.g. [40, 64, 128, 256]; "
            f"got {edges}.",
        )
        require(self.num_kv_pairs >= 1, "data.num_kv_pairs must be >= 1.")
        require(
            0.0 <= self.series_mask_rate <= 1.0,
            f"data.series_mask_rate must be in [0, 1]; got {self.series_mask_rate}.",
        )
        require(self.series_mask_span >= 0, "data.series_mask_span must be >= 0 (0: off).")
        require(self.series_rows >= 1, f"data.series_rows must be >= 1; got {self.series_rows}.")
        require(len(self.target_columns) >= 1, "data.target_columns needs at least one column.")
        roles = (*self.target_columns, *self.past_covariates, *self.future_covariates)
        twice = sorted({c for c in roles if roles.count(c) > 1})
        require(
            not twice,
            f"data: column(s) {twice} are named in more than one of target_columns, "
            "past_covariates and future_covariates (or twice in one); give each one role.",
        )
        if self.path.startswith("synthetic:"):
            from train.data.synthetic.tasks import check_setup  # lazy: keeps this module light

            try:
                check_setup(self)
            except ValueError as e:
                raise ConfigError(str(e)) from e
        require(
            0.0 <= self.val_fraction < 1.0,
            f"data.val_fraction must be in [0, 1); got {self.val_fraction}.",
        )
        require(bool(self.path), "data.path is empty; use builtin:stdlib or a file/folder.")
        require(bool(self.tokenizer), "data.tokenizer is empty; use bytes or a path/name.")


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with decoupled weight decay (masked, see ``train.loop.optimizer``) and clipping."""

    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-5
    weight_decay: float = 0.1
    # Global-norm gradient clipping; 0 disables it.
    grad_clip: float = 1.0

    def __post_init__(self):
        require(self.lr > 0, f"optimizer.lr must be > 0; got {self.lr}.")
        require(0 <= self.b1 < 1 and 0 <= self.b2 < 1, "optimizer.b1 and b2 must be in [0, 1).")
        require(self.eps > 0, "optimizer.eps must be > 0.")
        require(self.weight_decay >= 0, "optimizer.weight_decay must be >= 0.")
        require(self.grad_clip >= 0, "optimizer.grad_clip must be >= 0 (0 disables clipping).")


@dataclass(frozen=True)
class ScheduleConfig:
    """Linear warm-up from 0 to ``optimizer.lr``, then cosine decay to ``final_lr_ratio``."""

    warmup_steps: int = 750
    final_lr_ratio: float = 0.1
    # Length of warm-up + decay; -1 means train.steps.
    decay_steps: int = -1

    def __post_init__(self):
        require(self.warmup_steps >= 0, "schedule.warmup_steps must be >= 0.")
        require(0 <= self.final_lr_ratio <= 1, "schedule.final_lr_ratio must be in [0, 1].")
        require(
            self.decay_steps == -1 or self.decay_steps >= 1,
            "schedule.decay_steps must be -1 (= train.steps) or >= 1.",
        )


@dataclass(frozen=True)
class TrainConfig:
    """Loop length, global batch, gradient accumulation and evaluation cadence."""

    steps: int = 1000
    # Sequences per optimizer step (global, over all devices and accumulation steps).
    batch_size: int = 16
    # Sequences per forward/backward pass; batch_size / micro_batch_size passes are
    # accumulated per step. -1 means batch_size (no accumulation).
    micro_batch_size: int = -1
    seed: int = 0
    eval_every: int = 100
    eval_batches: int = 8
    # Stop (saving a checkpoint) after this many steps, as if interrupted; -1 = never.
    # For time-sliced jobs; the schedule still follows train.steps.
    stop_after: int = -1
    # Fine-tuning: start from these weights instead of a random init (a train.main run's
    # folder, its newest checkpoint, or a Hugging Face / reference checkpoint folder of the
    # xLSTM-7B family). Ignored once the workdir has a checkpoint of its own (resuming).
    init_from: str = ""

    @property
    def micro(self) -> int:
        """The resolved micro-batch size."""
        return self.batch_size if self.micro_batch_size == -1 else self.micro_batch_size

    @property
    def accum_steps(self) -> int:
        """Forward/backward passes accumulated per optimizer step."""
        return self.batch_size // self.micro

    def __post_init__(self):
        # The optimizer's step count is an int32 (optax), and JAX keys keep 32 bits of a
        # seed without x64: a larger seed would silently equal a smaller one.
        require(1 <= self.steps < 2**31, f"train.steps must be >= 1 and < 2**31; got {self.steps}.")
        require(0 <= self.seed < 2**32, f"train.seed must be in [0, 2**32); got {self.seed}.")
        require(self.batch_size >= 1, f"train.batch_size must be >= 1; got {self.batch_size}.")
        require(
            self.micro_batch_size == -1 or 1 <= self.micro_batch_size <= self.batch_size,
            f"train.micro_batch_size must be -1 or in [1, batch_size={self.batch_size}]; "
            f"got {self.micro_batch_size}.",
        )
        require(
            self.batch_size % self.micro == 0,
            f"train.batch_size={self.batch_size} must be a multiple of "
            f"train.micro_batch_size={self.micro_batch_size}.",
        )
        require(self.eval_every >= 0, "train.eval_every must be >= 0 (0 disables eval).")
        require(self.eval_batches >= 1, "train.eval_batches must be >= 1.")
        require(
            self.stop_after == -1 or self.stop_after >= 1,
            "train.stop_after must be -1 (never) or >= 1.",
        )


@dataclass(frozen=True)
class CheckpointConfig:
    """Orbax checkpoints in ``WORKDIR/checkpoints``: every ``every`` steps and at the end."""

    every: int = 500
    keep: int = 3
    async_save: bool = True

    def __post_init__(self):
        require(self.every >= 1, "checkpoint.every must be >= 1.")
        require(self.keep >= 1, "checkpoint.keep must be >= 1.")


@dataclass(frozen=True)
class LoggingConfig:
    """Metrics cadence (metrics.jsonl, TensorBoard) and the progress bar."""

    every: int = 10
    progress_bar: bool = True
    tensorboard: bool = True
    plot: bool = True

    def __post_init__(self):
        require(self.every >= 1, "logging.every must be >= 1.")


@dataclass(frozen=True)
class MeshConfig:
    """Device mesh axis sizes; -1 takes the devices the other axes leave.

    Parameters and optimizer state are sharded over ``fsdp`` (and ``tensor`` for heads,
    the mLSTM inner dim, the FFN hidden dim and the vocabulary); the batch over
    ``data`` x ``fsdp``. The default is one device, unsharded.
    """

    data: int = 1
    fsdp: int = 1
    tensor: int = 1
    # Logical axis name -> mesh axes (xlstm_jax.layers.sharding): the one place that decides what
    # is sharded how. The batch is split over data x fsdp.
    rules: tuple = DEFAULT_RULES

    def __post_init__(self):
        sizes = (self.data, self.fsdp, self.tensor)
        require(all(s == -1 or s >= 1 for s in sizes), "mesh.data/fsdp/tensor must be -1 or >= 1.")
        require(sizes.count(-1) <= 1, "at most one of mesh.data/fsdp/tensor may be -1.")

    def resolve(self, num_devices: int) -> tuple[int, int, int]:
        """Axis sizes (data, fsdp, tensor) for ``num_devices`` devices."""
        sizes = [self.data, self.fsdp, self.tensor]
        fixed = 1
        for s in sizes:
            fixed *= s if s != -1 else 1
        if -1 in sizes:
            require(
                num_devices % fixed == 0,
                f"mesh: the fixed axes ({fixed} devices) do not divide {num_devices} devices.",
            )
            sizes[sizes.index(-1)] = num_devices // fixed
        return tuple(sizes)


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything a training run needs; ``configs/NAME.py`` builds one.

    ``model`` is an xLSTM of the 2024 paper (``xLSTMLMModelConfig``), of the xLSTM-7B
    family (``xLSTMLargeConfig``, the ``xlstm_large_*`` and ``xlstm_7b`` configs), the
    Transformer baseline (``TransformerConfig``, the ``llama_*`` configs) or the TiRex
    forecaster (``TiRexConfig``, the ``tirex_*`` configs, trained on ``series:`` data).
    """

    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    name: str = "unnamed"

    def __post_init__(self):
        # One check for every numeric option of every section: inf and NaN pass most range
        # checks (NaN fails none of ``x > 0``'s negations), so refuse them by name here.
        for key, value in _numbers(self, ""):
            require(
                math.isfinite(value),
                f"{key}={value}: give a finite number (not inf or NaN).",
            )


def _numbers(obj, prefix: str):
    """``(dotted key, value)`` of every float in a config tree (tuples included)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if is_dataclass(value):
            yield from _numbers(value, key + ".")
        elif isinstance(value, float):
            yield key, value
        elif isinstance(value, tuple):
            yield from ((key, v) for v in value if isinstance(v, float))

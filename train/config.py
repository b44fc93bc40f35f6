"""The training run's typed, frozen config tree and its ``--set key=value`` overrides.

``ExperimentConfig`` holds one section per concern: ``model`` (the library's
``xLSTMLMModelConfig``), ``data``, ``optimizer``, ``schedule``, ``train``, ``checkpoint``,
``logging`` and ``mesh``. Named runs live in ``configs/NAME.py`` (see ``configs.load``).

Overrides address any field by its dotted path (``train.steps=200``,
``model.mlstm_block.mlstm.num_heads=2``); the string is coerced to the field's type, and
the tree is rebuilt bottom-up so every section's validation runs again. An unknown key
raises ``ConfigError`` listing the valid keys at that level.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from xlstm_jax.config import (
    ConfigError,
    FeedForwardConfig,
    mLSTMBlockConfig,
    mLSTMLayerConfig,
    sLSTMBlockConfig,
    sLSTMLayerConfig,
    xLSTMLMModelConfig,
)
from xlstm_jax.sharding import DEFAULT_RULES
from xlstm_jax.transformer import TransformerConfig

__all__ = [
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "LoggingConfig",
    "MeshConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "config_diff",
    "flatten",
    "to_dict",
]


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class DataConfig:
    """Where tokens come from and how they are cut into training sequences.

    ``path`` is ``builtin:stdlib`` (this Python's standard-library sources, no download),
    a text / JSONL / Parquet file or a directory of them, a folder written by
    ``python -m train.prepare_data`` (memory-mapped tokens), or ``hf:NAME_OR_PATH`` for a
    Hugging Face ``datasets`` dataset. ``tokenizer`` is ``bytes`` (built in), a path to a
    ``tokenizer.json`` (or its folder), or a Hugging Face hub name such as ``gpt2``.

    ``synthetic:TASK`` generates one of the paper's synthetic tasks on the fly (formal
    languages such as ``synthetic:parity``, or ``synthetic:mqar``; see ``train.synthetic``):
    the tokenizer is then unused, ``seq_len + 1`` is the training width, and
    ``train_lengths``, ``eval_buckets`` and ``num_kv_pairs`` apply.
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

    def __post_init__(self):
        _require(self.seq_len >= 1, f"data.seq_len must be >= 1; got {self.seq_len}.")
        lo_hi, edges = self.train_lengths, self.eval_buckets
        _require(
            len(lo_hi) == 2 and 1 <= lo_hi[0] <= lo_hi[1],
            f"data.train_lengths must be (min, max) with 1 <= min <= max; got {lo_hi}.",
        )
        _require(
            len(edges) >= 2 and edges[0] >= 1 and list(edges) == sorted(set(edges)),
            f"data.eval_buckets must be >= 2 increasing lengths, e.g. [40, 64, 128, 256]; "
            f"got {edges}.",
        )
        _require(self.num_kv_pairs >= 1, "data.num_kv_pairs must be >= 1.")
        if self.path.startswith("synthetic:"):
            from train.synthetic import check_setup  # lazy: keeps this module light

            try:
                check_setup(self)
            except ValueError as e:
                raise ConfigError(str(e)) from e
        _require(
            0.0 <= self.val_fraction < 1.0,
            f"data.val_fraction must be in [0, 1); got {self.val_fraction}.",
        )
        _require(bool(self.path), "data.path is empty; use builtin:stdlib or a file/folder.")
        _require(bool(self.tokenizer), "data.tokenizer is empty; use bytes or a path/name.")


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with decoupled weight decay (masked, see ``train.optimizer``) and clipping."""

    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-5
    weight_decay: float = 0.1
    # Global-norm gradient clipping; 0 disables it.
    grad_clip: float = 1.0

    def __post_init__(self):
        _require(self.lr > 0, f"optimizer.lr must be > 0; got {self.lr}.")
        _require(0 <= self.b1 < 1 and 0 <= self.b2 < 1, "optimizer.b1 and b2 must be in [0, 1).")
        _require(self.eps > 0, "optimizer.eps must be > 0.")
        _require(self.weight_decay >= 0, "optimizer.weight_decay must be >= 0.")
        _require(self.grad_clip >= 0, "optimizer.grad_clip must be >= 0 (0 disables clipping).")


@dataclass(frozen=True)
class ScheduleConfig:
    """Linear warm-up from 0 to ``optimizer.lr``, then cosine decay to ``final_lr_ratio``."""

    warmup_steps: int = 750
    final_lr_ratio: float = 0.1
    # Length of warm-up + decay; -1 means train.steps.
    decay_steps: int = -1

    def __post_init__(self):
        _require(self.warmup_steps >= 0, "schedule.warmup_steps must be >= 0.")
        _require(0 <= self.final_lr_ratio <= 1, "schedule.final_lr_ratio must be in [0, 1].")
        _require(
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

    @property
    def micro(self) -> int:
        """The resolved micro-batch size."""
        return self.batch_size if self.micro_batch_size == -1 else self.micro_batch_size

    @property
    def accum_steps(self) -> int:
        """Forward/backward passes accumulated per optimizer step."""
        return self.batch_size // self.micro

    def __post_init__(self):
        _require(self.steps >= 1, f"train.steps must be >= 1; got {self.steps}.")
        _require(self.batch_size >= 1, f"train.batch_size must be >= 1; got {self.batch_size}.")
        _require(
            self.micro_batch_size == -1 or 1 <= self.micro_batch_size <= self.batch_size,
            f"train.micro_batch_size must be -1 or in [1, batch_size={self.batch_size}]; "
            f"got {self.micro_batch_size}.",
        )
        _require(
            self.batch_size % self.micro == 0,
            f"train.batch_size={self.batch_size} must be a multiple of "
            f"train.micro_batch_size={self.micro_batch_size}.",
        )
        _require(self.eval_every >= 0, "train.eval_every must be >= 0 (0 disables eval).")
        _require(self.eval_batches >= 1, "train.eval_batches must be >= 1.")
        _require(
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
        _require(self.every >= 1, "checkpoint.every must be >= 1.")
        _require(self.keep >= 1, "checkpoint.keep must be >= 1.")


@dataclass(frozen=True)
class LoggingConfig:
    """Metrics cadence (metrics.jsonl, TensorBoard) and the progress bar."""

    every: int = 10
    progress_bar: bool = True
    tensorboard: bool = True
    plot: bool = True

    def __post_init__(self):
        _require(self.every >= 1, "logging.every must be >= 1.")


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
    # Logical axis name -> mesh axes (xlstm_jax.sharding): the one place that decides what
    # is sharded how. The batch is split over data x fsdp.
    rules: tuple = DEFAULT_RULES

    def __post_init__(self):
        sizes = (self.data, self.fsdp, self.tensor)
        _require(all(s == -1 or s >= 1 for s in sizes), "mesh.data/fsdp/tensor must be -1 or >= 1.")
        _require(sizes.count(-1) <= 1, "at most one of mesh.data/fsdp/tensor may be -1.")

    def resolve(self, num_devices: int) -> tuple[int, int, int]:
        """Axis sizes (data, fsdp, tensor) for ``num_devices`` devices."""
        sizes = [self.data, self.fsdp, self.tensor]
        fixed = 1
        for s in sizes:
            fixed *= s if s != -1 else 1
        if -1 in sizes:
            _require(
                num_devices % fixed == 0,
                f"mesh: the fixed axes ({fixed} devices) do not divide {num_devices} devices.",
            )
            sizes[sizes.index(-1)] = num_devices // fixed
        return tuple(sizes)


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything a training run needs; ``configs/NAME.py`` builds one.

    ``model`` is an xLSTM (``xLSTMLMModelConfig``) or the Transformer baseline
    (``TransformerConfig``, the ``llama_*`` configs).
    """

    model: xLSTMLMModelConfig | TransformerConfig
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    name: str = "unnamed"


# Classes a `--set` may instantiate when a section that is None gets a field set.
_KNOWN = {
    c.__name__: c
    for c in (
        mLSTMBlockConfig,
        mLSTMLayerConfig,
        sLSTMBlockConfig,
        sLSTMLayerConfig,
        FeedForwardConfig,
    )
}


def _public_fields(obj_or_cls) -> list[dataclasses.Field]:
    # Underscore fields (_num_blocks, _block_idx) are filled in by the model config itself.
    return [f for f in dataclasses.fields(obj_or_cls) if not f.name.startswith("_")]


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls, localns=_KNOWN)


def _union_args(tp) -> tuple:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def _dataclass_in(tp):
    for arg in _union_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _coerce(raw: str, tp, key: str):
    """Parses the string ``raw`` into a value of type ``tp`` (for the field ``key``)."""
    args = _union_args(tp)
    low = raw.strip().lower()
    if type(None) in args and low in ("none", "null"):
        return None
    for arg in args:
        if arg is bool:
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ConfigError(f"--set {key}={raw}: expected true or false.")
    if int in args and float not in args:
        try:
            return int(raw)
        except ValueError:
            pass
    if float in args:
        try:
            return float(raw)
        except ValueError:
            pass
    literals = [v for a in args if typing.get_origin(a) is Literal for v in typing.get_args(a)]
    if raw in literals:
        return raw
    if str in args:
        return raw
    if any(typing.get_origin(a) is tuple for a in args):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = tuple(int(v) for v in raw.split(",") if v.strip()) if raw.strip() else ()
        if isinstance(value, int):
            value = (value,)
        if isinstance(value, list | tuple):
            return tuple(value)
    expected = ", ".join(sorted(str(v) for v in literals)) or " | ".join(
        getattr(a, "__name__", str(a)) for a in args
    )
    raise ConfigError(f"--set {key}={raw}: cannot parse the value; expected {expected}.")


def _apply(obj, updates: dict, prefix: str):
    """Returns ``obj`` with ``updates`` (field name -> raw string or nested dict) applied,
    in one ``replace`` per section so that fields validated together change together."""
    valid = [f.name for f in _public_fields(obj)]
    hints = _hints(type(obj))
    changes = {}
    for name, raw in updates.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in valid:
            where = f"under '{prefix}'" if prefix else "at the top level"
            raise ConfigError(
                f"unknown config key '{key}'; valid keys {where}: {', '.join(valid)}."
            )
        current = getattr(obj, name)
        if isinstance(raw, dict):
            if current is None:
                cls = _dataclass_in(hints[name])
                if cls is None:
                    raise ConfigError(f"config key '{key}' is not a section.")
                current = cls()
            if not dataclasses.is_dataclass(current):
                raise ConfigError(
                    f"config key '{key}' is a value, not a section; set it as --set {key}=VALUE."
                )
            changes[name] = _apply(current, raw, key)
        else:
            if dataclasses.is_dataclass(current) and raw.strip().lower() not in ("none", "null"):
                fields = ", ".join(f.name for f in _public_fields(current))
                raise ConfigError(
                    f"config key '{key}' is a section; set one of its keys: {fields}."
                )
            changes[name] = _coerce(raw, hints[name], key)
    return dataclasses.replace(obj, **changes)


def apply_overrides(cfg: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """Applies ``key=value`` strings to ``cfg`` and returns the new config.

    Order does not matter (a repeated key keeps its last value): all changes to one
    section are applied together, then the section is validated, so e.g.
    ``model.num_blocks=1 model.slstm_at=[]`` works in either order.

    Raises:
        ConfigError: a malformed override, an unknown key (the message lists the valid
            keys at that level) or a value the section's validation rejects.
    """
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.steps=100.")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r}: the key is empty.")
        node = tree
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(
                    f"--set {key}: '{'.'.join(parts[: i + 1])}' is also set as a value."
                )
        if isinstance(node.get(parts[-1]), dict):
            raise ConfigError(f"--set {key}: its fields are also set one by one.")
        node[parts[-1]] = raw
    return _apply(cfg, tree, "")


def to_dict(cfg) -> dict:
    """The config as plain JSON-ready data (tuples become lists, private fields dropped)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in _public_fields(cfg)}
    if isinstance(cfg, tuple | list):
        return [to_dict(v) for v in cfg]
    return cfg


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def config_diff(old: dict, new: dict) -> list[str]:
    """Human-readable ``key: old -> new`` lines for the keys that differ."""
    a, b = flatten(old), flatten(new)
    return [
        f"{k}: {json.dumps(a.get(k))} -> {json.dumps(b.get(k))}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def _tuplify(value):
    return tuple(_tuplify(v) for v in value) if isinstance(value, list) else value


def from_dict(cls, data: dict):
    """The inverse of ``to_dict``: rebuilds the frozen config ``cls`` (e.g. the
    ``config.json`` of a run: ``from_dict(ExperimentConfig, json.load(f))``)."""
    hints = _hints(cls)
    kw = {}
    for f in _public_fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        sub = _dataclass_in(hints[f.name])
        kw[f.name] = from_dict(sub, value) if sub and isinstance(value, dict) else _tuplify(value)
    return cls(**kw)

"""Model configuration: frozen dataclasses with the PyTorch reference's names and fields.

A reference config ports field by field (``xlstm_jax.convert.config_from_torch`` does it
for you). Differences from the reference, all deliberate:

* Frozen and hashable (usable as static arguments under ``jax.jit``); ``slstm_at`` is a
  tuple. Values the reference writes into sub-configs in ``__post_init__``
  (``embedding_dim``, ``bias``, ``dropout``, ``_num_blocks``, ``_block_idx``) are filled in
  by ``xLSTMBlockStackConfig`` on copies, so a config object is never mutated.
* ``context_length`` is informational: no causal-mask buffer is sized from it, any S works.
* Added: ``mLSTMLayerConfig.backend`` / ``chunk_size`` / ``impl`` (which mLSTM form and
  kernel run), ``sLSTMLayerConfig.impl``, and the model-wide ``dtype`` / ``param_dtype``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

DTYPES = ("float32", "bfloat16", "float16", "float64")
ACT_FNS = ("gelu", "relu", "relu^2", "sigmoid", "swish", "selu")
MLSTM_BACKENDS = ("auto", "parallel", "chunkwise", "recurrent")
IMPLS = ("auto", "xla", "pallas")


class ConfigError(ValueError):
    """An invalid configuration; the message names the field and the fix."""


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _set(obj, **kw) -> None:
    for k, v in kw.items():
        object.__setattr__(obj, k, v)


def round_up_dim(factor: float, dim: int, multiple: int, up: bool = True) -> int:
    """``ceil(factor * dim / multiple) * multiple`` (floor when ``up`` is False)."""
    q = factor * dim / multiple
    return int((math.ceil(q) if up else math.floor(q)) * multiple)


@dataclass(frozen=True)
class mLSTMLayerConfig:
    """mLSTM layer (paper version): up-projection, causal conv, matrix-memory cell."""

    conv1d_kernel_size: int = 4
    qkv_proj_blocksize: int = 4
    num_heads: int = 4
    proj_factor: float = 2.0
    round_proj_up_dim_up: bool = True
    round_proj_up_to_multiple_of: int = 64
    embedding_dim: int = -1
    bias: bool = False
    dropout: float = 0.0
    context_length: int = -1
    # Ours: which form of the cell runs. "auto" = parallel for S <= chunk_size, else chunkwise.
    backend: Literal["auto", "parallel", "chunkwise", "recurrent"] = "auto"
    chunk_size: int = 64
    impl: Literal["auto", "xla", "pallas"] = "auto"
    # Run the Pallas kernels in interpret mode (CPU testing of impl="pallas"; slow).
    interpret: bool = False
    _num_blocks: int = 1
    _block_idx: int = 0

    @property
    def inner_embedding_dim(self) -> int:
        return round_up_dim(
            self.proj_factor,
            self.embedding_dim,
            self.round_proj_up_to_multiple_of,
            self.round_proj_up_dim_up,
        )

    @property
    def head_dim(self) -> int:
        return self.inner_embedding_dim // self.num_heads

    def validate(self) -> None:
        """Checks that need ``embedding_dim`` (called once the stack has set it)."""
        _require(self.embedding_dim > 0, "mLSTMLayerConfig.embedding_dim must be > 0.")
        inner = self.inner_embedding_dim
        _require(
            inner % self.num_heads == 0,
            f"mLSTMLayerConfig.num_heads={self.num_heads} must divide the inner dim {inner} "
            f"(= proj_factor * embedding_dim rounded to {self.round_proj_up_to_multiple_of}).",
        )
        _require(
            inner % self.qkv_proj_blocksize == 0,
            f"mLSTMLayerConfig.qkv_proj_blocksize={self.qkv_proj_blocksize} must divide the "
            f"inner dim {inner}.",
        )

    def __post_init__(self):
        _require(self.num_heads >= 1, "mLSTMLayerConfig.num_heads must be >= 1.")
        _require(self.conv1d_kernel_size >= 0, "mLSTMLayerConfig.conv1d_kernel_size must be >= 0.")
        _require(self.qkv_proj_blocksize >= 1, "mLSTMLayerConfig.qkv_proj_blocksize must be >= 1.")
        _require(self.proj_factor > 0, "mLSTMLayerConfig.proj_factor must be > 0.")
        _require(0.0 <= self.dropout < 1.0, "mLSTMLayerConfig.dropout must be in [0, 1).")
        _require(
            self.backend in MLSTM_BACKENDS,
            f"mLSTMLayerConfig.backend must be one of {MLSTM_BACKENDS}; got {self.backend!r}.",
        )
        _require(self.chunk_size >= 1, "mLSTMLayerConfig.chunk_size must be >= 1.")
        _require(self.impl in IMPLS, f"mLSTMLayerConfig.impl must be one of {IMPLS}.")
        if self.embedding_dim > 0:
            self.validate()


@dataclass(frozen=True)
class sLSTMLayerConfig:
    """sLSTM layer: causal conv, four headwise gate projections, sLSTM cell, group norm."""

    embedding_dim: int = -1
    num_heads: int = 4
    conv1d_kernel_size: int = 4
    group_norm_weight: bool = True
    dropout: float = 0.0
    # Cell fields (the reference's sLSTMCellConfig).
    function: Literal["slstm", "lstm"] = "slstm"
    bias_init: Literal["powerlaw_blockdependent", "small_init", "standard", "zeros"] = (
        "powerlaw_blockdependent"
    )
    recurrent_weight_init: Literal["zeros", "standard"] = "zeros"
    # The reference's kernel choice; here it only names the layout of converted checkpoints.
    backend: Literal["vanilla", "cuda"] = "cuda"
    impl: Literal["auto", "xla", "pallas"] = "auto"
    interpret: bool = False
    _num_blocks: int = 1
    _block_idx: int = 0

    @property
    def hidden_size(self) -> int:
        return self.embedding_dim

    @property
    def head_dim(self) -> int:
        return self.embedding_dim // self.num_heads

    def validate(self) -> None:
        _require(self.embedding_dim > 0, "sLSTMLayerConfig.embedding_dim must be > 0.")
        _require(
            self.embedding_dim % self.num_heads == 0,
            f"sLSTMLayerConfig.num_heads={self.num_heads} must divide embedding_dim="
            f"{self.embedding_dim}.",
        )

    def __post_init__(self):
        _require(self.num_heads >= 1, "sLSTMLayerConfig.num_heads must be >= 1.")
        _require(self.conv1d_kernel_size >= 0, "sLSTMLayerConfig.conv1d_kernel_size must be >= 0.")
        _require(
            self.function in ("slstm", "lstm"),
            f"sLSTMLayerConfig.function must be 'slstm' or 'lstm'; got {self.function!r}.",
        )
        _require(
            self.bias_init in ("powerlaw_blockdependent", "small_init", "standard", "zeros"),
            f"sLSTMLayerConfig.bias_init {self.bias_init!r} is unknown.",
        )
        _require(
            self.recurrent_weight_init in ("zeros", "standard"),
            f"sLSTMLayerConfig.recurrent_weight_init {self.recurrent_weight_init!r} is unknown.",
        )
        _require(self.backend in ("vanilla", "cuda"), "sLSTMLayerConfig.backend: vanilla|cuda.")
        _require(self.impl in IMPLS, f"sLSTMLayerConfig.impl must be one of {IMPLS}.")
        _require(0.0 <= self.dropout < 1.0, "sLSTMLayerConfig.dropout must be in [0, 1).")
        if self.embedding_dim > 0:
            self.validate()


@dataclass(frozen=True)
class FeedForwardConfig:
    """Gated feed-forward (sLSTM blocks): ``proj_down(act(gate) * up)``."""

    proj_factor: float = 1.3
    act_fn: str = "gelu"
    embedding_dim: int = -1
    dropout: float = 0.0
    bias: bool = False
    ff_type: Literal["ffn_gated"] = "ffn_gated"
    round_proj_up_dim_up: bool = True
    round_proj_up_to_multiple_of: int = 64
    _num_blocks: int = 1

    @property
    def proj_up_dim(self) -> int:
        return round_up_dim(
            self.proj_factor,
            self.embedding_dim,
            self.round_proj_up_to_multiple_of,
            self.round_proj_up_dim_up,
        )

    def __post_init__(self):
        _require(
            self.act_fn in ACT_FNS,
            f"FeedForwardConfig.act_fn must be one of {ACT_FNS}; got {self.act_fn!r}.",
        )
        _require(self.ff_type == "ffn_gated", "FeedForwardConfig.ff_type must be 'ffn_gated'.")
        _require(self.proj_factor > 0, "FeedForwardConfig.proj_factor must be > 0.")


@dataclass(frozen=True)
class mLSTMBlockConfig:
    mlstm: mLSTMLayerConfig = field(default_factory=mLSTMLayerConfig)


@dataclass(frozen=True)
class sLSTMBlockConfig:
    slstm: sLSTMLayerConfig = field(default_factory=sLSTMLayerConfig)
    feedforward: FeedForwardConfig | None = field(default_factory=FeedForwardConfig)


@dataclass(frozen=True)
class xLSTMBlockStackConfig:
    """A stack of mLSTM and sLSTM blocks (sLSTM at the indices in ``slstm_at``)."""

    mlstm_block: mLSTMBlockConfig | None = None
    slstm_block: sLSTMBlockConfig | None = None
    context_length: int = -1
    num_blocks: int = 1
    embedding_dim: int = 128
    add_post_blocks_norm: bool = True
    bias: bool = False
    dropout: float = 0.0
    slstm_at: tuple[int, ...] | Literal["all"] = ()
    # Ours: compute dtype and parameter dtype ("bfloat16" compute with "float32" params is
    # the usual mixed-precision recipe; gates and recurrent states always stay float32).
    dtype: str = "float32"
    param_dtype: str = "float32"
    # Ours: rematerialise each block in the backward pass (saves activation memory).
    remat: bool = False

    def __post_init__(self):
        _require(self.num_blocks >= 1, "xLSTMBlockStackConfig.num_blocks must be >= 1.")
        _require(self.embedding_dim >= 1, "xLSTMBlockStackConfig.embedding_dim must be >= 1.")
        _require(self.dtype in DTYPES, f"dtype must be one of {DTYPES}; got {self.dtype!r}.")
        _require(
            self.param_dtype in DTYPES,
            f"param_dtype must be one of {DTYPES}; got {self.param_dtype!r}.",
        )
        _require(
            self.mlstm_block is not None or self.slstm_block is not None,
            "xLSTMBlockStackConfig needs mlstm_block or slstm_block (or both).",
        )
        slstm_at = self.slstm_at
        if self.mlstm_block is None or slstm_at == "all":
            slstm_at = tuple(range(self.num_blocks))
        slstm_at = tuple(sorted(int(i) for i in slstm_at))
        for i in slstm_at:
            _require(
                0 <= i < self.num_blocks,
                f"xLSTMBlockStackConfig.slstm_at has {i}, outside "
                f"[0, num_blocks={self.num_blocks}).",
            )
        _require(
            not slstm_at or self.slstm_block is not None,
            "xLSTMBlockStackConfig.slstm_at places sLSTM blocks but slstm_block is None; "
            "set slstm_block=sLSTMBlockConfig() or slstm_at=().",
        )
        _set(self, slstm_at=slstm_at)
        # Fill in the values the stack owns (validating each layer config once).
        if self.mlstm_block is not None:
            layer = dataclasses.replace(
                self.mlstm_block.mlstm,
                embedding_dim=self.embedding_dim,
                bias=self.bias,
                dropout=self.dropout,
                context_length=self.context_length,
                _num_blocks=self.num_blocks,
            )
            _set(self, mlstm_block=dataclasses.replace(self.mlstm_block, mlstm=layer))
        if self.slstm_block is not None:
            layer = dataclasses.replace(
                self.slstm_block.slstm,
                embedding_dim=self.embedding_dim,
                dropout=self.dropout,
                _num_blocks=self.num_blocks,
            )
            ff = self.slstm_block.feedforward
            if ff is not None:
                ff = dataclasses.replace(
                    ff, embedding_dim=self.embedding_dim, _num_blocks=self.num_blocks
                )
            _set(self, slstm_block=sLSTMBlockConfig(slstm=layer, feedforward=ff))

    @property
    def block_map(self) -> tuple[int, ...]:
        """0 = mLSTM block, 1 = sLSTM block, per position."""
        return tuple(int(i in self.slstm_at) for i in range(self.num_blocks))

    def block_config(self, idx: int) -> mLSTMBlockConfig | sLSTMBlockConfig:
        """The resolved config of block ``idx`` (with its ``_block_idx`` set)."""
        if self.block_map[idx]:
            layer = dataclasses.replace(self.slstm_block.slstm, _block_idx=idx)
            return dataclasses.replace(self.slstm_block, slstm=layer)
        layer = dataclasses.replace(self.mlstm_block.mlstm, _block_idx=idx)
        return mLSTMBlockConfig(mlstm=layer)


@dataclass(frozen=True)
class xLSTMLMModelConfig(xLSTMBlockStackConfig):
    """Language model: token embedding, block stack, LM head."""

    vocab_size: int = -1
    tie_weights: bool = False
    weight_decay_on_embedding: bool = False
    add_embedding_dropout: bool = False

    def __post_init__(self):
        super().__post_init__()
        _require(
            self.vocab_size >= 1,
            f"xLSTMLMModelConfig.vocab_size must be >= 1; got {self.vocab_size}.",
        )

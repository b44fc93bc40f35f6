"""The 2024 paper's xLSTM language model: its frozen configs, with the PyTorch reference's
names and fields.

A reference config ports field by field (``xlstm_jax.convert.config_from_torch`` does it
for you). Differences from the reference, all deliberate:

* Frozen and hashable (usable as static arguments under ``jax.jit``); ``slstm_at`` is a
  tuple (or ``"all"``). Nothing is written into a config after it is made: values the
  reference copies into its sub-configs in ``__post_init__`` (``embedding_dim``, ``bias``,
  ``dropout``, ``context_length``, ``_num_blocks``, ``_block_idx``) are filled in on demand
  by ``xLSTMBlockStackConfig.block_config(idx)``, a resolved view of one block.
* ``context_length`` is informational: no causal-mask buffer is sized from it, any S works.
* Added knobs, one per decision: ``mLSTMLayerConfig.form`` (which form of the mLSTM cell
  runs) and ``chunk_size``; ``impl`` on both layer configs (the XLA path or the kernels);
  the model-wide ``dtype`` / ``param_dtype``, ``remat`` (with ``remat_policy``) and
  ``scan_layers`` (one ``lax.scan`` over the blocks: mLSTM-only stacks).

``sLSTMLayerConfig`` (shared with TiRex) and ``FeedForwardConfig`` live in
``xlstm_jax.layers`` and are importable from here.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Literal

from xlstm_jax.layers.config import (
    DTYPES,
    MAX_BLOCKS,
    REMAT_POLICIES,
    RematPolicy,
    require,
    round_up,
)
from xlstm_jax.layers.feedforward import FeedForwardConfig
from xlstm_jax.layers.mlstm import check_cell_settings
from xlstm_jax.layers.slstm import sLSTMLayerConfig

__all__ = [
    "FeedForwardConfig",
    "mLSTMBlockConfig",
    "mLSTMLayerConfig",
    "sLSTMBlockConfig",
    "sLSTMLayerConfig",
    "xLSTMBlockStackConfig",
    "xLSTMLMModelConfig",
]


@dataclass(frozen=True)
class mLSTMLayerConfig:
    """mLSTM layer (paper version): up-projection, causal conv, matrix-memory cell.

    ``form`` picks the form of the cell (all compute the same function):
    ``"parallel"`` (the reference's, quadratic in S), ``"chunkwise"`` (linear in S, chunks
    of ``chunk_size``), ``"recurrent"`` (a scan over steps), or ``"auto"``: parallel up to
    ``chunk_size`` tokens, chunkwise above, and chunkwise always with a kernel ``impl``.
    A single token with a carried state runs the recurrent step (decoding), whatever the
    form. ``impl`` picks the XLA path, the Pallas (Triton) kernels or the Mosaic GPU
    chunkwise kernel ("auto": the kernels on a CUDA GPU, once they pass their check); only
    the chunkwise form and the step have kernels, so a kernel ``impl`` with
    ``form="parallel"`` or ``"recurrent"`` is rejected (``layers.mlstm.check_cell_settings``).
    With ``impl="mosaic"`` the decode step, which has no Mosaic kernel, runs with "auto".
    """

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
    form: Literal["auto", "parallel", "chunkwise", "recurrent"] = "auto"
    chunk_size: int = 64
    impl: Literal["auto", "xla", "pallas", "mosaic"] = "auto"
    _num_blocks: int = 1
    _block_idx: int = 0

    @property
    def inner_embedding_dim(self) -> int:
        return round_up(
            self.proj_factor * self.embedding_dim,
            self.round_proj_up_to_multiple_of,
            rule="ceil" if self.round_proj_up_dim_up else "floor",
        )

    @property
    def head_dim(self) -> int:
        return self.inner_embedding_dim // self.num_heads

    def validate(self) -> None:
        """Checks that need ``embedding_dim`` (run once it is known)."""
        require(self.embedding_dim > 0, "mLSTMLayerConfig.embedding_dim must be > 0.")
        inner = self.inner_embedding_dim
        require(
            inner % self.num_heads == 0,
            f"mLSTMLayerConfig.num_heads={self.num_heads} must divide the inner dim {inner} "
            f"(= proj_factor * embedding_dim rounded to {self.round_proj_up_to_multiple_of}).",
        )
        require(
            inner % self.qkv_proj_blocksize == 0,
            f"mLSTMLayerConfig.qkv_proj_blocksize={self.qkv_proj_blocksize} must divide the "
            f"inner dim {inner}.",
        )

    def __post_init__(self):
        require(self.num_heads >= 1, "mLSTMLayerConfig.num_heads must be >= 1.")
        require(self.conv1d_kernel_size >= 0, "mLSTMLayerConfig.conv1d_kernel_size must be >= 0.")
        require(self.qkv_proj_blocksize >= 1, "mLSTMLayerConfig.qkv_proj_blocksize must be >= 1.")
        require(self.proj_factor > 0, "mLSTMLayerConfig.proj_factor must be > 0.")
        require(0.0 <= self.dropout < 1.0, "mLSTMLayerConfig.dropout must be in [0, 1).")
        check_cell_settings(
            "mLSTMLayerConfig", form=self.form, chunk_size=self.chunk_size, impl=self.impl
        )
        if self.embedding_dim > 0:
            self.validate()


@dataclass(frozen=True)
class mLSTMBlockConfig:
    """An mLSTM block: ``x + mLSTMLayer(LayerNorm(x))`` (no feed-forward)."""

    mlstm: mLSTMLayerConfig = field(default_factory=mLSTMLayerConfig)


@dataclass(frozen=True)
class sLSTMBlockConfig:
    """An sLSTM block: ``x + sLSTMLayer(LayerNorm(x))``, then the gated feed-forward
    (``feedforward=None``: none)."""

    slstm: sLSTMLayerConfig = field(default_factory=sLSTMLayerConfig)
    feedforward: FeedForwardConfig | None = field(default_factory=FeedForwardConfig)


@dataclass(frozen=True)
class xLSTMBlockStackConfig:
    """A stack of mLSTM and sLSTM blocks (sLSTM at the indices in ``slstm_at``).

    The stack owns ``embedding_dim``, ``bias``, ``dropout`` and ``context_length`` for all
    of its blocks (as in the reference); ``block_config(idx)`` is block ``idx``'s resolved
    config.
    """

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
    # Ours: rematerialise each block in the backward pass (saves activation memory),
    # keeping what the jax.checkpoint policy ``remat_policy`` allows.
    remat: bool = False
    remat_policy: RematPolicy = "nothing_saveable"
    # Ours: run the blocks as one lax.scan, compiled once (mLSTM-only stacks, no dropout).
    scan_layers: bool = False

    def __post_init__(self):
        require(
            1 <= self.num_blocks <= MAX_BLOCKS,
            f"xLSTMBlockStackConfig.num_blocks must be in [1, {MAX_BLOCKS}]; got "
            f"{self.num_blocks}.",
        )
        require(self.embedding_dim >= 1, "xLSTMBlockStackConfig.embedding_dim must be >= 1.")
        require(self.dtype in DTYPES, f"dtype must be one of {DTYPES}; got {self.dtype!r}.")
        require(
            self.param_dtype in DTYPES,
            f"param_dtype must be one of {DTYPES}; got {self.param_dtype!r}.",
        )
        require(
            self.mlstm_block is not None or self.slstm_block is not None,
            "xLSTMBlockStackConfig needs mlstm_block or slstm_block (or both).",
        )
        require(
            self.slstm_at == "all"
            or (
                isinstance(self.slstm_at, tuple)
                and all(isinstance(i, numbers.Integral) for i in self.slstm_at)
            ),
            f"xLSTMBlockStackConfig.slstm_at must be a tuple of block indices or 'all'; got "
            f"{self.slstm_at!r} (write e.g. slstm_at=(1,)).",
        )
        for i in self.slstm_positions:
            require(
                0 <= i < self.num_blocks,
                f"xLSTMBlockStackConfig.slstm_at has {i}, outside "
                f"[0, num_blocks={self.num_blocks}).",
            )
        require(
            not self.slstm_positions or self.slstm_block is not None,
            "xLSTMBlockStackConfig.slstm_at places sLSTM blocks but slstm_block is None; "
            "set slstm_block=sLSTMBlockConfig() or slstm_at=().",
        )
        layers = {
            "mlstm_block.mlstm": self.mlstm_block.mlstm if self.mlstm_block else None,
            "slstm_block.slstm": self.slstm_block.slstm if self.slstm_block else None,
        }
        for name, layer in layers.items():
            require(
                layer is None or layer.embedding_dim in (-1, self.embedding_dim),
                f"{name}.embedding_dim contradicts the stack's embedding_dim="
                f"{self.embedding_dim}; leave it at -1 (the stack sets it).",
            )
        require(
            self.remat_policy in REMAT_POLICIES,
            f"xLSTMBlockStackConfig.remat_policy must be one of {REMAT_POLICIES}; got "
            f"{self.remat_policy!r}.",
        )
        require(
            not self.scan_layers or not any(self.block_map),
            f"xLSTMBlockStackConfig.scan_layers needs identical blocks, but slstm_at places "
            f"sLSTM blocks at {list(self.slstm_positions)}; set scan_layers=false (or "
            "slstm_at=() for an mLSTM-only stack).",
        )
        require(
            not self.scan_layers or self.dropout == 0.0,
            "xLSTMBlockStackConfig.scan_layers runs without per-block dropout RNG state; set "
            "dropout=0 (or scan_layers=false).",
        )
        # Resolve each kind once: the layer configs validate themselves on creation.
        for kind in set(self.block_map):
            self.block_config(self.block_map.index(kind))

    @property
    def slstm_positions(self) -> tuple[int, ...]:
        """The sorted indices of the sLSTM blocks (all of them without an mLSTM block)."""
        if self.mlstm_block is None or self.slstm_at == "all":
            return tuple(range(self.num_blocks))
        return tuple(sorted(self.slstm_at))

    @property
    def block_map(self) -> tuple[int, ...]:
        """0 = mLSTM block, 1 = sLSTM block, per position."""
        positions = set(self.slstm_positions)
        return tuple(int(i in positions) for i in range(self.num_blocks))

    def block_config(self, idx: int) -> mLSTMBlockConfig | sLSTMBlockConfig:
        """The resolved config of block ``idx``: its layer (and feed-forward) config with the
        values the stack owns filled in, ``_block_idx`` included."""
        if self.block_map[idx]:
            sb = self.slstm_block
            layer = dataclasses.replace(
                sb.slstm,
                embedding_dim=self.embedding_dim,
                dropout=self.dropout,
                _num_blocks=self.num_blocks,
                _block_idx=idx,
            )
            ff = sb.feedforward
            if ff is not None:
                ff = dataclasses.replace(
                    ff, embedding_dim=self.embedding_dim, _num_blocks=self.num_blocks
                )
            return sLSTMBlockConfig(slstm=layer, feedforward=ff)
        layer = dataclasses.replace(
            self.mlstm_block.mlstm,
            embedding_dim=self.embedding_dim,
            bias=self.bias,
            dropout=self.dropout,
            context_length=self.context_length,
            _num_blocks=self.num_blocks,
            _block_idx=idx,
        )
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
        require(
            self.vocab_size >= 1,
            f"xLSTMLMModelConfig.vocab_size must be >= 1; got {self.vocab_size}.",
        )

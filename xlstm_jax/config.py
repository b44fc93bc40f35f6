"""Model configuration: frozen dataclasses with the PyTorch reference's names and fields.

A reference config ports field by field (``xlstm_jax.convert.config_from_torch`` does it
for you). Differences from the reference, all deliberate:

* Frozen and hashable (usable as static arguments under ``jax.jit``); ``slstm_at`` is a
  tuple (or ``"all"``). Nothing is written into a config after it is made: values the
  reference copies into its sub-configs in ``__post_init__`` (``embedding_dim``, ``bias``,
  ``dropout``, ``context_length``, ``_num_blocks``, ``_block_idx``) are filled in on demand
  by ``xLSTMBlockStackConfig.block_config(idx)``, a resolved view of one block.
* ``context_length`` is informational: no causal-mask buffer is sized from it, any S works.
* Added knobs, one per decision: ``mLSTMLayerConfig.form`` (which form of the mLSTM cell
  runs) and ``chunk_size``; ``impl`` on both layer configs (the XLA path or the Pallas
  kernels); the model-wide ``dtype`` / ``param_dtype`` and ``remat``.
* ``TransformerConfig`` is the Transformer baseline's (``xlstm_jax.transformer``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from dataclasses import dataclass, field
from typing import Literal

DTYPES = ("float32", "bfloat16", "float16", "float64")
ACT_FNS = ("gelu", "relu", "relu^2", "sigmoid", "swish", "selu")
MLSTM_FORMS = ("auto", "parallel", "chunkwise", "recurrent")
IMPLS = ("auto", "xla", "pallas")
SLSTM_FUNCTIONS = ("slstm", "lstm")
SLSTM_BIAS_INITS = ("powerlaw_blockdependent", "small_init", "standard", "zeros")


class ConfigError(ValueError):
    """An invalid configuration; the message names the field and the fix."""


def require(cond: bool, msg: str) -> None:
    """Raises ``ConfigError(msg)`` unless ``cond``: the one validation helper of all configs."""
    if not cond:
        raise ConfigError(msg)


def round_up_dim(factor: float, dim: int, multiple: int, up: bool = True) -> int:
    """``ceil(factor * dim / multiple) * multiple`` (floor when ``up`` is False)."""
    q = factor * dim / multiple
    return int((math.ceil(q) if up else math.floor(q)) * multiple)


def _is_pow2(x: int) -> bool:
    return x > 0 and (x & (x - 1)) == 0


@dataclass(frozen=True)
class mLSTMLayerConfig:
    """mLSTM layer (paper version): up-projection, causal conv, matrix-memory cell.

    ``form`` picks the form of the cell (all compute the same function):
    ``"parallel"`` (the reference's, quadratic in S), ``"chunkwise"`` (linear in S, chunks
    of ``chunk_size``), ``"recurrent"`` (a scan over steps), or ``"auto"``: parallel up to
    ``chunk_size`` tokens, chunkwise above, and chunkwise always when ``impl="pallas"``.
    A single token with a carried state runs the recurrent step (decoding), whatever the
    form. ``impl`` picks the XLA path or the Pallas kernels ("auto": the kernels on a CUDA
    GPU); only the chunkwise form and the step have kernels, so ``impl="pallas"`` with
    ``form="parallel"`` or ``"recurrent"`` is rejected.
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
    impl: Literal["auto", "xla", "pallas"] = "auto"
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
        require(
            self.form in MLSTM_FORMS,
            f"mLSTMLayerConfig.form must be one of {MLSTM_FORMS}; got {self.form!r}.",
        )
        require(self.chunk_size >= 1, "mLSTMLayerConfig.chunk_size must be >= 1.")
        require(
            self.impl in IMPLS,
            f"mLSTMLayerConfig.impl must be one of {IMPLS}; got {self.impl!r}.",
        )
        if self.impl == "pallas":
            require(
                self.form in ("auto", "chunkwise"),
                f"mLSTMLayerConfig.impl='pallas' runs the chunkwise kernels, but form="
                f"{self.form!r} has no Pallas kernel; set form='chunkwise' (or 'auto'), or "
                f"impl='xla' / 'auto'.",
            )
            require(
                self.chunk_size >= 16 and _is_pow2(self.chunk_size),
                f"mLSTMLayerConfig.impl='pallas' needs chunk_size to be a power of two >= 16 "
                f"(got {self.chunk_size}); set chunk_size=64, or impl='xla'.",
            )
        if self.embedding_dim > 0:
            self.validate()


@dataclass(frozen=True)
class sLSTMLayerConfig:
    """sLSTM layer: causal conv, four headwise gate projections, sLSTM cell, group norm.

    ``impl`` picks the XLA scan or the Pallas kernel ("auto": the kernel on a CUDA GPU).
    (The reference's ``backend`` chose its CUDA or vanilla kernel; the layout of a
    reference checkpoint's weights is an argument of ``xlstm_jax.convert`` instead.)
    """

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
    impl: Literal["auto", "xla", "pallas"] = "auto"
    _num_blocks: int = 1
    _block_idx: int = 0

    @property
    def hidden_size(self) -> int:
        return self.embedding_dim

    @property
    def head_dim(self) -> int:
        return self.embedding_dim // self.num_heads

    def validate(self) -> None:
        """Checks that need ``embedding_dim`` (run once it is known)."""
        require(self.embedding_dim > 0, "sLSTMLayerConfig.embedding_dim must be > 0.")
        require(
            self.embedding_dim % self.num_heads == 0,
            f"sLSTMLayerConfig.num_heads={self.num_heads} must divide embedding_dim="
            f"{self.embedding_dim}.",
        )

    def __post_init__(self):
        require(self.num_heads >= 1, "sLSTMLayerConfig.num_heads must be >= 1.")
        require(self.conv1d_kernel_size >= 0, "sLSTMLayerConfig.conv1d_kernel_size must be >= 0.")
        require(
            self.function in SLSTM_FUNCTIONS,
            f"sLSTMLayerConfig.function must be one of {SLSTM_FUNCTIONS}; got {self.function!r}.",
        )
        require(
            self.bias_init in SLSTM_BIAS_INITS,
            f"sLSTMLayerConfig.bias_init {self.bias_init!r} is unknown; use one of "
            f"{SLSTM_BIAS_INITS}.",
        )
        require(
            self.recurrent_weight_init in ("zeros", "standard"),
            f"sLSTMLayerConfig.recurrent_weight_init {self.recurrent_weight_init!r} is unknown; "
            "use 'zeros' or 'standard'.",
        )
        require(
            self.impl in IMPLS,
            f"sLSTMLayerConfig.impl must be one of {IMPLS}; got {self.impl!r}.",
        )
        require(0.0 <= self.dropout < 1.0, "sLSTMLayerConfig.dropout must be in [0, 1).")
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
        require(
            self.act_fn in ACT_FNS,
            f"FeedForwardConfig.act_fn must be one of {ACT_FNS}; got {self.act_fn!r}.",
        )
        require(self.ff_type == "ffn_gated", "FeedForwardConfig.ff_type must be 'ffn_gated'.")
        require(self.proj_factor > 0, "FeedForwardConfig.proj_factor must be > 0.")


@dataclass(frozen=True)
class mLSTMBlockConfig:
    mlstm: mLSTMLayerConfig = field(default_factory=mLSTMLayerConfig)


@dataclass(frozen=True)
class sLSTMBlockConfig:
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
    # Ours: rematerialise each block in the backward pass (saves activation memory).
    remat: bool = False

    def __post_init__(self):
        require(self.num_blocks >= 1, "xLSTMBlockStackConfig.num_blocks must be >= 1.")
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


@dataclass(frozen=True)
class TransformerConfig:
    """The Transformer baseline's shape. Field names follow ``xLSTMLMModelConfig`` where they
    mean the same (``embedding_dim``, ``num_blocks``, ``vocab_size``, ``dtype``, ``remat``).

    ``ffn_proj_factor`` sets the SwiGLU hidden size ``F`` (Llama's 8/3, rounded up to a
    multiple of ``ffn_round_to``). ``dropout`` exists for the trainer's checks and must be 0.
    """

    vocab_size: int = -1
    embedding_dim: int = 128
    num_blocks: int = 2
    num_heads: int = 4
    ffn_proj_factor: float = 8 / 3
    ffn_round_to: int = 64
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-6
    # Informational, as for the xLSTM: nothing is sized from it, any S works.
    context_length: int = -1
    tie_weights: bool = False
    weight_decay_on_embedding: bool = False
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False
    dropout: float = 0.0

    @property
    def head_dim(self) -> int:
        return self.embedding_dim // self.num_heads

    @property
    def ffn_dim(self) -> int:
        f = self.ffn_proj_factor * self.embedding_dim
        return int(math.ceil(f / self.ffn_round_to) * self.ffn_round_to)

    def __post_init__(self):
        require(
            self.vocab_size >= 1,
            f"TransformerConfig.vocab_size must be >= 1; got {self.vocab_size}.",
        )
        require(self.num_blocks >= 1, "TransformerConfig.num_blocks must be >= 1.")
        require(self.num_heads >= 1, "TransformerConfig.num_heads must be >= 1.")
        require(
            self.embedding_dim % self.num_heads == 0 and self.head_dim % 2 == 0,
            f"TransformerConfig.num_heads={self.num_heads} must divide embedding_dim="
            f"{self.embedding_dim} into an even head dim (rotary positions rotate pairs).",
        )
        require(
            self.ffn_proj_factor > 0 and self.ffn_round_to >= 1,
            "TransformerConfig.ffn_proj_factor must be > 0 and ffn_round_to >= 1.",
        )
        require(self.dtype in DTYPES, f"TransformerConfig.dtype must be one of {DTYPES}.")
        require(
            self.param_dtype in DTYPES, f"TransformerConfig.param_dtype must be one of {DTYPES}."
        )
        require(self.dropout == 0.0, "TransformerConfig.dropout is not implemented; set it to 0.")


# Fields of the PyTorch reference's and Hugging Face's xLSTM-Large configs that only pick
# their torch kernels or generation defaults: accepted by ``xLSTMLargeConfig.from_dict`` so
# a config ports as it is, and ignored (our form/impl/dtype knobs decide the computation).
LARGE_TORCH_ONLY_FIELDS = frozenset(
    {
        "chunkwise_kernel",
        "sequence_kernel",
        "step_kernel",
        "mode",
        "return_last_states",
        "autocast_kernel_dtype",
        "inference_state_dtype",
        "weight_mode",
        "max_inference_chunksize",
        "use_cache",
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
        "model_type",
        "architectures",
        "transformers_version",
        "torch_dtype",
        "output_hidden_states",
        "output_attentions",
        "return_dict",
        "auto_map",
        "_name_or_path",
    }
)
# Keys every transformers config carries (labels, generation, bookkeeping): not the model's.
HF_GENERIC_FIELDS = frozenset(
    {
        "id2label", "label2id", "problem_type", "chunk_size_feed_forward", "is_encoder_decoder",
        "tokenizer_class", "prefix", "sep_token_id", "decoder_start_token_id",
        "task_specific_params", "finetuning_task", "cross_attention_hidden_size",
        "add_cross_attention", "tie_encoder_decoder", "is_decoder", "pruned_heads",
        "torchscript", "tf_legacy_loss", "use_bfloat16", "output_scores",
        "return_dict_in_generate", "num_labels",
    }
)  # fmt: skip
# Hugging Face's name -> the reference's (and ours).
LARGE_HF_ALIASES = {"hidden_size": "embedding_dim", "num_hidden_layers": "num_blocks"}


@dataclass(frozen=True)
class xLSTMLargeConfig:
    """The xLSTM-7B family ("xLSTM Large", Beck et al. 2025): the reference's
    ``xlstm.xlstm_large.model.xLSTMLargeConfig`` field names and defaults, frozen.

    Dimensions (as the reference computes them, with ``int``): ``qk_dim = int(E *
    qk_dim_factor)``, ``v_dim = int(E * v_dim_factor)``, per head ``DHQK = qk_dim / NH``,
    ``DHV = v_dim / NH``; the feed-forward width is ``E * ffn_proj_factor`` rounded up to a
    multiple of ``ffn_round_up_to_multiple_of``. ``gate_soft_cap`` / ``output_logit_soft_cap``
    may be None (no cap). The 7B: E 4096, 32 blocks, 8 heads, vocabulary 50304.

    Ours, one knob per decision: ``form`` / ``chunk_size`` / ``impl`` pick how the mLSTM cell
    runs (as ``mLSTMLayerConfig``); ``dtype`` / ``param_dtype`` the compute and parameter
    dtypes (gates, normalisations and recurrent states stay float32); ``remat`` recomputes
    each block in the backward pass. The reference's kernel and mode fields
    (``LARGE_TORCH_ONLY_FIELDS``) are accepted by ``from_dict`` and ignored; the weight
    layout ("single"/"fused") is a property of a checkpoint, given to the converters.
    """

    embedding_dim: int
    num_heads: int
    num_blocks: int
    vocab_size: int
    use_bias: bool = False
    norm_eps: float = 1e-6
    norm_reduction_force_float32: bool = True
    add_out_norm: bool = True
    qk_dim_factor: float = 0.5
    v_dim_factor: float = 1.0
    chunk_size: int = 64
    eps: float = 1e-6
    ffn_proj_factor: float = 2.6667
    ffn_round_up_to_multiple_of: int = 64
    gate_soft_cap: float | None = 15.0
    output_logit_soft_cap: float | None = 30.0
    # Ours.
    form: Literal["auto", "parallel", "chunkwise", "recurrent"] = "auto"
    impl: Literal["auto", "xla", "pallas"] = "auto"
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False
    context_length: int = -1  # informational, as for the v1 family: any S works
    # Fixed by the architecture; present so the trainer's checks read them as for v1.
    dropout: float = 0.0
    tie_weights: bool = False
    weight_decay_on_embedding: bool = False

    @property
    def qk_dim(self) -> int:
        return int(self.embedding_dim * self.qk_dim_factor)

    @property
    def v_dim(self) -> int:
        return int(self.embedding_dim * self.v_dim_factor)

    @property
    def qk_head_dim(self) -> int:
        return self.qk_dim // self.num_heads

    @property
    def v_head_dim(self) -> int:
        return self.v_dim // self.num_heads

    @property
    def ffn_dim(self) -> int:
        # The reference's rounding, exactly: floor((x + m - 1) / m) * m on the float x, which
        # is not ceil(x / m) * m when x is just above a multiple (E 768: 2048.03 -> 2048).
        m = self.ffn_round_up_to_multiple_of
        return int((self.embedding_dim * self.ffn_proj_factor + m - 1) // m * m)

    def __post_init__(self):
        name = "xLSTMLargeConfig"
        for f in ("embedding_dim", "num_heads", "num_blocks", "vocab_size", "chunk_size"):
            value = getattr(self, f)
            require(
                isinstance(value, numbers.Integral) and value >= 1,
                f"{name}.{f} must be an integer >= 1; got {value!r}.",
            )
        require(
            self.qk_dim >= self.num_heads and self.qk_dim % self.num_heads == 0,
            f"{name}: qk_dim = int(embedding_dim * qk_dim_factor) = {self.qk_dim} must be a "
            f"positive multiple of num_heads={self.num_heads}.",
        )
        require(
            self.v_dim >= self.num_heads and self.v_dim % self.num_heads == 0,
            f"{name}: v_dim = int(embedding_dim * v_dim_factor) = {self.v_dim} must be a "
            f"positive multiple of num_heads={self.num_heads}.",
        )
        require(
            self.ffn_proj_factor > 0 and self.ffn_round_up_to_multiple_of >= 1,
            f"{name}.ffn_proj_factor must be > 0 and ffn_round_up_to_multiple_of >= 1.",
        )
        for f in ("gate_soft_cap", "output_logit_soft_cap"):
            value = getattr(self, f)
            require(
                value is None or value > 0,
                f"{name}.{f} must be > 0, or None for no cap; got {value!r}.",
            )
        require(self.norm_eps > 0, f"{name}.norm_eps must be > 0.")
        require(self.eps >= 0, f"{name}.eps must be >= 0.")
        require(
            self.form in MLSTM_FORMS,
            f"{name}.form must be one of {MLSTM_FORMS}; got {self.form!r}.",
        )
        require(self.impl in IMPLS, f"{name}.impl must be one of {IMPLS}; got {self.impl!r}.")
        if self.impl == "pallas":
            require(
                self.form in ("auto", "chunkwise"),
                f"{name}.impl='pallas' runs the chunkwise kernels; form={self.form!r} has none. "
                "Set form='chunkwise' (or 'auto'), or impl='xla'.",
            )
            require(
                self.chunk_size >= 16 and _is_pow2(self.chunk_size),
                f"{name}.impl='pallas' needs chunk_size a power of two >= 16 (got "
                f"{self.chunk_size}); set chunk_size=64, or impl='xla'.",
            )
        require(self.dtype in DTYPES, f"{name}.dtype must be one of {DTYPES}; got {self.dtype!r}.")
        require(
            self.param_dtype in DTYPES,
            f"{name}.param_dtype must be one of {DTYPES}; got {self.param_dtype!r}.",
        )
        require(self.dropout == 0.0, f"{name}.dropout: the family has no dropout; set it to 0.")
        require(
            not self.tie_weights,
            f"{name}.tie_weights: the family's LM head is untied; set it to false.",
        )

    @classmethod
    def from_dict(cls, d: dict, **overrides) -> xLSTMLargeConfig:
        """A config from the reference's ``config.yaml`` or a Hugging Face ``config.json``
        (as a dict), field by field; ``overrides`` (our knobs, e.g. ``dtype``) win.

        Hugging Face's ``hidden_size`` / ``num_hidden_layers`` are aliases of
        ``embedding_dim`` / ``num_blocks``; the torch-only fields are ignored. An unknown
        field, two values of one field that disagree, or ``tie_word_embeddings: true``
        raise ``ConfigError`` naming the field.
        """
        ours = {f.name for f in dataclasses.fields(cls)}
        kw: dict = {}
        for key, value in d.items():
            target = LARGE_HF_ALIASES.get(key, key)
            # HF's "dtype" is the stored weights' dtype, not a compute dtype: ignored too.
            if (
                key in LARGE_TORCH_ONLY_FIELDS
                or key in HF_GENERIC_FIELDS
                or key.startswith(("_", "generation_"))
                or key == "dtype"
            ):
                continue
            if key == "tie_word_embeddings":
                require(
                    not value,
                    "tie_word_embeddings: true, but the xLSTM-Large family's LM head is "
                    "untied; this checkpoint is not an xLSTM-Large.",
                )
                continue
            if target not in ours:
                close = difflib.get_close_matches(key, sorted(ours | set(LARGE_HF_ALIASES)), 1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"xLSTMLargeConfig: unknown field {key!r}{hint}.")
            if value is None and target in ("embedding_dim", "num_blocks"):
                continue  # HF writes the alias it did not use as null
            if target in kw and kw[target] != value:
                raise ConfigError(
                    f"xLSTMLargeConfig: {key}={value!r} contradicts {target}={kw[target]!r}; "
                    "give one of them (or the same value)."
                )
            kw[target] = value
        for key in overrides:
            require(key in ours, f"xLSTMLargeConfig: unknown override {key!r}.")
        kw.update(overrides)
        missing = [
            f for f in ("embedding_dim", "num_heads", "num_blocks", "vocab_size") if f not in kw
        ]
        require(not missing, f"xLSTMLargeConfig: the config lacks {', '.join(missing)}.")
        return cls(**kw)

"""The xLSTM-7B family's config (``xLSTMLargeConfig``) and the tables that read the
reference's ``config.yaml`` and Hugging Face's ``config.json`` into it."""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import typing
from dataclasses import dataclass
from typing import Literal

from xlstm_jax.layers.config import (
    DTYPES,
    MAX_BLOCKS,
    REMAT_POLICIES,
    ConfigError,
    RematPolicy,
    check_value,
    require,
    round_up,
)
from xlstm_jax.layers.mlstm import check_cell_settings

__all__ = ["HF_GENERIC_FIELDS", "LARGE_HF_ALIASES", "LARGE_TORCH_ONLY_FIELDS", "xLSTMLargeConfig"]

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
    each block in the backward pass, keeping what ``remat_policy`` (a
    ``jax.checkpoint_policies`` name) allows; ``scan_layers`` runs the identical blocks as
    one ``lax.scan`` (compiled once; see ``layers.stack.run_blocks``). The reference's
    kernel and mode fields (``LARGE_TORCH_ONLY_FIELDS``) are accepted by ``from_dict`` and
    ignored; the weight layout ("single"/"fused") is a property of a checkpoint, given to
    the converters.
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
    impl: Literal["auto", "xla", "pallas", "mosaic"] = "auto"
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False
    remat_policy: RematPolicy = "nothing_saveable"
    scan_layers: bool = False
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
        return round_up(
            self.embedding_dim * self.ffn_proj_factor,
            self.ffn_round_up_to_multiple_of,
            rule="torch",
        )

    def __post_init__(self):
        name = "xLSTMLargeConfig"
        for f in ("embedding_dim", "num_heads", "num_blocks", "vocab_size", "chunk_size"):
            value = getattr(self, f)
            require(
                isinstance(value, numbers.Integral) and value >= 1,
                f"{name}.{f} must be an integer >= 1; got {value!r}.",
            )
        require(
            self.num_blocks <= MAX_BLOCKS,
            f"{name}.num_blocks must be <= {MAX_BLOCKS}; got {self.num_blocks}.",
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
        check_cell_settings(name, form=self.form, chunk_size=self.chunk_size, impl=self.impl)
        require(self.dtype in DTYPES, f"{name}.dtype must be one of {DTYPES}; got {self.dtype!r}.")
        require(
            self.param_dtype in DTYPES,
            f"{name}.param_dtype must be one of {DTYPES}; got {self.param_dtype!r}.",
        )
        require(
            self.remat_policy in REMAT_POLICIES,
            f"{name}.remat_policy must be one of {REMAT_POLICIES}; got {self.remat_policy!r}.",
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
        hints = typing.get_type_hints(cls)
        for key, value in d.items():
            # The dict comes from a file: a YAML key may be a number, a value anything.
            require(isinstance(key, str), f"xLSTMLargeConfig: the field name {key!r} is not text.")
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
            kw[target] = check_value(value, hints[target], f"xLSTMLargeConfig.{key}")
        for key in overrides:
            require(key in ours, f"xLSTMLargeConfig: unknown override {key!r}.")
        kw.update(overrides)
        missing = [
            f for f in ("embedding_dim", "num_heads", "num_blocks", "vocab_size") if f not in kw
        ]
        require(not missing, f"xLSTMLargeConfig: the config lacks {', '.join(missing)}.")
        try:
            return cls(**kw)
        except ArithmeticError as err:  # e.g. a factor of 1e308 times a width: inf
            raise ConfigError(f"xLSTMLargeConfig: the sizes overflow ({err}).") from None

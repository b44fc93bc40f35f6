"""TiRex-2's config (``TiRex2Config``, ``BlockTemplate``) and the reader and writer of the
reference's ``config.json`` (the keyword arguments of ``tirex2.TiRex2``, PyPI ``tirex-2``
0.4.0, Apache-2.0).

The reference's ``config.json`` nests the block stack as named templates and a recipe::

    {"stack_config": {"templates": {NAME: {"time_mixer": {"model_type": "bi-mlstm",
         "embedding_dim": E, "num_heads": NH, "num_slstm_heads": ...},
       "variate_mixer": {"embedding_dim": E, "num_heads": NH, "use_flex_attention": ...},
       "dropout": 0.1, "eps": 1e-7}, ...}, "recipe": [NAME, ...]},
     "num_blocks": N, "embedding_dim": E, "input_patch_size": P, "output_patch_size": P,
     "quantiles": [...], "tokenizer_cfg": {...}, "scaler_cfg": {...}, "h_expand": ...,
     "context_len": ..., "future_len": ..., "input_ff_dim": ..., "act_func": "SiLU",
     "dropout": ..., "use_qk_norm": ..., "stack_out_norm_config": {...} | null,
     "tta_sign_flip": ..., "tta_diff": ...}

``TiRex2Config.from_dict`` reads it as it is: the reference's own runtime knobs
(``device``, ``matmul_precision``, a template's ``rnn_backend``/``device``, a variate
mixer's ``use_flex_attention``) and ``postprocessor_cfg`` (which the reference drops,
``model/tirex2.py:152``) are accepted and change nothing here; any other key, or two
fields that disagree (a mixer's ``embedding_dim`` against the model's, the tokenizer's
patch sizes against ``input_patch_size``), raises ``ConfigError`` naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from xlstm_jax.layers.config import DTYPES, MAX_BLOCKS, check_value, require, round_up
from xlstm_jax.layers.slstm import check_slstm_impl

__all__ = ["ACT_FUNCS", "TIME_MIXERS", "BlockTemplate", "TiRex2Config"]

TIME_MIXERS = ("bi-mlstm", "bi-slstm")
# The reference resolves ``act_func`` as a ``torch.nn`` class (or a dotted path); the ones
# we run, by their torch name -> ``xlstm_jax.layers.feedforward.ACTS``.
ACT_FUNCS = {"SiLU": "swish", "ReLU": "relu", "GELU": "gelu", "Sigmoid": "sigmoid", "SELU": "selu"}
_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
_OUT_NORMS = ("none", "rmsnorm", "layernorm")


@dataclass(frozen=True)
class BlockTemplate:
    """One named block template: a bidirectional time mixer then a variate mixer.

    ``time_mixer`` is "bi-mlstm" or "bi-slstm" with ``num_heads`` heads (an sLSTM cell has
    ``num_slstm_heads``, default ``num_heads``); the variate mixer (attention across the
    rows of one series) has ``attention_heads``. ``dropout`` is the training dropout of the
    block's mixers. ``eps`` is stored by the reference and never read there (its norms use
    1e-6, ``variate_mixing_block.py:107``): kept only to write the config back.
    ``use_flex_attention`` picks a torch kernel of the reference; it changes nothing here.
    """

    name: str
    time_mixer: Literal["bi-mlstm", "bi-slstm"]
    num_heads: int = 4
    num_slstm_heads: int | None = None
    attention_heads: int = 4
    dropout: float = 0.1
    eps: float = 1e-6
    use_flex_attention: bool = False

    @property
    def slstm_heads(self) -> int:
        return self.num_heads if self.num_slstm_heads is None else self.num_slstm_heads


_DEFAULT_TEMPLATES = (
    BlockTemplate("mlstm", "bi-mlstm", dropout=0.1, eps=1e-7),
    BlockTemplate("slstm", "bi-slstm", dropout=0.1, eps=1e-7),
)


@dataclass(frozen=True)
class TiRex2Config:
    """TiRex-2's shape under the reference's field names, and our compute knobs.

    The defaults are the released shape (Podest et al. 2026): E 512, 12 blocks alternating
    bi-mLSTM and bi-sLSTM templates with 4 heads, patch 32, context 2048, future window 320,
    9 quantile levels, input MLP 2048, output MLP ``E * h_expand`` = 2048, SiLU, scaler
    arcsinh and binary-aware, trend differencing on.

    Derived widths (as the reference computes them): the SwiGLU ``E * 2.6667`` rounded up to
    64 (``ffn_dim``); the mLSTM's q/k ``int(E / 2)`` and v ``E``; the attention MLP ``4 E``.

    Fields beyond the reference's: ``scaler_eps`` / ``use_arcsinh`` / ``binaryaware`` are
    its ``scaler_cfg``; ``stack_out_norm`` ("none", "rmsnorm" or "layernorm", which compute
    the same RMS norm) and ``stack_out_norm_eps`` its ``stack_out_norm_config``;
    ``templates`` and ``recipe`` its ``stack_config``. Ours: ``impl`` picks the cells' ops
    ("auto": the Pallas kernels on a CUDA GPU), ``dtype`` / ``param_dtype`` the compute and
    parameter dtypes (norms, gates, cell states and scaling stay float32).
    """

    embedding_dim: int = 512
    num_blocks: int = 12
    input_patch_size: int = 32
    output_patch_size: int = 32
    quantiles: tuple[float, ...] = _QUANTILES
    context_len: int = 2048
    future_len: int = 320
    input_ff_dim: int = 2048
    h_expand: float = 4.0
    act_func: str = "SiLU"
    dropout: float = 0.1
    use_qk_norm: bool = True
    tta_sign_flip: bool = False
    tta_diff: bool = True
    templates: tuple[BlockTemplate, ...] = _DEFAULT_TEMPLATES
    recipe: tuple[str, ...] = ("mlstm", "slstm") * 6
    scaler_eps: float = 1e-8
    use_arcsinh: bool = True
    binaryaware: bool = True
    stack_out_norm: Literal["none", "rmsnorm", "layernorm"] = "rmsnorm"
    stack_out_norm_eps: float = 1e-7
    # Ours.
    impl: Literal["auto", "xla", "pallas"] = "auto"
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        n = "TiRex2Config"
        E, P = self.embedding_dim, self.input_patch_size
        object.__setattr__(self, "quantiles", tuple(float(q) for q in self.quantiles))
        object.__setattr__(self, "recipe", tuple(self.recipe))
        object.__setattr__(self, "templates", tuple(self.templates))
        for f in ("embedding_dim", "input_patch_size", "context_len", "future_len"):
            require(getattr(self, f) >= 1, f"{n}.{f} must be >= 1; got {getattr(self, f)}.")
        require(self.input_ff_dim >= 1, f"{n}.input_ff_dim must be >= 1.")
        require(
            self.output_patch_size == P,
            f"{n}: output_patch_size={self.output_patch_size} must equal input_patch_size={P} "
            "(each patch predicts the next one).",
        )
        require(
            self.future_len % P == 0,
            f"{n}.future_len={self.future_len} must be a multiple of the patch size {P}.",
        )
        q = self.quantiles
        require(
            len(q) >= 1 and all(0 < v < 1 for v in q) and list(q) == sorted(set(q)),
            f"{n}.quantiles must be increasing levels in (0, 1); got {list(q)}.",
        )
        require(
            1 <= self.num_blocks <= MAX_BLOCKS,
            f"{n}.num_blocks must be in [1, {MAX_BLOCKS}]; got {self.num_blocks}.",
        )
        require(
            self.h_expand > 0 and int(E * self.h_expand) >= 1,
            f"{n}.h_expand must make a hidden width >= 1; got {self.h_expand}.",
        )
        require(
            self.act_func in ACT_FUNCS,
            f"{n}.act_func={self.act_func!r} is not one we run; use one of {sorted(ACT_FUNCS)}.",
        )
        require(0.0 <= self.dropout < 1.0, f"{n}.dropout must be in [0, 1).")
        require(
            self.stack_out_norm in _OUT_NORMS,
            f"{n}.stack_out_norm must be one of {_OUT_NORMS}; got {self.stack_out_norm!r}.",
        )
        require(self.scaler_eps > 0 and self.stack_out_norm_eps > 0, f"{n}: eps must be > 0.")
        names = [t.name for t in self.templates]
        require(len(set(names)) == len(names), f"{n}: template names repeat: {names}.")
        for t in self.templates:
            _check_template(t, E)
        require(
            len(self.recipe) == self.num_blocks,
            f"{n}: the recipe has {len(self.recipe)} blocks but num_blocks={self.num_blocks}.",
        )
        unknown = sorted(set(self.recipe) - set(names))
        require(not unknown, f"{n}: the recipe names unknown template(s) {unknown}; {names}.")
        require(self.dtype in DTYPES, f"{n}.dtype must be one of {DTYPES}.")
        require(self.param_dtype in DTYPES, f"{n}.param_dtype must be one of {DTYPES}.")
        require(self.impl in ("auto", "xla", "pallas"), f"{n}.impl must be auto, xla or pallas.")
        check_slstm_impl(n, self.impl)

    @property
    def patch_size(self) -> int:
        return self.input_patch_size

    @property
    def ffn_dim(self) -> int:
        """The time mixers' SwiGLU width: ``E * 2.6667`` rounded up to a multiple of 64 as
        the reference rounds it (``(x + 63) // 64 * 64`` on the float)."""
        return round_up(self.embedding_dim * 2.6667, 64, rule="torch")

    @property
    def head_dim_out(self) -> int:
        """The output head's hidden width ``int(E * h_expand)``."""
        return int(self.embedding_dim * self.h_expand)

    @property
    def blocks(self) -> tuple[BlockTemplate, ...]:
        """Each block's template, in stack order."""
        by_name = {t.name: t for t in self.templates}
        return tuple(by_name[name] for name in self.recipe)

    @property
    def median_index(self) -> int:
        """The level the post-processor treats as the median: ``Q // 2``, as the reference
        (``postprocessor.py:214``) does whatever the levels are."""
        return len(self.quantiles) // 2

    # --- the reference's config.json ------------------------------------------------------

    @classmethod
    def from_dict(cls, d: dict, **overrides) -> TiRex2Config:
        """The config of the reference's ``config.json`` (a dict), ``overrides`` (our knobs:
        ``impl``, ``dtype``, ``param_dtype``) applied.

        Raises:
          ConfigError: a missing, unknown, mistyped or contradictory field (named).
        """
        return cls(**_read(d), **_overrides(overrides))

    def to_dict(self) -> dict:
        """The reference's ``config.json`` (``TiRex2(**d)`` builds the same model; its
        ``device`` is left to ``load_model``)."""
        E = self.embedding_dim
        templates = {}
        for t in self.templates:
            tm: dict[str, Any] = {"model_type": t.time_mixer, "embedding_dim": E}
            tm["num_heads"] = t.num_heads
            if t.num_slstm_heads is not None:
                tm["num_slstm_heads"] = t.num_slstm_heads
            vm = {"embedding_dim": E, "num_heads": t.attention_heads}
            if t.use_flex_attention:
                vm["use_flex_attention"] = True
            templates[t.name] = {
                "time_mixer": tm,
                "variate_mixer": vm,
                "dropout": t.dropout,
                "eps": t.eps,
            }
        P = self.input_patch_size
        out_norm = (
            None
            if self.stack_out_norm == "none"
            else {"eps": self.stack_out_norm_eps, "use_rmsnorm": self.stack_out_norm == "rmsnorm"}
        )
        return {
            "stack_config": {"templates": templates, "recipe": list(self.recipe)},
            "num_blocks": self.num_blocks,
            "embedding_dim": E,
            "input_patch_size": P,
            "output_patch_size": self.output_patch_size,
            "quantiles": list(self.quantiles),
            "tokenizer_cfg": {
                "output_patch_size": P,
                "input_patch_size": P,
                "input_patch_stride": P,
            },
            "scaler_cfg": {
                "eps": self.scaler_eps,
                "use_arcsinh": self.use_arcsinh,
                "binaryaware": self.binaryaware,
            },
            "h_expand": self.h_expand,
            "context_len": self.context_len,
            "future_len": self.future_len,
            "input_ff_dim": self.input_ff_dim,
            "act_func": self.act_func,
            "dropout": self.dropout,
            "use_qk_norm": self.use_qk_norm,
            "stack_out_norm_config": out_norm,
            "tta_sign_flip": self.tta_sign_flip,
            "tta_diff": self.tta_diff,
        }


def _check_template(t: BlockTemplate, E: int) -> None:
    n = f"TiRex2Config template {t.name!r}"
    require(t.time_mixer in TIME_MIXERS, f"{n}: model_type must be one of {TIME_MIXERS}.")
    heads = [("num_heads", t.num_heads), ("attention_heads", t.attention_heads)]
    if t.time_mixer == "bi-slstm":
        heads.append(("num_slstm_heads", t.slstm_heads))
    for name, h in heads:
        require(h >= 1 and E % h == 0, f"{n}: {name}={h} must divide embedding_dim={E}.")
    if t.time_mixer == "bi-mlstm":
        require(
            (E // 2) % t.num_heads == 0,
            f"{n}: the mLSTM's q/k width E/2={E // 2} must be a multiple of num_heads.",
        )
    require(0.0 <= t.dropout < 1.0, f"{n}: dropout must be in [0, 1).")


# --- reading config.json ------------------------------------------------------------------

_REQUIRED = (
    "stack_config",
    "num_blocks",
    "embedding_dim",
    "input_patch_size",
    "output_patch_size",
    "quantiles",
    "tokenizer_cfg",
    "scaler_cfg",
    "h_expand",
    "context_len",
    "future_len",
    "input_ff_dim",
    "act_func",
    "dropout",
)
_OPTIONAL = ("use_qk_norm", "stack_out_norm_config", "tta_sign_flip", "tta_diff")
# The reference's runtime knobs (and the post-processor settings it drops): read, unused.
_IGNORED = ("device", "matmul_precision", "postprocessor_cfg")
_KNOBS = ("impl", "dtype", "param_dtype")
_TYPES = {
    "num_blocks": int,
    "embedding_dim": int,
    "input_patch_size": int,
    "output_patch_size": int,
    "quantiles": tuple[float, ...],
    "h_expand": float,
    "context_len": int,
    "future_len": int,
    "input_ff_dim": int,
    "act_func": str,
    "dropout": float,
    "use_qk_norm": bool,
    "tta_sign_flip": bool,
    "tta_diff": bool,
}


def _section(d, key: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    """``d`` (a mapping at ``key``) checked: no key outside ``allowed``, none of ``required``
    missing."""
    require(isinstance(d, dict), f"TiRex2Config: {key} must be a mapping; got {d!r}.")
    unknown = sorted(str(k) for k in d if k not in allowed)
    require(not unknown, f"TiRex2Config: unknown field(s) {unknown} in {key}; known: {allowed}.")
    missing = [k for k in required if k not in d]
    require(not missing, f"TiRex2Config: {key} lacks {missing}.")
    return d


def _template(name: str, t, E: int) -> BlockTemplate:
    key = f"stack_config.templates.{name}"
    t = _section(t, key, ("time_mixer", "variate_mixer", "dropout", "eps"), ("time_mixer",))
    require(
        "variate_mixer" in t and "dropout" in t and "eps" in t,
        f"TiRex2Config: {key} needs time_mixer, variate_mixer, dropout and eps (the reference "
        "reads all four).",
    )
    tm = _section(
        t["time_mixer"],
        f"{key}.time_mixer",
        ("model_type", "embedding_dim", "num_heads", "num_slstm_heads", "device", "rnn_backend"),
        ("model_type", "embedding_dim"),
    )
    vm = _section(
        t["variate_mixer"],
        f"{key}.variate_mixer",
        ("embedding_dim", "num_heads", "use_flex_attention"),
        ("embedding_dim",),
    )
    for where, mixer in (("time_mixer", tm), ("variate_mixer", vm)):
        dim = check_value(mixer["embedding_dim"], int, f"{key}.{where}.embedding_dim")
        require(
            dim == E,
            f"TiRex2Config: {key}.{where}.embedding_dim={dim} contradicts embedding_dim={E}.",
        )
    slstm_heads = tm.get("num_slstm_heads")
    return BlockTemplate(
        name=name,
        time_mixer=check_value(
            tm["model_type"], Literal["bi-mlstm", "bi-slstm"], f"{key}.model_type"
        ),
        num_heads=check_value(tm.get("num_heads", 4), int, f"{key}.time_mixer.num_heads"),
        num_slstm_heads=None
        if slstm_heads is None
        else check_value(slstm_heads, int, f"{key}.time_mixer.num_slstm_heads"),
        attention_heads=check_value(vm.get("num_heads", 4), int, f"{key}.variate_mixer.num_heads"),
        dropout=check_value(t["dropout"], float, f"{key}.dropout"),
        eps=check_value(t["eps"], float, f"{key}.eps"),
        use_flex_attention=check_value(
            vm.get("use_flex_attention", False), bool, f"{key}.variate_mixer.use_flex_attention"
        ),
    )


def _read(d) -> dict:
    d = _section(d, "config", _REQUIRED + _OPTIONAL + _IGNORED, _REQUIRED)
    kw = {k: check_value(d[k], _TYPES[k], f"TiRex2Config.{k}") for k in _TYPES if k in d}
    E, P = kw["embedding_dim"], kw["input_patch_size"]
    stack = _section(
        d["stack_config"], "stack_config", ("templates", "recipe"), ("templates", "recipe")
    )
    templates = _section(stack["templates"], "stack_config.templates", tuple(stack["templates"]))
    kw["templates"] = tuple(_template(str(k), v, E) for k, v in templates.items())
    kw["recipe"] = check_value(stack["recipe"], tuple[str, ...], "stack_config.recipe")
    tok = _section(
        d["tokenizer_cfg"],
        "tokenizer_cfg",
        ("output_patch_size", "input_patch_size", "input_patch_stride"),
        ("output_patch_size", "input_patch_size", "input_patch_stride"),
    )
    for k in tok:
        v = check_value(tok[k], int, f"tokenizer_cfg.{k}")
        require(
            v == P,
            f"TiRex2Config: tokenizer_cfg.{k}={v} contradicts input_patch_size={P} (patches "
            "are non-overlapping and predict the next patch of the same size).",
        )
    sc = _section(d["scaler_cfg"], "scaler_cfg", ("eps", "use_arcsinh", "binaryaware"))
    kw["scaler_eps"] = check_value(sc.get("eps", 1e-8), float, "scaler_cfg.eps")
    kw["use_arcsinh"] = check_value(sc.get("use_arcsinh", False), bool, "scaler_cfg.use_arcsinh")
    kw["binaryaware"] = check_value(sc.get("binaryaware", False), bool, "scaler_cfg.binaryaware")
    norm = d.get("stack_out_norm_config")
    if norm is None:
        kw["stack_out_norm"] = "none"
    else:
        norm = _section(norm, "stack_out_norm_config", ("eps", "use_rmsnorm"))
        rms = check_value(norm.get("use_rmsnorm", False), bool, "stack_out_norm_config.use_rmsnorm")
        kw["stack_out_norm"] = "rmsnorm" if rms else "layernorm"
        kw["stack_out_norm_eps"] = check_value(
            norm.get("eps", 1e-7), float, "stack_out_norm_config.eps"
        )
    require(math.isfinite(kw["h_expand"]), f"TiRex2Config.h_expand={kw['h_expand']} is not finite.")
    return kw


def _overrides(overrides: dict) -> dict:
    unknown = sorted(set(overrides) - set(_KNOBS))
    require(not unknown, f"TiRex2Config: unknown override(s) {unknown}; ours are {_KNOBS}.")
    return overrides

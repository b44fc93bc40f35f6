"""The paper's xLSTM to and from the PyTorch reference (``xlstm==2.0.6``).

``from_torch(model)`` builds our model (config and weights) from a reference
``xLSTMLMModel`` or ``xLSTMBlockStack``; ``from_state_dict(sd, config)`` does the same from
a checkpoint; ``to_torch_state_dict(model)`` is the reverse, loadable with
``load_state_dict(strict=True)``. Works on NumPy arrays; torch is only needed to pass
torch tensors in or to request tensors out. The name map is the table below, moved by
``xlstm_jax.formats.namemap``.

Layout facts (see the reference's ``sLSTMCell_vanilla`` / ``sLSTMCell_cuda``):
* Linear weights are (out, in) in torch and (in, out) kernels here.
* Causal conv weight (F, 1, K) in torch, (K, F) here.
* sLSTM recurrent kernel, backend-independent view R (NH, DH_in, 4, DH_out) (ours):
  vanilla stores R.permute(0, 2, 3, 1) as (NH, 4 DH, DH); cuda stores R as (NH, DH, 4 DH).
  The bias (NH, 4, DH) is stored flat in (4, NH, DH) order by vanilla, (NH, 4, DH) by cuda.
* The reference's sLSTM module named ``fgate`` feeds the cell's input gate and ``igate``
  the forget gate; our modules are named by the gate they feed.

The sLSTM layout of a checkpoint (``slstm_backend``, the reference's name for the kernel
that stores it) is read from the recurrent kernel's shape when not given: the two layouts
never have the same shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from xlstm_jax.formats import namemap
from xlstm_jax.formats.errors import ConversionError
from xlstm_jax.formats.namemap import SAME, TRANSPOSE, Rule, Transform, linear
from xlstm_jax.formats.tensors import to_numpy
from xlstm_jax.layers.feedforward import FeedForwardConfig
from xlstm_jax.layers.slstm import sLSTMLayerConfig
from xlstm_jax.models.xlstm.config import (
    mLSTMBlockConfig,
    mLSTMLayerConfig,
    sLSTMBlockConfig,
    xLSTMBlockStackConfig,
    xLSTMLMModelConfig,
)
from xlstm_jax.models.xlstm.model import xLSTMBlockStack, xLSTMLMModel

__all__ = [
    "SLSTM_LAYOUTS",
    "config_from_torch",
    "from_state_dict",
    "from_torch",
    "to_torch_state_dict",
]

_STACK = "xlstm_block_stack."
SLSTM_LAYOUTS = ("vanilla", "cuda")
_RECURRENT = "xlstm.slstm_cell._recurrent_kernel_"
# The causal conv's weight: torch (F, 1, K) <-> ours (K, F).
_CONV = Transform(
    lambda a: np.ascontiguousarray(a[:, 0, :].T), lambda a: np.ascontiguousarray(a.T[:, None, :])
)


def _stored_shapes(cfg: sLSTMLayerConfig) -> dict[str, tuple[int, ...]]:
    NH, DH = cfg.num_heads, cfg.head_dim
    return {"vanilla": (NH, 4 * DH, DH), "cuda": (NH, DH, 4 * DH)}


def _detect_slstm_layout(state_dict: Mapping, config: xLSTMBlockStackConfig, lm: bool) -> str:
    """The sLSTM layout of ``state_dict``, from its first sLSTM recurrent kernel's shape
    ("cuda", the reference's default, when the model has no sLSTM block)."""
    pre = _STACK if lm else ""
    for idx, kind in enumerate(config.block_map):
        key = f"{pre}blocks.{idx}.{_RECURRENT}"
        if kind and key in state_dict:
            shape = tuple(state_dict[key].shape)
            shapes = _stored_shapes(config.block_config(idx).slstm)
            for layout, stored in shapes.items():
                if shape == stored:
                    return layout
            raise ConversionError(
                f"{key} has shape {shape}, neither the vanilla {shapes['vanilla']} nor the "
                f"cuda {shapes['cuda']} layout of this config's sLSTM; check num_heads and "
                "embedding_dim."
            )
    return "cuda"


def _slstm_layout(cfg: sLSTMLayerConfig, backend: str) -> tuple[Transform, Transform]:
    """The (recurrent kernel, bias) transforms between the given backend's storage and our
    layout."""
    NH, DH = cfg.num_heads, cfg.head_dim
    stored = _stored_shapes(cfg)

    def check(a):
        if tuple(a.shape) != stored[backend]:
            other = "cuda" if backend == "vanilla" else "vanilla"
            hint = f" (that is the {other} layout)" if tuple(a.shape) == stored[other] else ""
            raise ConversionError(
                f"sLSTM recurrent kernel of shape {tuple(a.shape)} is not the {backend} layout "
                f"{stored[backend]}{hint}; pass the right slstm_backend (vanilla/cuda)."
            )
        return a

    if backend == "vanilla":
        recurrent = Transform(
            lambda a: check(a).reshape(NH, 4, DH, DH).transpose(0, 3, 1, 2),
            lambda a: a.transpose(0, 2, 3, 1).reshape(NH, 4 * DH, DH),
        )
        bias = Transform(
            lambda a: a.reshape(4, NH, DH).transpose(1, 0, 2),
            lambda a: a.transpose(1, 0, 2).reshape(-1),
        )
    elif backend == "cuda":
        recurrent = Transform(
            lambda a: check(a).reshape(NH, DH, 4, DH), lambda a: a.reshape(NH, DH, 4 * DH)
        )
        bias = Transform(lambda a: a.reshape(NH, 4, DH), lambda a: a.reshape(-1))
    else:
        raise ValueError(f"sLSTM backend must be 'vanilla' or 'cuda'; got {backend!r}.")
    return recurrent, bias


def _same(*names: str) -> list[Rule]:
    """Rules for parameters with the same name and layout on both sides."""
    return [Rule(n, n) for n in names]


def _mlstm_rules(cfg: mLSTMLayerConfig) -> list[Rule]:
    b = cfg.bias
    rules = _same("xlstm_norm.weight")
    rules += linear("xlstm.proj_up", "xlstm.proj_up", b)
    for name in ("q_proj", "k_proj", "v_proj"):
        rules += _same(f"xlstm.{name}.weight", *([f"xlstm.{name}.bias"] if b else []))
    rules += [
        Rule("xlstm.conv1d.weight", "xlstm.conv1d.conv.weight", _CONV),
        Rule("xlstm.conv1d.bias", "xlstm.conv1d.conv.bias"),
    ]
    rules += linear("xlstm.igate", "xlstm.mlstm_cell.igate", True)
    rules += linear("xlstm.fgate", "xlstm.mlstm_cell.fgate", True)
    rules += [
        Rule("xlstm.outnorm.weight", "xlstm.mlstm_cell.outnorm.weight"),
        Rule("xlstm.learnable_skip", "xlstm.learnable_skip"),
    ]
    rules += linear("xlstm.proj_down", "xlstm.proj_down", b)
    return rules


def _slstm_rules(cfg: sLSTMBlockConfig, backend: str) -> list[Rule]:
    recurrent, bias = _slstm_layout(cfg.slstm, backend)
    rules = _same("xlstm_norm.weight")
    if cfg.slstm.conv1d_kernel_size > 0:
        rules += [
            Rule("xlstm.conv1d.weight", "xlstm.conv1d.conv.weight", _CONV),
            Rule("xlstm.conv1d.bias", "xlstm.conv1d.conv.bias"),
        ]
    # The reference's names are swapped for i and f (see the module docstring).
    for ours, theirs in (
        ("igate", "fgate"),
        ("fgate", "igate"),
        ("zgate", "zgate"),
        ("ogate", "ogate"),
    ):
        rules.append(Rule(f"xlstm.{ours}.weight", f"xlstm.{theirs}.weight"))
    rules += [
        Rule("xlstm.recurrent_kernel", _RECURRENT, recurrent),
        Rule("xlstm.bias", "xlstm.slstm_cell._bias_", bias),
    ]
    if cfg.slstm.group_norm_weight:
        rules += _same("xlstm.group_norm.weight")
    ff = cfg.feedforward
    if ff is not None:
        rules += _same("ffn_norm.weight")
        rules += linear("ffn.proj_up", "ffn.proj_up", ff.bias)
        rules += linear("ffn.proj_down", "ffn.proj_down", ff.bias)
    return rules


def _rules(config: xLSTMBlockStackConfig, lm: bool, slstm_backend: str) -> list[Rule]:
    """The name map of a model of ``config`` (an LM when ``lm``) whose sLSTM weights are
    stored in the ``slstm_backend`` layout."""
    pre = _STACK if lm else ""
    rules: list[Rule] = []
    for idx in range(config.num_blocks):
        bc = config.block_config(idx)
        if isinstance(bc, mLSTMBlockConfig):
            block_rules = _mlstm_rules(bc.mlstm)
        else:
            block_rules = _slstm_rules(bc, slstm_backend)
        p = f"{pre}blocks.{idx}."
        rules += namemap.prefixed(block_rules, p, p)
    if config.add_post_blocks_norm:
        rules += _same(pre + "post_blocks_norm.weight")
    if lm:
        rules.append(Rule("token_embedding.embedding", "token_embedding.weight", SAME))
        if not config.tie_weights:
            rules.append(Rule("lm_head.kernel", "lm_head.weight", TRANSPOSE))
    return rules


def _plain(obj, cls, **extra):
    """Builds our frozen config ``cls`` from a reference config object, field by field."""
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {n: getattr(obj, n) for n in names if hasattr(obj, n) and getattr(obj, n) is not None}
    kw.update(extra)
    return cls(**kw)


def config_from_torch(cfg) -> xLSTMBlockStackConfig:
    """Our config from a reference ``xLSTMLMModelConfig`` / ``xLSTMBlockStackConfig`` (an
    ``xLSTMLMModelConfig`` when it has a ``vocab_size``)."""
    mb = sb = None
    if getattr(cfg, "mlstm_block", None) is not None:
        mb = mLSTMBlockConfig(
            mlstm=_plain(cfg.mlstm_block.mlstm, mLSTMLayerConfig, _num_blocks=1, _block_idx=0)
        )
    if getattr(cfg, "slstm_block", None) is not None:
        t = cfg.slstm_block
        ff = None
        if t.feedforward is not None:
            ff = _plain(t.feedforward, FeedForwardConfig, _num_blocks=1)
        sb = sLSTMBlockConfig(
            slstm=_plain(t.slstm, sLSTMLayerConfig, _num_blocks=1, _block_idx=0), feedforward=ff
        )
    cls = xLSTMLMModelConfig if hasattr(cfg, "vocab_size") else xLSTMBlockStackConfig
    # Our knobs: a reference config has none of them.
    skip = {"mlstm_block", "slstm_block", "dtype", "param_dtype"}
    skip |= {"remat", "remat_policy", "scan_layers"}
    kw = {
        f.name: getattr(cfg, f.name)
        for f in dataclasses.fields(cls)
        if f.name not in skip and hasattr(cfg, f.name)
    }
    kw["slstm_at"] = tuple(kw.get("slstm_at", ()))
    return cls(mlstm_block=mb, slstm_block=sb, **kw)


def from_state_dict(
    state_dict: Mapping, config: xLSTMBlockStackConfig, slstm_backend: str | None = None
):
    """Our model from a reference state dict.

    Args:
      state_dict: names -> tensors/arrays, as ``torch_model.state_dict()`` (tensors narrower
        than float32 are widened to float32, then cast to the parameter dtype; names no
        parameter takes, such as buffers, are ignored).
      config: our config; an ``xLSTMLMModelConfig`` gives an ``xLSTMLMModel``, an
        ``xLSTMBlockStackConfig`` an ``xLSTMBlockStack``.
      slstm_backend: storage layout of the sLSTM weights ("vanilla" or "cuda"); default:
        read from the recurrent kernels' shapes.

    Raises:
      ConversionError: a missing or mis-shaped tensor, or an sLSTM layout that does not fit.
    """
    lm = isinstance(config, xLSTMLMModelConfig)
    if slstm_backend is None:
        slstm_backend = _detect_slstm_layout(state_dict, config, lm)
    cls = xLSTMLMModel if lm else xLSTMBlockStack
    # Build abstractly (no random init work): every parameter is overwritten below.
    model = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))
    if nnx.to_flat_state(nnx.state(model, nnx.Not(nnx.Param))):
        model = cls(config, rngs=nnx.Rngs(0))  # dropout RNG streams need concrete keys
    state = nnx.state(model, nnx.Param)
    variables = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(state)}
    rules = _rules(config, lm, slstm_backend)
    namemap.check_covers(rules, variables)
    values = namemap.load(
        rules,
        state_dict,
        {path: var.shape for path, var in variables.items()},
        to_numpy=lambda x: to_numpy(x, bf16="widen"),
        what="the state dict",
        hint="check that the config matches the checkpoint (num_blocks, slstm_at, bias, "
        "tie_weights, conv1d_kernel_size) and slstm_backend (vanilla/cuda layout).",
        extra="ignore",
    )
    for path, value in values:
        var = variables[path]
        var.set_value(jnp.asarray(value, dtype=var.dtype))
    nnx.update(model, state)
    return model


def from_torch(torch_model, slstm_backend: str | None = None):
    """Our model (config and weights) from a reference ``xLSTMLMModel`` or
    ``xLSTMBlockStack``. The sLSTM weight layout is the reference config's ``backend``
    unless given. (Every family's reference model: ``xlstm_jax.convert.from_torch``.)"""
    config = config_from_torch(torch_model.config)
    if slstm_backend is None:
        sb = getattr(torch_model.config, "slstm_block", None)
        slstm_backend = getattr(getattr(sb, "slstm", None), "backend", None)
    return from_state_dict(torch_model.state_dict(), config, slstm_backend)


def to_torch_state_dict(model, slstm_backend: str = "cuda", *, as_torch: bool = True):
    """The reference state dict of ``model`` (``xLSTMLMModel`` or ``xLSTMBlockStack``),
    float32 or wider.

    Args:
      slstm_backend: the ``backend`` of the target reference model's sLSTM cells, which
        decides their weight layout: "cuda" (the reference's default) or "vanilla" (a
        reference built with ``sLSTMLayerConfig(backend="vanilla")``, e.g. on a CPU).
      as_torch: return torch tensors (needs torch) rather than NumPy arrays.
    """
    lm = isinstance(model, xLSTMLMModel)
    config = model.config
    flat = {
        ".".join(map(str, p)): np.asarray(v[...], dtype=np.promote_types(v[...].dtype, np.float32))
        for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    out = dict(namemap.save(_rules(config, lm, slstm_backend), flat.__getitem__))
    if lm and config.tie_weights:
        out["lm_head.weight"] = out["token_embedding.weight"]
    if as_torch:
        import torch

        out = {k: torch.from_numpy(np.array(v)) for k, v in out.items()}
    return out

"""Conversion to and from the PyTorch reference (``xlstm==2.0.6``).

``from_torch(model)`` builds our model (config and weights) from a reference
``xLSTMLMModel`` or ``xLSTMBlockStack``; ``from_state_dict(sd, config)`` does the same from
a checkpoint; ``to_torch_state_dict(model)`` is the reverse, loadable with
``load_state_dict(strict=True)``. Works on NumPy arrays; torch is only needed to pass
torch tensors in or to request tensors out.

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
from collections.abc import Callable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from xlstm_jax.config import (
    FeedForwardConfig,
    mLSTMBlockConfig,
    mLSTMLayerConfig,
    sLSTMBlockConfig,
    sLSTMLayerConfig,
    xLSTMBlockStackConfig,
    xLSTMLMModelConfig,
)
from xlstm_jax.model import xLSTMBlockStack, xLSTMLMModel

_STACK = "xlstm_block_stack."


def _t(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.T)


def _conv_from(a: np.ndarray) -> np.ndarray:  # (F, 1, K) -> (K, F)
    return np.ascontiguousarray(a[:, 0, :].T)


def _conv_to(a: np.ndarray) -> np.ndarray:  # (K, F) -> (F, 1, K)
    return np.ascontiguousarray(a.T[:, None, :])


def _same(a: np.ndarray) -> np.ndarray:
    return a


SLSTM_LAYOUTS = ("vanilla", "cuda")
_RECURRENT = "xlstm.slstm_cell._recurrent_kernel_"


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
            raise ValueError(
                f"{key} has shape {shape}, neither the vanilla {shapes['vanilla']} nor the "
                f"cuda {shapes['cuda']} layout of this config's sLSTM; check num_heads and "
                "embedding_dim."
            )
    return "cuda"


def _slstm_layout(cfg: sLSTMLayerConfig, backend: str):
    """(R, bias) converters between our layout and the given backend's storage."""
    NH, DH = cfg.num_heads, cfg.head_dim
    stored = _stored_shapes(cfg)

    def check(a):
        if tuple(a.shape) != stored[backend]:
            other = "cuda" if backend == "vanilla" else "vanilla"
            hint = f" (that is the {other} layout)" if tuple(a.shape) == stored[other] else ""
            raise ValueError(
                f"sLSTM recurrent kernel of shape {tuple(a.shape)} is not the {backend} layout "
                f"{stored[backend]}{hint}; pass the right slstm_backend (vanilla/cuda)."
            )
        return a

    if backend == "vanilla":

        def r_from(a):
            return check(a).reshape(NH, 4, DH, DH).transpose(0, 3, 1, 2)

        def r_to(a):
            return a.transpose(0, 2, 3, 1).reshape(NH, 4 * DH, DH)

        def b_from(a):
            return a.reshape(4, NH, DH).transpose(1, 0, 2)

        def b_to(a):
            return a.transpose(1, 0, 2).reshape(-1)
    elif backend == "cuda":

        def r_from(a):
            return check(a).reshape(NH, DH, 4, DH)

        def r_to(a):
            return a.reshape(NH, DH, 4 * DH)

        def b_from(a):
            return a.reshape(NH, 4, DH)

        def b_to(a):
            return a.reshape(-1)
    else:
        raise ValueError(f"sLSTM backend must be 'vanilla' or 'cuda'; got {backend!r}.")
    return (r_from, r_to), (b_from, b_to)


# (our suffix, torch suffix, from_torch, to_torch); None for "only if present".
Rule = tuple[str, str, Callable, Callable]


def _linear(ours: str, theirs: str, bias: bool) -> list[Rule]:
    rules = [(f"{ours}.kernel", f"{theirs}.weight", _t, _t)]
    if bias:
        rules.append((f"{ours}.bias", f"{theirs}.bias", _same, _same))
    return rules


def _mlstm_rules(cfg: mLSTMLayerConfig) -> list[Rule]:
    b = cfg.bias
    rules: list[Rule] = [("xlstm_norm.weight", "xlstm_norm.weight", _same, _same)]
    rules += _linear("xlstm.proj_up", "xlstm.proj_up", b)
    for name in ("q_proj", "k_proj", "v_proj"):
        rules.append((f"xlstm.{name}.weight", f"xlstm.{name}.weight", _same, _same))
        if b:
            rules.append((f"xlstm.{name}.bias", f"xlstm.{name}.bias", _same, _same))
    rules += [
        ("xlstm.conv1d.weight", "xlstm.conv1d.conv.weight", _conv_from, _conv_to),
        ("xlstm.conv1d.bias", "xlstm.conv1d.conv.bias", _same, _same),
    ]
    rules += _linear("xlstm.igate", "xlstm.mlstm_cell.igate", True)
    rules += _linear("xlstm.fgate", "xlstm.mlstm_cell.fgate", True)
    rules += [
        ("xlstm.outnorm.weight", "xlstm.mlstm_cell.outnorm.weight", _same, _same),
        ("xlstm.learnable_skip", "xlstm.learnable_skip", _same, _same),
    ]
    rules += _linear("xlstm.proj_down", "xlstm.proj_down", b)
    return rules


def _slstm_rules(cfg: sLSTMBlockConfig, backend: str) -> list[Rule]:
    (r_from, r_to), (b_from, b_to) = _slstm_layout(cfg.slstm, backend)
    rules: list[Rule] = [("xlstm_norm.weight", "xlstm_norm.weight", _same, _same)]
    if cfg.slstm.conv1d_kernel_size > 0:
        rules += [
            ("xlstm.conv1d.weight", "xlstm.conv1d.conv.weight", _conv_from, _conv_to),
            ("xlstm.conv1d.bias", "xlstm.conv1d.conv.bias", _same, _same),
        ]
    # The reference's names are swapped for i and f (see the module docstring).
    for ours, theirs in (
        ("igate", "fgate"),
        ("fgate", "igate"),
        ("zgate", "zgate"),
        ("ogate", "ogate"),
    ):
        rules.append((f"xlstm.{ours}.weight", f"xlstm.{theirs}.weight", _same, _same))
    rules += [
        ("xlstm.recurrent_kernel", _RECURRENT, r_from, r_to),
        ("xlstm.bias", "xlstm.slstm_cell._bias_", b_from, b_to),
    ]
    if cfg.slstm.group_norm_weight:
        rules.append(("xlstm.group_norm.weight", "xlstm.group_norm.weight", _same, _same))
    ff = cfg.feedforward
    if ff is not None:
        rules.append(("ffn_norm.weight", "ffn_norm.weight", _same, _same))
        rules += _linear("ffn.proj_up", "ffn.proj_up", ff.bias)
        rules += _linear("ffn.proj_down", "ffn.proj_down", ff.bias)
    return rules


def _rules(config: xLSTMBlockStackConfig, lm: bool, slstm_backend: str) -> list[Rule]:
    pre = _STACK if lm else ""
    rules: list[Rule] = []
    for idx in range(config.num_blocks):
        bc = config.block_config(idx)
        if isinstance(bc, mLSTMBlockConfig):
            block_rules = _mlstm_rules(bc.mlstm)
        else:
            block_rules = _slstm_rules(bc, slstm_backend)
        p = f"blocks.{idx}."
        rules += [(pre + p + o, pre + p + t, f, g) for o, t, f, g in block_rules]
    if config.add_post_blocks_norm:
        rules.append(
            (pre + "post_blocks_norm.weight", pre + "post_blocks_norm.weight", _same, _same)
        )
    if lm:
        rules.append(("token_embedding.embedding", "token_embedding.weight", _same, _same))
        if not config.tie_weights:
            rules.append(("lm_head.kernel", "lm_head.weight", _t, _t))
    return rules


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor; NumPy has no bfloat16, so widen that one
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < 4:
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _plain(obj, cls, **extra):
    """Builds our frozen config ``cls`` from a reference config object, field by field."""
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {n: getattr(obj, n) for n in names if hasattr(obj, n) and getattr(obj, n) is not None}
    kw.update(extra)
    return cls(**kw)


def config_from_torch(cfg) -> xLSTMBlockStackConfig:
    """Our config from a reference ``xLSTMLMModelConfig`` / ``xLSTMBlockStackConfig``."""
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
    skip = {"mlstm_block", "slstm_block", "dtype", "param_dtype", "remat"}
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
      state_dict: names -> tensors/arrays, as ``torch_model.state_dict()``.
      config: our config; an ``xLSTMLMModelConfig`` gives an ``xLSTMLMModel``, an
        ``xLSTMBlockStackConfig`` an ``xLSTMBlockStack``.
      slstm_backend: storage layout of the sLSTM weights ("vanilla" or "cuda"); default:
        read from the recurrent kernels' shapes.
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
    expected = {o for o, *_ in rules}
    if expected != set(variables):
        raise ValueError(
            "internal conversion table does not cover the model: "
            f"missing {sorted(set(variables) - expected)}, "
            f"extra {sorted(expected - set(variables))}"
        )
    missing = [t for _, t, *_ in rules if t not in state_dict]
    if missing:
        raise ValueError(
            f"state_dict lacks {len(missing)} parameter(s) the config needs, e.g. {missing[:5]}; "
            "check that the config matches the checkpoint (num_blocks, slstm_at, bias, "
            "tie_weights, conv1d_kernel_size)."
        )
    for ours, theirs, from_t, _ in rules:
        var = variables[ours]
        value = from_t(_to_numpy(state_dict[theirs]))
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(
                f"{theirs}: converted shape {value.shape} does not match {ours} {var.shape}; "
                "is slstm_backend (vanilla/cuda layout) right?"
            )
        var.set_value(jnp.asarray(value, dtype=var.dtype))
    nnx.update(model, state)
    return model


def from_torch(torch_model, slstm_backend: str | None = None):
    """Our model (config and weights) from a reference ``xLSTMLMModel`` or ``xLSTMBlockStack``,
    or an xLSTM-Large model (the reference's ``xLSTMLarge`` or transformers'
    ``xLSTMForCausalLM``: see ``xlstm_jax.convert_large``).

    The sLSTM weight layout is the reference config's ``backend`` unless given.
    """
    if type(torch_model).__name__ in ("xLSTMLarge", "xLSTMForCausalLM"):
        from xlstm_jax.convert_large import from_torch_large

        return from_torch_large(torch_model)
    config = config_from_torch(torch_model.config)
    if slstm_backend is None:
        sb = getattr(torch_model.config, "slstm_block", None)
        slstm_backend = getattr(getattr(sb, "slstm", None), "backend", None)
    return from_state_dict(torch_model.state_dict(), config, slstm_backend)


def to_torch_state_dict(model, slstm_backend: str = "cuda", *, as_torch: bool = True):
    """The reference state dict of ``model`` (``xLSTMLMModel`` or ``xLSTMBlockStack``).

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
    out = {theirs: to_t(flat[ours]) for ours, theirs, _, to_t in _rules(config, lm, slstm_backend)}
    if lm and config.tie_weights:
        out["lm_head.weight"] = out["token_embedding.weight"]
    if as_torch:
        import torch

        out = {k: torch.from_numpy(np.array(v)) for k, v in out.items()}
    return out

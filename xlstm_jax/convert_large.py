"""Conversion of the xLSTM-Large family to and from PyTorch state dicts, both ways.

Two name formats and two weight layouts, in any combination:

* ``"xlstm_large"``: the reference's ``xlstm.xlstm_large.model.xLSTMLarge``
  (``embedding.weight``, ``backbone.blocks.N...``, ``backbone.out_norm.weight``,
  ``lm_head.weight``).
* ``"hf"``: transformers' ``xLSTMForCausalLM``: the same block names, the embedding at
  ``backbone.embeddings.weight``.
* ``weight_mode="single"``: separate ``q``, ``k``, ``v``, ``ogate_preact``, ``igate_preact``,
  ``fgate_preact`` and ``ffn.proj_up_gate`` / ``ffn.proj_up``; ``"fused"``: ``qkv_opreact``
  (rows q | k | v | o), ``ifgate_preact`` (rows i | f) and ``ffn.proj_up_gate_z`` (rows gate
  | up). Our model always holds the single layout (each piece shards on its own axes).

Linear weights are (out, in) in torch and (in, out) kernels here. Our parameter paths are
the reference's names (``kernel`` for ``weight`` of a linear map, ``embedding.embedding``
for the embedding), so the table below is short.

Hugging Face's ``xLSTMModel`` quirks handled here rather than copied: it always applies
``out_norm`` (whatever ``add_out_norm`` says) and gives it no bias (whatever ``use_bias``
says). Loading an HF model therefore sets ``add_out_norm=True`` and a zero out-norm bias;
saving to HF refuses a model without the out norm or with a non-zero out-norm bias.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xlstm_jax.config import ConfigError, xLSTMLargeConfig
from xlstm_jax.large import xLSTMLarge

__all__ = [
    "FORMATS",
    "WEIGHT_MODES",
    "config_from_torch_large",
    "detect_format",
    "from_state_dict_large",
    "from_torch_large",
    "iter_state_dict_large",
    "to_state_dict_large",
]

FORMATS = ("xlstm_large", "hf")
WEIGHT_MODES = ("single", "fused")
_EMBED = {"xlstm_large": "embedding.weight", "hf": "backbone.embeddings.weight"}
# Fused name -> the single pieces it concatenates, in row order.
_FUSED = {
    "mlstm_layer.qkv_opreact": ("mlstm_layer.q", "mlstm_layer.k", "mlstm_layer.v",
                                "mlstm_layer.ogate_preact"),
    "mlstm_layer.ifgate_preact": ("mlstm_layer.igate_preact", "mlstm_layer.fgate_preact"),
    "ffn.proj_up_gate_z": ("ffn.proj_up_gate", "ffn.proj_up"),
}  # fmt: skip
_PIECE = {piece: (fused, n) for fused, pieces in _FUSED.items() for n, piece in enumerate(pieces)}


def detect_format(keys) -> tuple[str, str]:
    """(format, weight_mode) of a state dict from its key names."""
    keys = set(keys)
    if _EMBED["hf"] in keys:
        fmt = "hf"
    elif _EMBED["xlstm_large"] in keys:
        fmt = "xlstm_large"
    else:
        raise ValueError(
            "not an xLSTM-Large state dict: it has neither embedding.weight (xlstm_large) nor "
            "backbone.embeddings.weight (Hugging Face xLSTMForCausalLM)."
        )
    fused = any(k.endswith(".qkv_opreact.weight") for k in keys)
    return fmt, "fused" if fused else "single"


def _piece_sizes(config: xLSTMLargeConfig, fused: str) -> list[int]:
    c = config
    return {
        "mlstm_layer.qkv_opreact": [c.qk_dim, c.qk_dim, c.v_dim, c.v_dim],
        "mlstm_layer.ifgate_preact": [c.num_heads, c.num_heads],
        "ffn.proj_up_gate_z": [c.ffn_dim, c.ffn_dim],
    }[fused]


def _torch_name(path: str, fmt: str) -> tuple[str, bool]:
    """The reference's single-layout name of our parameter ``path`` and whether it is a
    linear kernel (transposed)."""
    if path == "embedding.embedding":
        return _EMBED[fmt], False
    if path.endswith(".kernel"):
        return path[: -len("kernel")] + "weight", True
    return path, False


def _split_block(name: str) -> tuple[str, str, str]:
    """``backbone.blocks.3.ffn.proj_up.weight`` -> (``backbone.blocks.3.``, ``ffn.proj_up``,
    ``weight``); other names give an empty module."""
    if not name.startswith("backbone.blocks."):
        return "", "", name
    head, _, rest = name.partition("blocks.")
    idx, _, rest = rest.partition(".")
    module, _, leaf = rest.rpartition(".")
    return f"{head}blocks.{idx}.", module, leaf


def _to_numpy(x) -> np.ndarray:
    """A NumPy view of a torch tensor or array; torch's bfloat16 via ml_dtypes."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            import torch

            return x.view(dtype=torch.int16).numpy().view(jnp.bfloat16)
        return x.numpy()
    return np.asarray(x)


def _abstract_model(config: xLSTMLargeConfig):
    return nnx.eval_shape(lambda: xLSTMLarge(config, rngs=nnx.Rngs(0)))


def from_state_dict_large(
    state_dict: Mapping,
    config: xLSTMLargeConfig,
    *,
    shardings: Mapping[str, jax.sharding.Sharding] | None = None,
    progress: Callable[[str], None] | None = None,
) -> xLSTMLarge:
    """Our ``xLSTMLarge`` from a reference or HF state dict (format and layout read from
    the names), converting one tensor at a time.

    ``state_dict`` maps names to tensors or arrays; it may be lazy (a safetensors file's
    reader): each tensor is read once, converted to the parameter dtype and placed
    (``shardings``: our parameter path -> sharding; default one device) before the next,
    so peak memory is the model plus about one tensor. ``progress`` is called with each
    parameter's path.
    """
    fmt, mode = detect_format(state_dict.keys())
    model = _abstract_model(config)
    state = nnx.state(model, nnx.Param)
    flat = nnx.to_flat_state(state)
    expected = {}
    for p, var in flat:
        path = ".".join(map(str, p))
        expected[path] = var
    needed = set()
    for path in expected:
        name, _ = _torch_name(path, fmt)
        prefix, module, leaf = _split_block(name)
        if mode == "fused" and module in _PIECE:
            needed.add(f"{prefix}{_PIECE[module][0]}.{leaf}")
        else:
            needed.add(name)
    hf_out_bias = fmt == "hf" and "backbone.out_norm.bias" in expected
    if hf_out_bias:
        needed.discard("backbone.out_norm.bias")
    missing = sorted(needed - set(state_dict.keys()))
    extra = sorted(set(state_dict.keys()) - needed - {"backbone.out_norm.bias"})
    if missing or extra:
        raise ValueError(
            f"the {fmt} ({mode}) state dict does not match the config: "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}; check num_blocks, "
            "use_bias, add_out_norm, qk_dim_factor, v_dim_factor and ffn_proj_factor."
        )
    fused_cache: dict[str, list[np.ndarray]] = {}
    for path, var in expected.items():
        name, transpose = _torch_name(path, fmt)
        prefix, module, leaf = _split_block(name)
        if hf_out_bias and name == "backbone.out_norm.bias":
            value = np.zeros(var.shape, np.float32)
        elif mode == "fused" and module in _PIECE:
            fused, n = _PIECE[module]
            key = f"{prefix}{fused}.{leaf}"
            if key not in fused_cache:
                whole = _to_numpy(state_dict[key])
                cuts = np.cumsum(_piece_sizes(config, fused))
                if whole.shape[0] != cuts[-1]:
                    raise ValueError(
                        f"{key}: {whole.shape[0]} rows, expected {cuts[-1]} for this config."
                    )
                fused_cache[key] = np.split(whole, cuts[:-1], axis=0)
            pieces = fused_cache[key]
            value = pieces[n]
            pieces[n] = None  # type: ignore[call-overload]  # free as soon as used
            if all(piece is None for piece in pieces):
                del fused_cache[key]
        else:
            value = _to_numpy(state_dict[name])
        if transpose:
            value = value.T
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(f"{name}: shape {value.shape} does not match {path} {var.shape}.")
        array = jnp.asarray(value, dtype=var.dtype)
        if shardings is not None and path in shardings:
            array = jax.device_put(array, shardings[path])
        var.set_value(array)
        if progress is not None:
            progress(path)
    nnx.update(model, state)
    return model


def iter_state_dict_large(
    model: xLSTMLarge, fmt: str = "hf", weight_mode: str = "single"
) -> Iterator[tuple[str, np.ndarray]]:
    """(name, NumPy array in the parameter dtype) of the reference/HF state dict of
    ``model``, one tensor at a time (fused tensors as soon as their pieces are read)."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}; got {fmt!r}.")
    if weight_mode not in WEIGHT_MODES:
        raise ValueError(f"weight_mode must be one of {WEIGHT_MODES}; got {weight_mode!r}.")
    config = model.config
    if fmt == "hf" and not config.add_out_norm:
        raise ConfigError(
            "Hugging Face's xLSTMModel always applies out_norm; a model with "
            "add_out_norm=False cannot be saved in the hf format (use fmt='xlstm_large')."
        )
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    params = {".".join(map(str, p)): v for p, v in flat}
    pending: dict[str, dict[int, np.ndarray]] = {}
    for path, var in params.items():
        value = np.asarray(jax.device_get(var[...]))
        name, transpose = _torch_name(path, fmt)
        if transpose:
            value = np.ascontiguousarray(value.T)
        if fmt == "hf" and name == "backbone.out_norm.bias":
            if np.any(value != 0):
                raise ConfigError(
                    "Hugging Face's out_norm has no bias; this model's out_norm.bias is not "
                    "zero, so it cannot be saved in the hf format (use fmt='xlstm_large')."
                )
            continue
        prefix, module, leaf = _split_block(name)
        if weight_mode == "fused" and module in _PIECE:
            fused, n = _PIECE[module]
            key = f"{prefix}{fused}.{leaf}"
            got = pending.setdefault(key, {})
            got[n] = value
            if len(got) == len(_FUSED[fused]):
                yield key, np.concatenate([got[i] for i in range(len(got))], axis=0)
                del pending[key]
            continue
        yield name, value


def to_state_dict_large(
    model: xLSTMLarge,
    fmt: str = "xlstm_large",
    weight_mode: str = "single",
    *,
    as_torch: bool = True,
) -> dict:
    """The state dict of ``model`` for the reference ``xLSTMLarge`` (``fmt="xlstm_large"``)
    or transformers' ``xLSTMForCausalLM`` (``"hf"``), in the ``"single"`` or ``"fused"``
    layout, loadable with ``load_state_dict(strict=True)``. Float32 or wider arrays; torch
    tensors with ``as_torch`` (needs torch)."""  # fmt: skip
    out = {
        name: value.astype(np.promote_types(value.dtype, np.float32))
        for name, value in iter_state_dict_large(model, fmt, weight_mode)
    }
    if as_torch:
        import torch

        out = {k: torch.from_numpy(np.array(v)) for k, v in out.items()}
    return out


def config_from_torch_large(cfg, **overrides) -> xLSTMLargeConfig:
    """Our config from a reference ``xLSTMLargeConfig`` or a transformers ``xLSTMConfig``
    (field by field; see ``xLSTMLargeConfig.from_dict``)."""
    if hasattr(cfg, "to_dict"):  # transformers' PreTrainedConfig (also a dataclass)
        d = cfg.to_dict()
        # HF's xLSTMModel applies out_norm whatever add_out_norm says (module docstring).
        d["add_out_norm"] = True
    elif dataclasses.is_dataclass(cfg):
        d = dataclasses.asdict(cfg)
    else:
        raise TypeError(f"expected an xLSTMLargeConfig or an xLSTMConfig; got {type(cfg)}.")
    return xLSTMLargeConfig.from_dict(d, **overrides)


def from_torch_large(torch_model, **overrides) -> xLSTMLarge:
    """Our model from a reference ``xLSTMLarge`` or a transformers ``xLSTMForCausalLM``."""
    config = config_from_torch_large(torch_model.config, **overrides)
    return from_state_dict_large(torch_model.state_dict(), config)

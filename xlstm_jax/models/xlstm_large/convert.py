"""The xLSTM-Large family to and from PyTorch state dicts, both ways.

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
for the embedding), so the name map is a rule on each path (``_rules``) rather than a
table, moved by ``xlstm_jax.formats.namemap``. Tensors keep their stored dtype on the way
in (bfloat16 bit for bit) until they are cast to the parameter dtype.

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

from xlstm_jax.formats import namemap
from xlstm_jax.formats.errors import ConversionError
from xlstm_jax.formats.namemap import SAME, TRANSPOSE, Rule
from xlstm_jax.formats.tensors import to_numpy
from xlstm_jax.layers.config import ConfigError
from xlstm_jax.layers.sharding import place
from xlstm_jax.models.xlstm_large.config import xLSTMLargeConfig
from xlstm_jax.models.xlstm_large.model import xLSTMLarge

__all__ = [
    "FORMATS",
    "WEIGHT_MODES",
    "HFFormatError",
    "config_from_torch",
    "detect_format",
    "from_state_dict",
    "from_torch",
    "iter_state_dict",
    "to_state_dict",
]

FORMATS = ("xlstm_large", "hf")
WEIGHT_MODES = ("single", "fused")
_EMBED = {"xlstm_large": "embedding.weight", "hf": "backbone.embeddings.weight"}
_OUT_BIAS = "backbone.out_norm.bias"
# Fused name -> the single pieces it concatenates, in row order.
_FUSED = {
    "mlstm_layer.qkv_opreact": ("mlstm_layer.q", "mlstm_layer.k", "mlstm_layer.v",
                                "mlstm_layer.ogate_preact"),
    "mlstm_layer.ifgate_preact": ("mlstm_layer.igate_preact", "mlstm_layer.fgate_preact"),
    "ffn.proj_up_gate_z": ("ffn.proj_up_gate", "ffn.proj_up"),
}  # fmt: skip
_PIECE = {piece: (fused, n) for fused, pieces in _FUSED.items() for n, piece in enumerate(pieces)}


class HFFormatError(ConversionError, ConfigError):
    """A model that the Hugging Face format cannot express (no out norm, or a non-zero
    out-norm bias); also a ``ConfigError``, since the fix is the model's config or
    ``fmt="xlstm_large"``."""


def detect_format(keys) -> tuple[str, str]:
    """(format, weight_mode) of a state dict from its key names.

    Raises:
      ConversionError: neither format's embedding is among the names.
    """
    keys = set(keys)
    if _EMBED["hf"] in keys:
        fmt = "hf"
    elif _EMBED["xlstm_large"] in keys:
        fmt = "xlstm_large"
    else:
        raise ConversionError(
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


def _split_block(name: str) -> tuple[str, str, str]:
    """``backbone.blocks.3.ffn.proj_up.weight`` -> (``backbone.blocks.3.``, ``ffn.proj_up``,
    ``weight``); other names give an empty module."""
    if not name.startswith("backbone.blocks."):
        return "", "", name
    head, _, rest = name.partition("blocks.")
    idx, _, rest = rest.partition(".")
    module, _, leaf = rest.rpartition(".")
    return f"{head}blocks.{idx}.", module, leaf


def _rule(path: str, config: xLSTMLargeConfig, fmt: str, weight_mode: str) -> Rule:
    """The name-map row of our parameter ``path``: the reference's name (a kernel's
    ``weight``, transposed; the embedding per format), or its rows of a fused tensor."""
    if path == "embedding.embedding":
        return Rule(path, _EMBED[fmt])
    transform = SAME
    name = path
    if path.endswith(".kernel"):
        name, transform = path[: -len("kernel")] + "weight", TRANSPOSE
    prefix, module, leaf = _split_block(name)
    if weight_mode == "fused" and module in _PIECE:
        fused, n = _PIECE[module]
        cuts = np.cumsum([0, *_piece_sizes(config, fused)]).tolist()
        return Rule(path, f"{prefix}{fused}.{leaf}", transform, (cuts[n], cuts[n + 1]))
    return Rule(path, name, transform)


def _params(model) -> dict[str, nnx.Variable]:
    return {".".join(map(str, p)): v for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def from_state_dict(
    state_dict: Mapping,
    config: xLSTMLargeConfig,
    *,
    shardings: Mapping[str, jax.sharding.Sharding] | None = None,
    progress: Callable[[str], None] | None = None,
) -> xLSTMLarge:
    """Our ``xLSTMLarge`` from a reference or HF state dict (format and layout read from
    the names), converting one tensor at a time.

    ``state_dict`` maps names to tensors or arrays; it may be lazy (a safetensors file's
    reader): each tensor is read once, converted to the parameter dtype and placed before
    the next, so peak memory is the model plus about one tensor. With ``shardings`` (our
    parameter path -> sharding) each parameter is built from its shards
    (``layers.sharding.place``): from a state dict that reads slices this host reads only
    its devices' slices of each tensor, other than the tensors a reshape maps (read whole,
    one at a time; ``namemap.load_slices``). ``progress`` is called with each
    parameter's path.

    Raises:
      ConversionError: not an xLSTM-Large state dict, or tensors that do not fit ``config``
        (missing, unexpected or mis-shaped).
    """
    fmt, mode = detect_format(state_dict.keys())
    model = nnx.eval_shape(lambda: xLSTMLarge(config, rngs=nnx.Rngs(0)))
    state = nnx.state(model, nnx.Param)
    params = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(state)}
    if fmt == "hf" and _OUT_BIAS in params:
        # HF stores no out-norm bias: ours is zero (an HF state dict's own is ignored).
        zero = np.zeros(params[_OUT_BIAS].shape, np.float32)
        state_dict = _With(state_dict, {_OUT_BIAS: zero})
    engine = namemap.load if shardings is None else namemap.load_slices
    values = engine(
        [_rule(path, config, fmt, mode) for path in params],
        state_dict,
        {path: var.shape for path, var in params.items()},
        to_numpy=lambda x: to_numpy(x, bf16="keep"),
        what=f"the {fmt} ({mode}) state dict",
        hint="check num_blocks, use_bias, add_out_norm, qk_dim_factor, v_dim_factor and "
        "ffn_proj_factor.",
        optional=(_OUT_BIAS,),
    )
    for path, value in values:
        var = params[path]
        if shardings is None:
            var.set_value(jnp.asarray(value, dtype=var.dtype))
        else:  # value reads slices: each device's straight from the file
            var.set_value(place(value, var.shape, var.dtype, shardings.get(path)))
        if progress is not None:
            progress(path)
    nnx.update(model, state)
    return model


class _With(Mapping):
    """``base`` with the tensors of ``extra`` added: read whole, and sliced when ``base``
    reads slices (``namemap.load_slices``)."""

    def __init__(self, base: Mapping, extra: dict[str, np.ndarray]):
        self._base, self._extra = base, extra
        if hasattr(base, "read_slice"):
            self.read_slice, self.info = self._read_slice, self._info

    def _read_slice(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
        if name in self._extra:
            return self._extra[name][index]
        return self._base.read_slice(name, index)

    def _info(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        if name in self._extra:
            return self._extra[name].dtype, self._extra[name].shape
        return self._base.info(name)

    def __getitem__(self, name: str):
        return self._extra[name] if name in self._extra else self._base[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self._extra, *self._base]))

    def __len__(self) -> int:
        return len(set(self._extra) | set(self._base))


def iter_state_dict(
    model: xLSTMLarge, fmt: str = "hf", weight_mode: str = "single"
) -> Iterator[tuple[str, np.ndarray]]:
    """(name, NumPy array in the parameter dtype) of the reference/HF state dict of
    ``model``, one tensor at a time (fused tensors as soon as their pieces are read).

    Raises:
      HFFormatError: ``fmt="hf"`` for a model without the out norm or with a non-zero
        out-norm bias (HF's model has neither).
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}; got {fmt!r}.")
    if weight_mode not in WEIGHT_MODES:
        raise ValueError(f"weight_mode must be one of {WEIGHT_MODES}; got {weight_mode!r}.")
    config = model.config
    if fmt == "hf" and not config.add_out_norm:
        raise HFFormatError(
            "Hugging Face's xLSTMModel always applies out_norm; a model with "
            "add_out_norm=False cannot be saved in the hf format (use fmt='xlstm_large')."
        )
    params = _params(model)
    rules = [_rule(path, config, fmt, weight_mode) for path in params]
    for name, value in namemap.save(rules, lambda p: np.asarray(jax.device_get(params[p][...]))):
        if fmt == "hf" and name == _OUT_BIAS:
            if np.any(value != 0):
                raise HFFormatError(
                    "Hugging Face's out_norm has no bias; this model's out_norm.bias is not "
                    "zero, so it cannot be saved in the hf format (use fmt='xlstm_large')."
                )
            continue
        yield name, value


def to_state_dict(
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
        for name, value in iter_state_dict(model, fmt, weight_mode)
    }
    if as_torch:
        import torch

        out = {k: torch.from_numpy(np.array(v)) for k, v in out.items()}
    return out


def config_from_torch(cfg, **overrides) -> xLSTMLargeConfig:
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


def from_torch(torch_model, **overrides) -> xLSTMLarge:
    """Our model from a reference ``xLSTMLarge`` or a transformers ``xLSTMForCausalLM``;
    ``overrides`` are ``xLSTMLargeConfig`` fields (our knobs: ``dtype``, ``impl``, ...)."""
    config = config_from_torch(torch_model.config, **overrides)
    return from_state_dict(torch_model.state_dict(), config)

"""TiRex-2 weights in and out: the ``tirex-2`` state dict, its checkpoint folder, and a
reference ``TiRex2`` module.

A folder is what the reference's ``load_model(path)`` reads from a local directory
(``base.py:162``): ``config.json`` (the ``TiRex2`` keyword arguments,
``TiRex2Config.from_dict``) and ``model.safetensors``; where one is absent, its legacy
predecessor ``model-config.yaml`` (read with ``yaml.safe_load``) or ``model.ckpt`` (a
``torch.save`` file, read by ``xlstm_jax.formats.torch_pickle`` without executing
anything; its ``state_dict`` entry, or the whole pickle). Nothing downloads.

Names and layouts (E embedding dim, NH heads, DH head dim, F the SwiGLU width; a torch
``Linear.weight`` is (out, in), our ``Dense.kernel`` (in, out)):

  input_patch_embedding.{hidden,output,residual}_layer.{weight, bias}   (and output_...)
  stack_out_norm.weight (E)
  stack.{i}.time_mixer.norm_lstm.weight, .norm_ffn.weight (E), .combination.weight (E, 2E)
  stack.{i}.time_mixer.ffn.{proj_up_gate, proj_up} (F, E), .proj_down (E, F)
  bi-mLSTM: stack.{i}.time_mixer.fwd_cell.{q, k} (E/2, E), {v, ogate_preact, out_proj}
    (E, E), {igate,fgate}_preact.{weight (NH, E), bias (NH)}, multihead_norm.weight (E)
  bi-sLSTM: stack.{i}.time_mixer.fwd_cell.{f,i,z,o}gate.weight (NH, DH, DH) (out, in) per
    head, _recurrent_kernel_ (NH, DH_in, 4, DH_out), _bias_ (NH, 4, DH), group_norm.weight
  stack.{i}.variate_mixer.norm_attn.weight, .norm_ffn.weight, .attn.{WK,WQ,WV,WO}.weight
    (E, E), .ffn.wi.weight (4E, E), .ffn.wo.weight (E, 4E)

Alias groups (one tensor under several names in the reference's ``state_dict``,
``_state_dict.py``): every ``time_mixer.fwd_cell.X`` is also ``time_mixer.rev_cell.X``
(``rev_cell = fwd_cell``), and the sLSTM's ``_recurrent_kernel_`` is also
``recurrent_kernel``. A safetensors file holds one name per group; the reader takes any
present one (several must be equal, as the reference demands) and the writer stores the
first in sorted order (``fwd_cell``, ``_recurrent_kernel_``), which is the name
safetensors' own ``save_model`` keeps. The sLSTM's module named ``fgate`` drives the input
gate (flashrnn's order i, f, z, o): it is our ``igate``, and the reference's ``igate``
our ``fgate``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from flax import nnx

from xlstm_jax.formats import namemap, torch_pickle
from xlstm_jax.formats.errors import CheckpointError, ConversionError
from xlstm_jax.formats.jsonfile import read_json
from xlstm_jax.formats.namemap import TRANSPOSE, Rule, linear
from xlstm_jax.formats.safetensors import SafetensorsFile, SafetensorsWriter
from xlstm_jax.formats.tensors import to_numpy
from xlstm_jax.layers.config import ConfigError, ForecastError
from xlstm_jax.layers.sharding import set_placed
from xlstm_jax.models.tirex2.config import TiRex2Config
from xlstm_jax.models.tirex2.model import TiRex2

__all__ = [
    "CONFIG_FILE",
    "TiRex2CheckpointError",
    "TiRex2ConversionError",
    "alias_groups",
    "config_from_torch",
    "folder_config",
    "from_state_dict",
    "from_torch",
    "load_folder",
    "save_folder",
    "to_state_dict",
]

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
LEGACY_CONFIG, LEGACY_WEIGHTS = "model-config.yaml", "model.ckpt"
_LINEARS = ("hidden_layer", "output_layer", "residual_layer")
# Reference sLSTM gate module -> ours (the naming swap).
_GATES = {"fgate": "igate", "igate": "fgate", "zgate": "zgate", "ogate": "ogate"}
_FWD, _REV = ".time_mixer.fwd_cell.", ".time_mixer.rev_cell."
_RK, _RK_ALIAS = "_recurrent_kernel_", "recurrent_kernel"


class TiRex2ConversionError(ConversionError, ForecastError):
    """A state dict that does not fit a TiRex-2 model (also a ``ForecastError``)."""


class TiRex2CheckpointError(CheckpointError, ForecastError):
    """A TiRex-2 folder or file that is missing, damaged or unsafe (also a
    ``ForecastError``)."""


def _rules(c: TiRex2Config) -> list[Rule]:
    """The name map of a TiRex-2 of ``c``, in the reference's ``state_dict`` order, each
    alias group under its first (sorted) name."""
    rules: list[Rule] = []
    for lin in _LINEARS:
        name = f"input_patch_embedding.{lin}"
        rules += linear(name, name, bias=True)
    if c.stack_out_norm != "none":
        rules.append(Rule("stack_out_norm.weight", "stack_out_norm.weight"))
    for i, t in enumerate(c.blocks):
        tm = f"stack.{i}.time_mixer"
        cell = f"{tm}.fwd_cell"
        rules.append(Rule(f"{tm}.norm_lstm.weight", f"{tm}.norm_lstm.weight"))
        if t.time_mixer == "bi-mlstm":
            for n in ("q", "k", "v", "ogate_preact"):
                rules += linear(f"{cell}.{n}", f"{cell}.{n}", bias=False)
            for n in ("igate_preact", "fgate_preact"):
                rules += linear(f"{cell}.{n}", f"{cell}.{n}", bias=True)
            rules.append(Rule(f"{cell}.multihead_norm.weight", f"{cell}.multihead_norm.weight"))
            rules += linear(f"{cell}.out_proj", f"{cell}.out_proj", bias=False)
        else:
            rules.append(Rule(f"{cell}.recurrent_kernel", f"{cell}.{_RK}"))
            rules.append(Rule(f"{cell}.bias", f"{cell}._bias_"))
            for ref, ours in _GATES.items():
                rules.append(Rule(f"{cell}.{ours}.weight", f"{cell}.{ref}.weight"))
            rules.append(Rule(f"{cell}.group_norm.weight", f"{cell}.group_norm.weight"))
        rules += linear(f"{tm}.combination", f"{tm}.combination", bias=False)
        rules.append(Rule(f"{tm}.norm_ffn.weight", f"{tm}.norm_ffn.weight"))
        for n in ("proj_up_gate", "proj_up", "proj_down"):
            rules.append(Rule(f"{tm}.ffn.{n}.kernel", f"{tm}.ffn.{n}.weight", TRANSPOSE))
        vm = f"stack.{i}.variate_mixer"
        rules.append(Rule(f"{vm}.norm_attn.weight", f"{vm}.norm_attn.weight"))
        for n in ("WK", "WQ", "WV", "WO"):
            rules += linear(f"{vm}.attn.{n}", f"{vm}.attn.{n}", bias=False)
        rules.append(Rule(f"{vm}.norm_ffn.weight", f"{vm}.norm_ffn.weight"))
        for n in ("wi", "wo"):
            rules += linear(f"{vm}.ffn.{n}", f"{vm}.ffn.{n}", bias=False)
    for lin in _LINEARS:
        name = f"output_patch_embedding.{lin}"
        rules += linear(name, name, bias=True)
    return rules


def alias_groups(name: str) -> tuple[str, ...]:
    """Every reference name of the tensor stored as ``name`` (its group's first name), the
    first name first: the cell's ``rev_cell`` twin and the recurrent kernel's alias."""
    if _FWD not in name:
        return (name,)
    names = [name, name.replace(_FWD, _REV)]
    if name.endswith("." + _RK):
        names += [n[: -len(_RK)] + _RK_ALIAS for n in names]
    return tuple(sorted(names))


class _Aliased(Mapping):
    """A state dict seen under the first name of each alias group: the group's present
    entries (any of its names) must agree; names of no group pass through unchanged (and
    are reported as unexpected by the name map)."""

    def __init__(self, sd: Mapping, canonical: list[str]):
        self._sd = sd
        self._names: dict[str, list[str]] = {}
        known = set()
        for first in canonical:
            group = alias_groups(first)
            known.update(group)
            present = [n for n in group if n in sd]
            if present:
                self._names[first] = present
        for k in sd:
            if k not in known:
                self._names[k] = [k]

    def __getitem__(self, name: str):
        first, *others = self._names[name]
        value = self._sd[first]
        for other in others:
            a = to_numpy(value, bf16="widen", dtype=np.float32)
            b = to_numpy(self._sd[other], bf16="widen", dtype=np.float32)
            if a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
                raise TiRex2ConversionError(
                    f"the state dict holds different values for {first!r} and {other!r}, "
                    "which alias one tensor of the model (the reference refuses it too)."
                )
        return value

    def __contains__(self, name) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def from_state_dict(
    state_dict: Mapping, config: TiRex2Config, *, seed: int = 0, shardings: dict | None = None
) -> TiRex2:
    """A ``TiRex2`` with the weights of a ``tirex-2`` state dict (torch tensors, NumPy
    arrays or a safetensors file; any one name per alias group, or several that agree),
    read as float32 then cast to the parameter dtype, one tensor at a time; ``shardings``
    (our parameter path -> sharding) places each straight into its shards.

    Raises:
      TiRex2ConversionError: a missing, unexpected, mis-shaped or ambiguous tensor (named).
    """
    model = nnx.eval_shape(lambda: TiRex2(config, rngs=nnx.Rngs(seed)))
    state = nnx.state(model, nnx.Param)
    params = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(state)}
    rules = _rules(config)
    namemap.check_covers(rules, params)
    values = namemap.load(
        rules,
        _Aliased(state_dict, [r.theirs for r in rules]),
        {path: var.shape for path, var in params.items()},
        to_numpy=lambda x: to_numpy(x, bf16="widen", dtype=np.float32),
        what="the state dict",
        hint="the config (num_blocks, the templates and recipe, embedding_dim?) does not "
        "match the weights, or they are not a TiRex-2 model's.",
        error=TiRex2ConversionError,
    )
    set_placed(params, values, shardings)
    nnx.update(model, state)
    return model


def to_state_dict(
    model: TiRex2, *, aliases: bool = False, dtype=np.float32
) -> dict[str, np.ndarray]:
    """The ``tirex-2`` state dict (NumPy, ``dtype``; None: the parameters' own) of a
    ``TiRex2``: one name per alias group (what ``model.safetensors`` holds), or with
    ``aliases`` every name (what ``TiRex2.load_state_dict(strict=True)`` takes)."""
    params = {
        ".".join(map(str, p)): np.asarray(v.get_value(), dtype)
        for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    out = {}
    for name, value in namemap.save(_rules(model.config), params.__getitem__):
        for alias in alias_groups(name) if aliases else (name,):
            out[alias] = value
    return out


# --- the reference module -----------------------------------------------------------------


def config_from_torch(torch_model, **overrides) -> TiRex2Config:
    """The ``TiRex2Config`` of a reference ``tirex2.TiRex2`` module (read from its
    attributes), ``overrides`` (our knobs) applied.

    Raises:
      ConfigError: a module our config cannot express (e.g. an activation we do not run).
    """
    m = torch_model
    templates = {}
    for name, t in m.stack_config.templates.items():
        tm, vm = t.time_mixer, t.variate_mixer
        templates[name] = {
            "time_mixer": {
                "model_type": tm.model_type,
                "embedding_dim": tm.embedding_dim,
                "num_heads": tm.num_heads,
                "num_slstm_heads": tm.num_slstm_heads,
            },
            "variate_mixer": {
                "embedding_dim": vm.embedding_dim,
                "num_heads": vm.num_heads,
                "use_flex_attention": vm.use_flex_attention,
            },
            "dropout": t.dropout,
            "eps": t.eps,
        }
    use_qk_norm = {t.variate_mixer.use_qk_norm for t in m.stack_config.templates.values()}
    if len(use_qk_norm) > 1:
        raise ConfigError("the reference's templates disagree about use_qk_norm.")
    norm = m.stack_out_norm
    kind = type(norm).__name__
    out_norm = None
    if kind != "Identity":
        eps = norm.eps if kind == "RMSNorm" else norm.variance_epsilon
        out_norm = {"eps": float(eps), "use_rmsnorm": kind == "RMSNorm"}
    tok, sc = m.tokenizer, m.scaler
    d = {
        "stack_config": {"templates": templates, "recipe": list(m.stack_config.recipe)},
        "num_blocks": len(m.stack),
        "embedding_dim": m.embedding_dim,
        "input_patch_size": m.input_patch_size,
        "output_patch_size": m.output_patch_size,
        "quantiles": [float(q) for q in m.quantiles.tolist()],
        "tokenizer_cfg": {
            "output_patch_size": tok.output_patch_size,
            "input_patch_size": tok.input_patch_size,
            "input_patch_stride": tok.input_patch_stride,
        },
        "scaler_cfg": {"eps": sc.eps, "use_arcsinh": sc.use_arcsinh, "binaryaware": sc.binaryaware},
        "h_expand": m.h_expand,
        "context_len": m.context_len,
        "future_len": m.future_len,
        "input_ff_dim": m.input_ff_dim,
        "act_func": type(m.act_func).__name__,
        "dropout": m.dropout,
        "use_qk_norm": use_qk_norm.pop() if use_qk_norm else True,
        "stack_out_norm_config": out_norm,
        "tta_sign_flip": m.tta_sign_flip,
        "tta_diff": m.tta_diff,
    }
    return TiRex2Config.from_dict(d, **overrides)


def from_torch(torch_model, **overrides) -> TiRex2:
    """A ``TiRex2`` from a reference ``tirex2.TiRex2`` (or the ``ForecastModel`` wrapping
    one): its config and weights. ``overrides``: our knobs (``impl``, ``dtype``, ...)."""
    m = getattr(torch_model, "model", torch_model)
    return from_state_dict(m.state_dict(), config_from_torch(m, **overrides))


# --- folders ------------------------------------------------------------------------------


def _pick(folder: Path, current: str, legacy: str, kind: str) -> Path:
    for name in (current, legacy):
        if (folder / name).is_file():
            return folder / name
    raise TiRex2CheckpointError(
        f"{folder}: no model {kind}: expected {current} (or the legacy {legacy}). Nothing is "
        "downloaded: fetch the checkpoint folder first (e.g. `hf download NX-AI/TiRex-2 "
        f"--local-dir {folder}`)."
    )


def _read_config(path: Path) -> dict:
    fix = "download or save the folder again"
    if path.name == CONFIG_FILE:
        d = read_json(path, TiRex2CheckpointError, fix)
    else:
        import yaml

        try:
            d = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError, yaml.YAMLError) as err:
            why = " ".join(str(err).split())
            raise TiRex2CheckpointError(f"{path}: not valid YAML ({why}); {fix}.") from None
    if not isinstance(d, dict):
        raise TiRex2CheckpointError(f"{path}: not a mapping of TiRex2 arguments; {fix}.")
    return d


def folder_config(path: str | os.PathLike, like: TiRex2Config | None = None) -> TiRex2Config | None:
    """The ``TiRex2Config`` of the checkpoint folder ``path``, or None when ``path`` is not
    a TiRex-2 folder: no ``config.json`` holding the reference's ``stack_config`` (a
    training run's or another family's) nor a ``model-config.yaml``.

    ``like`` (a fine-tuning run's own config): its compute knobs (``impl``, ``dtype``,
    ``param_dtype``) and its dropout (the model's and every template's: the trainer runs
    none, and this port applies none) replace the folder's; the architecture is the
    folder's.

    Raises:
      TiRex2CheckpointError: a TiRex-2 config that cannot be read or is not valid (named).
    """
    folder = Path(path)
    if not folder.is_dir():
        return None
    config_path = folder / CONFIG_FILE
    if config_path.is_file():
        try:
            raw = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # not ours to judge: the caller tries the other kinds of folder
        if not isinstance(raw, dict) or "stack_config" not in raw:
            return None
    elif not (folder / LEGACY_CONFIG).is_file():
        return None
    config_path = _pick(folder, CONFIG_FILE, LEGACY_CONFIG, "config")
    knobs = {} if like is None else {k: getattr(like, k) for k in ("impl", "dtype", "param_dtype")}
    try:
        config = TiRex2Config.from_dict(_read_config(config_path), **knobs)
    except ConfigError as err:
        raise TiRex2CheckpointError(f"{config_path}: {err}") from err
    if like is None:
        return config
    templates = tuple(dataclasses.replace(t, dropout=like.dropout) for t in config.templates)
    return dataclasses.replace(config, dropout=like.dropout, templates=templates)


def load_folder(path: str | os.PathLike, *, shardings: dict | None = None, **overrides) -> TiRex2:
    """A ``TiRex2`` from a local TiRex-2 checkpoint folder, read as the reference's
    ``load_model(path)`` reads it (module docstring); ``overrides``: our knobs (``impl``,
    ``dtype``, ``param_dtype``); ``shardings``: as ``from_state_dict``.

    Raises:
      TiRex2CheckpointError: no such folder, a missing, damaged or unsafe file, or a config
        that is not a TiRex-2's (the field named).
      TiRex2ConversionError: weights that do not fit the config.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise TiRex2CheckpointError(f"{folder}: no such folder (a TiRex-2 checkpoint folder).")
    config_path = _pick(folder, CONFIG_FILE, LEGACY_CONFIG, "config")
    weights = _pick(folder, WEIGHTS_FILE, LEGACY_WEIGHTS, "weights")
    try:
        config = TiRex2Config.from_dict(_read_config(config_path), **overrides)
    except ConfigError as err:
        raise TiRex2CheckpointError(f"{config_path}: {err}") from err
    if weights.name == WEIGHTS_FILE:
        with SafetensorsFile(weights, error=TiRex2CheckpointError) as sd:
            return from_state_dict(sd, config, shardings=shardings)
    ckpt = torch_pickle.read_torch_checkpoint(weights, error=TiRex2CheckpointError)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    if not isinstance(sd, dict):
        raise TiRex2CheckpointError(f"{weights}: holds no state dict ({type(sd).__name__}).")
    return from_state_dict(sd, config, shardings=shardings)


def save_folder(model: TiRex2, path: str | os.PathLike) -> Path:
    """Writes ``model`` as a checkpoint folder the reference's ``load_model(path)`` (and
    ``load_folder``) reads: ``config.json`` and ``model.safetensors`` (float32, one name
    per alias group). Written to a hidden folder beside ``path`` and renamed into place, so
    ``path`` is either complete or absent.

    Raises:
      TiRex2CheckpointError: ``path`` exists and is not an empty folder.
    """
    dest = Path(path)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise TiRex2CheckpointError(
            f"{dest}: exists and is not an empty folder; give a new path or remove it first."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        with SafetensorsWriter(
            tmp / WEIGHTS_FILE, metadata={"format": "pt"}, error=TiRex2CheckpointError
        ) as writer:
            for name, value in to_state_dict(model).items():
                writer.add(name, value)
        text = json.dumps(model.config.to_dict(), indent=2) + "\n"
        (tmp / CONFIG_FILE).write_text(text, encoding="utf-8")
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest

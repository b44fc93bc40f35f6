"""TiRex weights in and out: the ``tirex-ts`` state dict and its Lightning checkpoint file.

``tirex-ts`` (``TiRexZero``) names and layouts, after its loader drops the ``block_stack.``
prefix of older checkpoints (E embedding dim, NH heads, DH = E / NH, F the SwiGLU width,
P the patch, Q the quantile levels):

  input_patch_embedding.{hidden,output,residual}_layer.{weight (out, in), bias}
  blocks.{i}.norm_slstm.weight (E)            blocks.{i}.norm_ffn.weight (E)
  blocks.{i}.slstm_layer.{f,i,z,o}gate.weight (NH, DH, DH)  (out, in) per head
  blocks.{i}.slstm_layer.slstm_cell._recurrent_kernel_ (NH, DH, 4 * DH)
  blocks.{i}.slstm_layer.slstm_cell._bias_ (NH * 4 * DH)
  blocks.{i}.slstm_layer.group_norm.weight (E)
  blocks.{i}.ffn.{proj_up_gate, proj_up} (F, E), ffn.proj_down (E, F)
  out_norm.weight (E)   output_patch_embedding.* (as the input one, out = Q * P)

The cell's gate order is (i, f, z, o), and the layer concatenates its projections as
``fgate, igate, zgate, ogate``: the module *named* ``fgate`` feeds the input gate and
``igate`` the forget gate (the naming swap of the xLSTM reference). The recurrent kernel is
stored as (NH, DH_in, gate, DH_out) and the bias as (NH, gate, DH), which are our layouts
up to a reshape. The name map is ``_rules``, moved by ``xlstm_jax.formats.namemap``; every
tensor is read as float32.

The checkpoint (``model.ckpt``, as ``tirex.load_model`` reads it) is a PyTorch zip file
holding ``{"hyper_parameters": {"model_config": {...}, "train_ctx_len": L}, "state_dict":
{...}}``, read without PyTorch and without executing anything
(``xlstm_jax.formats.torch_pickle``). Every error here is also a ``ForecastError``, the
error forecaster callers catch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flax import nnx

from xlstm_jax.formats import namemap, torch_pickle
from xlstm_jax.formats.errors import CheckpointError, ConversionError
from xlstm_jax.formats.namemap import TRANSPOSE, Rule, linear
from xlstm_jax.formats.tensors import to_numpy
from xlstm_jax.layers.sharding import set_placed
from xlstm_jax.models.tirex.config import ForecastError, TiRexConfig
from xlstm_jax.models.tirex.model import TiRex

__all__ = [
    "TiRexCheckpointError",
    "TiRexConversionError",
    "config_from_hparams",
    "from_state_dict",
    "from_torch",
    "load_checkpoint",
    "load_forecaster",
    "read_torch_checkpoint",
    "to_state_dict",
]

_LINEARS = ("hidden_layer", "output_layer", "residual_layer")
_FFN = ("proj_up_gate", "proj_up", "proj_down")
# Reference gate module -> our module (the naming swap).
_GATES = {"fgate": "igate", "igate": "fgate", "zgate": "zgate", "ogate": "ogate"}


class TiRexConversionError(ConversionError, ForecastError):
    """A state dict or hyper-parameters that do not fit a TiRex model (also a
    ``ForecastError``)."""


class TiRexCheckpointError(CheckpointError, ForecastError):
    """A TiRex checkpoint file that is missing, damaged or unsafe (also a
    ``ForecastError``)."""


def config_from_hparams(hparams: dict, **overrides) -> TiRexConfig:
    """The ``TiRexConfig`` of a checkpoint's ``hyper_parameters`` (``model_config`` with
    its ``block_kwargs``, and ``train_ctx_len``); ``overrides`` are our knobs (``dtype``,
    ``impl``, ...).

    Raises:
      TiRexConversionError: a missing or malformed hyper-parameter.
    """
    try:
        mc = dict(hparams["model_config"])
        blocks = dict(mc["block_kwargs"])
        cfg = dict(
            input_patch_size=int(mc["input_patch_size"]),
            output_patch_size=int(mc["output_patch_size"]),
            quantiles=tuple(float(q) for q in mc["quantiles"]),
            embedding_dim=int(blocks["embedding_dim"]),
            num_heads=int(blocks["num_heads"]),
            num_blocks=int(blocks["num_blocks"]),
            ffn_proj_factor=float(blocks.get("ffn_proj_factor", 2.6667)),
            input_ff_dim=int(mc["input_ff_dim"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise TiRexConversionError(
            f"the checkpoint's hyper_parameters are not a TiRex model's (missing or bad {e}); "
            "expected model_config with input_patch_size, output_patch_size, quantiles, "
            "input_ff_dim and block_kwargs (embedding_dim, num_heads, num_blocks)."
        ) from None
    if hparams.get("train_ctx_len") is not None:
        cfg["train_ctx_len"] = int(hparams["train_ctx_len"])
    if mc.get("nan_mask_value") is not None:
        cfg["nan_mask_value"] = float(mc["nan_mask_value"])
    cfg.update(overrides)
    return TiRexConfig(**cfg)


def _rules(config: TiRexConfig) -> list[Rule]:
    """The name map of a TiRex of ``config``, in the order ``tirex-ts`` lists its tensors."""
    NH, DH = config.num_heads, config.head_dim
    rules: list[Rule] = []
    for prefix in ("input_patch_embedding", "output_patch_embedding"):
        for lin in _LINEARS:
            rules += linear(f"{prefix}.{lin}", f"{prefix}.{lin}", bias=True)
    for i in range(config.num_blocks):
        b = f"blocks.{i}"
        rules.append(Rule(f"{b}.norm_slstm.weight", f"{b}.norm_slstm.weight"))
        for ref, ours in _GATES.items():
            rules.append(Rule(f"{b}.slstm_layer.{ours}.weight", f"{b}.slstm_layer.{ref}.weight"))
        cell = f"{b}.slstm_layer.slstm_cell"
        recurrent = namemap.reshape((NH, DH, 4 * DH), (NH, DH, 4, DH))
        rules.append(
            Rule(f"{b}.slstm_layer.recurrent_kernel", f"{cell}._recurrent_kernel_", recurrent)
        )
        bias = namemap.reshape((NH * 4 * DH,), (NH, 4, DH))
        rules.append(Rule(f"{b}.slstm_layer.bias", f"{cell}._bias_", bias))
        rules.append(
            Rule(f"{b}.slstm_layer.group_norm.weight", f"{b}.slstm_layer.group_norm.weight")
        )
        rules.append(Rule(f"{b}.norm_ffn.weight", f"{b}.norm_ffn.weight"))
        rules += [Rule(f"{b}.ffn.{n}.kernel", f"{b}.ffn.{n}.weight", TRANSPOSE) for n in _FFN]
    rules.append(Rule("out_norm.weight", "out_norm.weight"))
    return rules


def from_state_dict(
    state_dict: dict, config: TiRexConfig, *, seed: int = 0, shardings: dict | None = None
) -> TiRex:
    """A ``TiRex`` with the weights of a ``tirex-ts`` state dict (torch tensors or arrays,
    read as float32, then cast to the parameter dtype), one tensor at a time; with
    ``shardings`` (our parameter path -> sharding) each is placed straight into its shards
    (``layers.sharding.place``).

    Raises:
      TiRexConversionError: a missing, unexpected or mis-shaped tensor (named).
    """
    sd = {k.removeprefix("block_stack."): v for k, v in state_dict.items()}
    # Shapes only: every parameter is set below (the table covers them all), so the random
    # initialisation would be wasted work.
    model = nnx.eval_shape(lambda: TiRex(config, rngs=nnx.Rngs(seed)))
    state = nnx.state(model, nnx.Param)
    params = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(state)}
    rules = _rules(config)
    namemap.check_covers(rules, params)
    values = namemap.load(
        rules,
        sd,
        {path: var.shape for path, var in params.items()},
        to_numpy=lambda x: to_numpy(x, bf16="widen", dtype=np.float32),
        what="the state dict",
        hint="the config (num_blocks?) does not match the weights, or it is not a TiRex "
        "model's; the checkpoint and its hyper_parameters must agree.",
        error=TiRexConversionError,
    )
    set_placed(params, values, shardings)
    nnx.update(model, state)
    return model


def to_state_dict(model: TiRex) -> dict[str, np.ndarray]:
    """The ``tirex-ts`` state dict (float32 NumPy) of a ``TiRex``: the inverse of
    ``from_state_dict``."""
    params = {
        ".".join(map(str, p)): np.asarray(v.get_value(), np.float32)
        for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    return dict(namemap.save(_rules(model.config), params.__getitem__))


def from_torch(torch_model, **overrides) -> TiRex:
    """A ``TiRex`` from a ``tirex-ts`` ``TiRexZero`` (any backend): its config and weights.
    ``overrides`` are our knobs (``dtype``, ``impl``, ...)."""
    c = torch_model.config
    hparams = {
        "model_config": {
            "input_patch_size": c.input_patch_size,
            "output_patch_size": c.output_patch_size,
            "quantiles": list(c.quantiles),
            "block_kwargs": dict(c.block_kwargs),
            "input_ff_dim": c.input_ff_dim,
            "nan_mask_value": c.nan_mask_value,
        },
        "train_ctx_len": c.train_ctx_len,
    }
    config = config_from_hparams(hparams, **overrides)
    return from_state_dict(torch_model.state_dict(), config)


def read_torch_checkpoint(path: str | Path) -> dict:
    """``xlstm_jax.formats.torch_pickle.read_torch_checkpoint`` (the contents of a
    ``torch.save`` file, tensors as NumPy arrays, nothing executed) raising
    ``TiRexCheckpointError``."""
    return torch_pickle.read_torch_checkpoint(path, error=TiRexCheckpointError)


def load_checkpoint(path: str | Path, *, shardings: dict | None = None, **overrides) -> TiRex:
    """A ``TiRex`` from a TiRex checkpoint file (``model.ckpt`` as ``tirex-ts`` loads it;
    no network, nothing executed). ``overrides`` are our knobs (``dtype``, ``impl``, ...).
    The pickle cannot be read in slices: the host reads the file whole, then places each
    tensor into its ``shardings`` (``from_state_dict``).

    Raises:
      TiRexCheckpointError: the file is missing, damaged or not a checkpoint.
      TiRexConversionError: it is not a TiRex model's.
    """
    ckpt = read_torch_checkpoint(path)
    if not isinstance(ckpt, dict) or "hyper_parameters" not in ckpt or "state_dict" not in ckpt:
        raise TiRexCheckpointError(
            f"{path}: a TiRex checkpoint holds 'hyper_parameters' and 'state_dict'; this one "
            f"holds {sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__}."
        )
    config = config_from_hparams(ckpt["hyper_parameters"], **overrides)
    return from_state_dict(ckpt["state_dict"], config, shardings=shardings)


def load_forecaster(path: str | Path, *, shardings: dict | None = None, **overrides) -> TiRex:
    """A ``TiRex`` from a TiRex checkpoint: a ``.ckpt`` file (as ``tirex-ts`` loads it) or a
    folder holding ``model.ckpt``. (A training run folder of ``python -m train.main`` is
    loaded by ``train.runs``.) ``overrides``: our knobs (``dtype``, ``impl``, ...);
    ``shardings``: our parameter path -> sharding (``load_checkpoint``).

    Raises:
      TiRexCheckpointError: the path is neither, or the file is not a checkpoint.
      TiRexConversionError: the checkpoint is not a TiRex model's.
    """
    p = Path(path)
    if p.is_dir() and (p / "model.ckpt").is_file():
        p = p / "model.ckpt"
    if not p.is_file():
        raise TiRexCheckpointError(
            f"{path}: not a TiRex checkpoint; give a model.ckpt file (or its folder)."
        )
    return load_checkpoint(p, shardings=shardings, **overrides)

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
stored as (NH, DH_in, gate, DH_out) and the bias as (NH, gate, DH), which are our layouts.

The checkpoint (``model.ckpt``, as ``tirex.load_model`` reads it) is a PyTorch zip file
holding ``{"hyper_parameters": {"model_config": {...}, "train_ctx_len": L}, "state_dict":
{...}}``. ``read_torch_checkpoint`` reads it without PyTorch and without executing
anything: the pickle is read by an unpickler that only builds dicts, lists, numbers and
tensors (as numpy arrays) and refuses every other object.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xlstm_jax.tirex import ForecastError, TiRex, TiRexConfig

__all__ = [
    "config_from_hparams",
    "from_state_dict_tirex",
    "from_torch_tirex",
    "load_tirex_checkpoint",
    "read_torch_checkpoint",
    "to_state_dict_tirex",
]

_LINEARS = ("hidden_layer", "output_layer", "residual_layer")
_FFN = ("proj_up_gate", "proj_up", "proj_down")
# Reference gate module -> our module (the naming swap).
_GATES = {"fgate": "igate", "igate": "fgate", "zgate": "zgate", "ogate": "ogate"}


def config_from_hparams(hparams: dict, **overrides) -> TiRexConfig:
    """The ``TiRexConfig`` of a checkpoint's ``hyper_parameters`` (``model_config`` with
    its ``block_kwargs``, and ``train_ctx_len``); ``overrides`` are our knobs (``dtype``,
    ``impl``, ...)."""
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
        raise ForecastError(
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


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, np.float32)


def from_state_dict_tirex(state_dict: dict, config: TiRexConfig, *, seed: int = 0) -> TiRex:
    """A ``TiRex`` with the weights of a ``tirex-ts`` state dict (torch tensors or arrays).

    Raises:
      ForecastError: a missing, unexpected or mis-shaped tensor (named).
    """
    sd = {k.removeprefix("block_stack."): v for k, v in state_dict.items()}
    # Shapes only: every parameter is set below (a missing one raises), so the random
    # initialisation would be wasted work.
    model = nnx.eval_shape(lambda: TiRex(config, rngs=nnx.Rngs(seed)))
    used: set[str] = set()

    def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in sd:
            raise ForecastError(f"the state dict has no {name!r} (is it a TiRex model's?).")
        a = _np(sd[name])
        if a.shape != shape:
            raise ForecastError(
                f"{name}: shape {a.shape}, but the config needs {shape}; the checkpoint and "
                "its hyper_parameters disagree."
            )
        used.add(name)
        return a

    def put(p: nnx.Param, value: np.ndarray) -> None:
        p.set_value(jnp.asarray(value, p.get_value().dtype))

    E, NH, DH, F = config.embedding_dim, config.num_heads, config.head_dim, config.ffn_dim

    def residual(prefix: str, mod, d_in: int, d_h: int, d_out: int) -> None:
        for lin, (i, o) in zip(_LINEARS, ((d_in, d_h), (d_h, d_out), (d_in, d_out)), strict=True):
            dense = getattr(mod, lin)
            put(dense.kernel, get(f"{prefix}.{lin}.weight", (o, i)).T)
            put(dense.bias, get(f"{prefix}.{lin}.bias", (o,)))

    P, Q, H = config.patch_size, len(config.quantiles), config.input_ff_dim
    residual("input_patch_embedding", model.input_patch_embedding, 2 * P, H, E)
    residual("output_patch_embedding", model.output_patch_embedding, E, H, Q * P)
    put(model.out_norm.weight, get("out_norm.weight", (E,)))
    for i, block in enumerate(model.blocks):
        b = f"blocks.{i}"
        put(block.norm_slstm.weight, get(f"{b}.norm_slstm.weight", (E,)))
        put(block.norm_ffn.weight, get(f"{b}.norm_ffn.weight", (E,)))
        layer = block.slstm_layer
        for ref, ours in _GATES.items():
            put(getattr(layer, ours).weight, get(f"{b}.slstm_layer.{ref}.weight", (NH, DH, DH)))
        cell = f"{b}.slstm_layer.slstm_cell"
        R = get(f"{cell}._recurrent_kernel_", (NH, DH, 4 * DH)).reshape(NH, DH, 4, DH)
        put(layer.recurrent_kernel, R)
        put(layer.bias, get(f"{cell}._bias_", (NH * 4 * DH,)).reshape(NH, 4, DH))
        put(layer.group_norm.weight, get(f"{b}.slstm_layer.group_norm.weight", (E,)))
        for name, shape in zip(_FFN, ((F, E), (F, E), (E, F)), strict=True):
            put(getattr(block.ffn, name).kernel, get(f"{b}.ffn.{name}.weight", shape).T)
    unset = [
        ".".join(map(str, path))
        for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
        if isinstance(v.get_value(), jax.ShapeDtypeStruct)
    ]
    if unset:  # pragma: no cover - a parameter this converter does not know
        raise ForecastError(f"no tensor of the state dict sets {unset[:3]}.")
    extra = sorted(set(sd) - used)
    if extra:
        raise ForecastError(
            f"the state dict has {len(extra)} tensor(s) a TiRex model of this config does not "
            f"have, e.g. {extra[:3]}; the config (num_blocks?) does not match the weights."
        )
    return model


def to_state_dict_tirex(model: TiRex) -> dict[str, np.ndarray]:
    """The ``tirex-ts`` state dict (float32 numpy) of a ``TiRex``: the inverse of
    ``from_state_dict_tirex``."""
    c = model.config
    NH, DH = c.num_heads, c.head_dim
    out: dict[str, np.ndarray] = {}

    def val(p) -> np.ndarray:
        return np.asarray(p.get_value(), np.float32)

    for prefix in ("input_patch_embedding", "output_patch_embedding"):
        mod = getattr(model, prefix)
        for lin in _LINEARS:
            out[f"{prefix}.{lin}.weight"] = val(getattr(mod, lin).kernel).T.copy()
            out[f"{prefix}.{lin}.bias"] = val(getattr(mod, lin).bias)
    for i, block in enumerate(model.blocks):
        b = f"blocks.{i}"
        out[f"{b}.norm_slstm.weight"] = val(block.norm_slstm.weight)
        layer = block.slstm_layer
        for ref, ours in _GATES.items():
            out[f"{b}.slstm_layer.{ref}.weight"] = val(getattr(layer, ours).weight)
        cell = f"{b}.slstm_layer.slstm_cell"
        out[f"{cell}._recurrent_kernel_"] = val(layer.recurrent_kernel).reshape(NH, DH, 4 * DH)
        out[f"{cell}._bias_"] = val(layer.bias).reshape(-1)
        out[f"{b}.slstm_layer.group_norm.weight"] = val(layer.group_norm.weight)
        out[f"{b}.norm_ffn.weight"] = val(block.norm_ffn.weight)
        for name in _FFN:
            out[f"{b}.ffn.{name}.weight"] = val(getattr(block.ffn, name).kernel).T.copy()
    out["out_norm.weight"] = val(model.out_norm.weight)
    return out


def from_torch_tirex(torch_model, **overrides) -> TiRex:
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
    return from_state_dict_tirex(torch_model.state_dict(), config)


# --- a PyTorch checkpoint reader that executes nothing ----------------------------------

# Storage type names of torch's pickles -> numpy dtypes (bfloat16 is widened on read).
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.name = name


def _rebuild_tensor(storage, offset, size, stride, *_rest):
    if not size:
        return storage[offset : offset + 1].reshape(())
    itemsize = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    )
    return np.array(view)


def _rebuild_parameter(tensor, *_rest):
    return tensor


class _SafeUnpickler(pickle.Unpickler):
    """Builds only containers, numbers, strings and tensors; any other global is refused."""

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
    }

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: Path):
        super().__init__(file)
        self.archive, self.prefix, self.path = archive, prefix, path
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise ForecastError(
            f"{self.path}: the checkpoint pickles a {module}.{name}, which this reader does "
            "not build (it builds only tensors, numbers, strings and containers, and executes "
            "nothing); it is not a plain TiRex checkpoint."
        )

    def persistent_load(self, pid):
        # ("storage", storage type, key, location, numel)
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise ForecastError(f"{self.path}: unexpected persistent id {pid!r}.")
        stype, key = pid[1], str(pid[2])
        if key not in self.storages:
            raw = self.archive.read(f"{self.prefix}data/{key}")
            dt = _STORAGE_DTYPES[stype.name]
            if dt == "bfloat16":
                bits = np.frombuffer(raw, np.uint16).astype(np.uint32) << 16
                arr = bits.view(np.float32)
            else:
                arr = np.frombuffer(raw, dt)
            self.storages[key] = arr
        return self.storages[key]


def read_torch_checkpoint(path: str | Path) -> dict:
    """The contents of a PyTorch ``torch.save`` zip file (a Lightning ``.ckpt``) with every
    tensor as a numpy array, without PyTorch and without executing anything.

    Raises:
      ForecastError: not a file, not a PyTorch zip checkpoint (e.g. the legacy format), or
        it pickles an object other than containers, numbers, strings and tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ForecastError(f"{path}: no such checkpoint file.")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ForecastError(
            f"{path}: not a PyTorch zip checkpoint (torch.save's format since PyTorch 1.6)."
        ) from None
    with archive:
        pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if not pkl:
            raise ForecastError(f"{path}: a zip file without data.pkl is not a torch checkpoint.")
        prefix = pkl[0][: -len("data.pkl")]
        try:
            return _SafeUnpickler(io.BytesIO(archive.read(pkl[0])), archive, prefix, path).load()
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
            if isinstance(e, ForecastError):
                raise
            raise ForecastError(f"{path}: the checkpoint is damaged ({e}).") from None


def load_tirex_checkpoint(path: str | Path, **overrides) -> TiRex:
    """A ``TiRex`` from a TiRex checkpoint file (``model.ckpt`` as ``tirex-ts`` loads it;
    no network, nothing executed). ``overrides`` are our knobs (``dtype``, ``impl``, ...).

    Raises:
      ForecastError: the file is missing, not a checkpoint, or not a TiRex model's.
    """
    ckpt = read_torch_checkpoint(path)
    if not isinstance(ckpt, dict) or "hyper_parameters" not in ckpt or "state_dict" not in ckpt:
        raise ForecastError(
            f"{path}: a TiRex checkpoint holds 'hyper_parameters' and 'state_dict'; this one "
            f"holds {sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__}."
        )
    config = config_from_hparams(ckpt["hyper_parameters"], **overrides)
    return from_state_dict_tirex(ckpt["state_dict"], config)

"""xLSTM-Large checkpoints in local folders, both ways: ``load_pretrained`` / ``save_pretrained``.

    model = load_pretrained("xLSTM-7b/", dtype="bfloat16", param_dtype="bfloat16")
    save_pretrained(model, "out/")                      # transformers can load "out/"

Two folder layouts, told apart by their config file:

* Hugging Face (``xLSTMForCausalLM``): ``config.json`` and ``model.safetensors``, or the
  shards ``model-00001-of-0000N.safetensors`` ... listed by ``model.safetensors.index.json``
  (``{"weight_map": {tensor name: shard file}}``).
* the reference's (``xlstm.xlstm_large.from_pretrained``): ``config.yaml`` (needs PyYAML)
  and ``model.safetensors``, or ``model_0.safetensors``, ``model_1.safetensors``, ...

Tensor names and layouts are ``xlstm_jax.models.xlstm_large.convert``'s business (either
naming, single or fused weights); the files are read and written by
``xlstm_jax.formats.safetensors``, one tensor at a time. Nothing downloads and nothing in a
folder is executed: configs are JSON or safe YAML, weights only safetensors (pickled
``.bin`` / ``.pt`` files are refused). Every problem with a folder raises
``PretrainedError`` naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xlstm_jax.formats.errors import PretrainedError
from xlstm_jax.formats.jsonfile import MAX_JSON_BYTES, read_json
from xlstm_jax.formats.safetensors import (
    DTYPE_NAMES,
    FLOAT_NAMES,
    SafetensorsFile,
    SafetensorsWriter,
)
from xlstm_jax.layers.config import DTYPES, ConfigError
from xlstm_jax.models.xlstm_large.config import xLSTMLargeConfig
from xlstm_jax.models.xlstm_large.convert import (
    FORMATS,
    WEIGHT_MODES,
    detect_format,
    from_state_dict,
    iter_state_dict,
)
from xlstm_jax.models.xlstm_large.model import xLSTMLarge

__all__ = ["PretrainedError", "load_pretrained", "save_pretrained"]

HF_CONFIG, REF_CONFIG = "config.json", "config.yaml"
SINGLE_FILE = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"
_REF_SHARD = re.compile(r"model_(\d+)\.safetensors")
_DOWNLOAD_HINT = (
    "load_pretrained reads a local folder and downloads nothing: fetch the checkpoint first, "
    "e.g. `hf download NX-AI/xLSTM-7b --local-dir {path}`"
)
# The stored float dtypes our configs can hold, by safetensors name.
_CONFIG_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}


# --- folders ----------------------------------------------------------------------------


def _found(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir())
    return ", ".join(names[:12]) + (" ..." if len(names) > 12 else "") if names else "nothing"


def _yaml(path: Path):
    try:
        import yaml
    except ImportError:
        raise PretrainedError(
            f"{path}: the reference's config.yaml needs PyYAML: pip install pyyaml."
        ) from None
    return yaml


def _read_config(folder: Path) -> tuple[dict, Path]:
    """The folder's config as a dict, and the file it came from (config.json first)."""
    hf, ref = folder / HF_CONFIG, folder / REF_CONFIG
    fix = "download or save it again"
    if hf.is_file():
        path, d = hf, read_json(hf, PretrainedError, fix)
    elif ref.is_file():
        path, yaml = ref, _yaml(ref)
        try:
            if ref.stat().st_size > MAX_JSON_BYTES:
                raise ValueError(f"larger than {MAX_JSON_BYTES >> 20} MiB")
            d = yaml.safe_load(ref.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError, yaml.YAMLError) as err:
            # ValueError includes UnicodeDecodeError, and the timestamps and numbers
            # safe_load's constructors cannot build; RecursionError, nesting too deep.
            # PyYAML's messages span lines (with a caret under the spot): one paragraph.
            why = " ".join(str(err).split())
            raise PretrainedError(f"{ref}: not valid YAML ({why}); {fix}.") from None
    else:
        raise PretrainedError(
            f"{folder}: no {HF_CONFIG} (Hugging Face) or {REF_CONFIG} (the xlstm reference's) "
            f"here (found: {_found(folder)}). " + _DOWNLOAD_HINT.format(path=folder) + "."
        )
    if not isinstance(d, dict):
        raise PretrainedError(f"{path}: not a mapping of config fields; download or save it again.")
    if d.get("model_type", "xlstm") != "xlstm":
        raise PretrainedError(
            f"{path}: a {d['model_type']!r} checkpoint, not an xLSTM one (model_type 'xlstm')."
        )
    return d, path


def _read_index(index: Path) -> dict[str, str]:
    raw = read_json(index, PretrainedError, "download or save it again")
    weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
    ok = isinstance(weight_map, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    )
    if not ok:
        raise PretrainedError(
            f"{index}: not a safetensors index (JSON with a weight_map of tensor name -> shard "
            "file); download or save it again."
        )
    for shard in set(weight_map.values()):
        # A plain file name: no folder part, no way out of the folder (a NUL would make
        # the path unusable, a backslash a folder on Windows).
        plain = Path(shard).name == shard and not {"\0", "\\"} & set(shard)
        if not plain or not shard.endswith(".safetensors"):
            raise PretrainedError(
                f"{index}: names {shard!r}, not a .safetensors file in this folder; download "
                "the index again."
            )
    return weight_map


def _weight_files(folder: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The folder's safetensors files, and the HF index's weight map when it has one."""
    if (folder / SINGLE_FILE).is_file():
        return [folder / SINGLE_FILE], None
    if (folder / HF_INDEX).is_file():
        weight_map = _read_index(folder / HF_INDEX)
        shards = list(dict.fromkeys(weight_map.values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise PretrainedError(
                f"{folder}: {HF_INDEX} lists {len(missing)} shard(s) that are not here: "
                f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}. Download every "
                "shard the index names (load_pretrained downloads nothing)."
            )
        return [folder / s for s in shards], weight_map
    numbers = sorted(
        int(m.group(1)) for p in folder.iterdir() if (m := _REF_SHARD.fullmatch(p.name))
    )
    if numbers:
        gaps = sorted(set(range(numbers[-1] + 1)) - set(numbers))
        if gaps:
            raise PretrainedError(
                f"{folder}: model_{gaps[0]}.safetensors is missing (the reference's shards are "
                f"model_0.safetensors, model_1.safetensors, ... without gaps; found "
                f"{', '.join(f'model_{i}' for i in numbers)}). Copy or download it again."
            )
        return [folder / f"model_{i}.safetensors" for i in numbers], None
    pickled = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    fix = (
        f"Pickled checkpoints ({', '.join(sorted(pickled))}) are not read, since loading them "
        "can execute code: convert them to safetensors first (torch.load, then "
        "safetensors.torch.save_file)."
        if pickled
        else _DOWNLOAD_HINT.format(path=folder) + "."
    )
    raise PretrainedError(
        f"{folder}: no weights: expected {SINGLE_FILE}, {HF_INDEX} with its shards, or "
        f"model_0.safetensors, model_1.safetensors, ... (found: {_found(folder)}). {fix}"
    )


class _Checkpoint(Mapping):
    """The tensors of a checkpoint's files as one lazy mapping name -> NumPy array; reports
    each read as ``progress(tensors read, total)``."""

    def __init__(self, files: list[SafetensorsFile], progress: Callable[[int, int], None] | None):
        self._where: dict[str, SafetensorsFile] = {}
        for f in files:
            for name in f:
                if name in self._where:
                    raise PretrainedError(
                        f"{f.path.parent}: tensor {name!r} is in both {self._where[name].path.name}"
                        f" and {f.path.name}; remove the stale file or download the shards again."
                    )
                self._where[name] = f
        self._progress, self._read = progress, 0

    def check_index(self, weight_map: dict[str, str]) -> None:
        """Raises unless the HF index maps each tensor to the shard that holds it."""
        wrong = sorted(
            n
            for n in set(weight_map) | set(self._where)
            if n not in self._where or weight_map.get(n) != self._where[n].path.name
        )
        if wrong:
            folder = next(iter(self._where.values())).path.parent
            raise PretrainedError(
                f"{folder}: {HF_INDEX} and the shards disagree about {len(wrong)} tensor(s), "
                f"e.g. {wrong[0]!r}; download the index and the shards again."
            )

    def stored_dtype(self) -> str | None:
        """The config name of the floating dtype every float tensor has (None if mixed)."""
        names = {DTYPE_NAMES[f.info(n)[0]] for n, f in self._where.items()} & FLOAT_NAMES
        return _CONFIG_DTYPES.get(names.pop()) if len(names) == 1 else None

    def __getitem__(self, name: str) -> np.ndarray:
        value = self._where[name][name]
        self._read += 1
        if self._progress is not None:
            self._progress(self._read, len(self._where))
        return value

    def info(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        return self._where[name].info(name)

    def read_slice(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
        """A slice of tensor ``name`` (``SafetensorsFile.read_slice``; not reported)."""
        return self._where[name].read_slice(name, index)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def load_pretrained(
    path: str | os.PathLike,
    *,
    shardings: Mapping[str, jax.sharding.Sharding] | None = None,
    progress: Callable[[int, int], None] | None = None,
    **overrides,
) -> xLSTMLarge:
    """Our ``xLSTMLarge`` from a local checkpoint folder, Hugging Face's or the reference's
    (module docstring), read tensor by tensor straight into the model.

    Each tensor is read from disk, converted to the parameter dtype and placed before the
    next, so the peak memory is the model plus about one tensor (the 7B in bfloat16:
    ``benchmarks/results/load_pretrained_cpu.md``).

    Args:
        path: the folder.
        shardings: our parameter path (``"backbone.blocks.0.ffn.proj_up.kernel"``) ->
            sharding: each tensor is then read straight into its shards, this host reading
            only its devices' slices of the file (a whole tensor only where the name map
            reshapes it; ``xlstm_jax.formats.namemap.load_slices``). Default: the default
            device, tensor by tensor.
        progress: called as ``progress(tensors read, total tensors)`` after each read, e.g.
            ``lambda n, total: print(f"\\r{n}/{total}", end="")``.
        **overrides: ``xLSTMLargeConfig`` fields that win over the folder's config: our
            knobs (``dtype``, ``param_dtype``, ``chunk_size``, ``form``, ``impl``,
            ``remat``). ``dtype`` and ``param_dtype`` default to the dtype the weights are
            stored in when all share one (as transformers' ``dtype="auto"``), else float32.

    Raises:
        PretrainedError: no such folder; no config or weights; a malformed config, index or
            safetensors header; a shard the index lists that is absent; weights that do not
            fit the config; an invalid override.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise PretrainedError(
            f"{folder}: no such folder. " + _DOWNLOAD_HINT.format(path=folder) + "."
        )
    config_dict, config_path = _read_config(folder)
    files, weight_map = _weight_files(folder)
    with contextlib.ExitStack() as stack:
        ckpt = _Checkpoint(
            [stack.enter_context(SafetensorsFile(f, error=PretrainedError)) for f in files],
            progress,
        )
        if weight_map is not None:
            ckpt.check_index(weight_map)
        try:
            fmt, _ = detect_format(ckpt)
        except ValueError as err:
            raise PretrainedError(f"{folder}: {err}") from err
        if fmt == "hf":  # HF's xLSTMModel applies out_norm whatever its config says
            config_dict = {**config_dict, "add_out_norm": True}
        stored = ckpt.stored_dtype()
        knobs = ({"dtype": stored, "param_dtype": stored} if stored else {}) | overrides
        try:
            config = xLSTMLargeConfig.from_dict(config_dict, **knobs)
        except ConfigError as err:
            raise PretrainedError(f"{config_path} (with overrides {overrides}): {err}") from err
        try:
            return from_state_dict(ckpt, config, shardings=shardings)
        except PretrainedError:
            raise
        except ValueError as err:
            raise PretrainedError(
                f"{folder}: the weights do not fit {config_path.name}: {err}"
            ) from err


# --- saving -----------------------------------------------------------------------------


def _kernel_dtype(dtype: str) -> str:
    """The torch models' kernel dtype for our compute dtype (they have no float64 one)."""
    return dtype if dtype in ("float32", "bfloat16", "float16") else "float32"


def _torch_config(c: xLSTMLargeConfig, weight_mode: str) -> dict:
    """The reference's ``xLSTMLargeConfig`` fields, set to run its native torch kernels
    (any device) in inference mode."""
    return {
        "embedding_dim": c.embedding_dim,
        "num_heads": c.num_heads,
        "num_blocks": c.num_blocks,
        "vocab_size": c.vocab_size,
        "use_bias": c.use_bias,
        "norm_eps": c.norm_eps,
        "norm_reduction_force_float32": c.norm_reduction_force_float32,
        "add_out_norm": c.add_out_norm,
        "qk_dim_factor": c.qk_dim_factor,
        "v_dim_factor": c.v_dim_factor,
        "chunkwise_kernel": "chunkwise--native_autograd",
        "sequence_kernel": "native_sequence__native",
        "step_kernel": "native",
        "mode": "inference",
        "chunk_size": c.chunk_size,
        "return_last_states": True,
        "autocast_kernel_dtype": _kernel_dtype(c.dtype),
        "eps": c.eps,
        "inference_state_dtype": "float32",
        "ffn_proj_factor": c.ffn_proj_factor,
        "ffn_round_up_to_multiple_of": c.ffn_round_up_to_multiple_of,
        "gate_soft_cap": c.gate_soft_cap,
        "output_logit_soft_cap": c.output_logit_soft_cap,
        "weight_mode": weight_mode,
    }


def _hf_config(c: xLSTMLargeConfig, weight_mode: str, stored: str) -> dict:
    """The ``config.json`` transformers' ``xLSTMConfig`` reads (HF's names and aliases)."""
    for field in ("gate_soft_cap", "output_logit_soft_cap"):
        if getattr(c, field) is None:
            raise PretrainedError(
                f"{field}=None (no cap): transformers' xLSTMConfig needs a number there, so "
                "this model cannot be saved in the hf format; use fmt='xlstm_large'."
            )
    return {
        "architectures": ["xLSTMForCausalLM"],
        "model_type": "xlstm",
        "hidden_size": c.embedding_dim,
        "num_hidden_layers": c.num_blocks,
        **_torch_config(c, weight_mode),
        "tie_word_embeddings": False,
        "use_cache": True,
        "dtype": stored,
    }


def _write_shards(model, folder: Path, fmt, weight_mode, max_shard_bytes, store) -> list[list[str]]:
    """Writes the state dict as ``shard-K`` files of at most ``max_shard_bytes`` (a larger
    tensor gets a file of its own); returns each file's tensor names."""
    # Every header fits in this: per parameter its name (a torch name is at most 16
    # characters longer than our path) and ~110 characters of dtype, shape and offsets.
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    reserve = 64 + sum(len(".".join(map(str, p))) + 192 for p, _ in flat)
    shards: list[list[str]] = []
    writer = None
    try:
        for name, value in iter_state_dict(model, fmt, weight_mode):
            value = value.astype(store, copy=False)
            if writer is None or (writer.nbytes and writer.nbytes + value.nbytes > max_shard_bytes):
                if writer is not None:
                    writer.close()
                writer = SafetensorsWriter(
                    folder / f"shard-{len(shards)}",
                    metadata={"format": "pt"},
                    header_reserve=reserve,
                    error=PretrainedError,
                )
                shards.append([])
            writer.add(name, value)
            shards[-1].append(name)
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return shards


def save_pretrained(
    model: xLSTMLarge,
    path: str | os.PathLike,
    *,
    fmt: str = "hf",
    weight_mode: str = "single",
    max_shard_bytes: int = 5 * 2**30,
    dtype: str | None = None,
) -> Path:
    """Writes ``model`` as a checkpoint folder that ``load_pretrained`` and the torch side
    read: ``fmt="hf"`` for transformers' ``xLSTMForCausalLM.from_pretrained`` (and
    ``AutoModelForCausalLM``), ``"xlstm_large"`` for ``xlstm.xlstm_large.from_pretrained``.

    The config selects the torch models' native kernels (``chunkwise--native_autograd``,
    any device) in inference mode, with the kernel dtype of our compute dtype. Weights over
    ``max_shard_bytes`` are split into shards (HF: ``model-0000K-of-0000N.safetensors`` and
    ``model.safetensors.index.json``; reference: ``model_K.safetensors``). Only the single
    layout goes to the torch loaders: transformers 5.24 cannot build a fused
    ``xLSTMForCausalLM`` (its ``_init_weights`` fails) and xlstm's ``from_pretrained`` reads
    single weights only; ``load_pretrained`` reads both. Tensors stream
    one at a time from the (possibly sharded) model to disk; everything is written to a
    hidden folder beside ``path`` and renamed into place at the end, so ``path`` is either
    complete or not there.

    Args:
        model: the model.
        path: a new (or empty) folder.
        fmt: ``"hf"`` or ``"xlstm_large"`` (``models.xlstm_large.convert.FORMATS``).
        weight_mode: ``"single"`` or ``"fused"`` weights.
        max_shard_bytes: the most tensor bytes per file.
        dtype: the stored dtype (``DTYPES``); default the parameters'.

    Returns:
        The folder.

    Raises:
        PretrainedError: ``path`` exists and is not an empty folder; a model the hf format
            cannot express (no soft cap; also ``ConfigError`` without an out norm).
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}; got {fmt!r}.")
    if weight_mode not in WEIGHT_MODES:
        raise ValueError(f"weight_mode must be one of {WEIGHT_MODES}; got {weight_mode!r}.")
    if not (isinstance(max_shard_bytes, int) and max_shard_bytes >= 1):
        raise ValueError(f"max_shard_bytes must be an integer >= 1; got {max_shard_bytes!r}.")
    stored = model.config.param_dtype if dtype is None else dtype
    if stored not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES} or None; got {dtype!r}.")
    dest = Path(path)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise PretrainedError(
            f"{dest}: exists and is not an empty folder; save_pretrained writes a whole new "
            "folder: give a new path, or remove this one first."
        )
    if fmt == "hf":
        config_name = HF_CONFIG
        config_text = json.dumps(_hf_config(model.config, weight_mode, stored), indent=2) + "\n"
    else:
        config_name = REF_CONFIG
        config_text = _yaml(dest / REF_CONFIG).safe_dump(
            _torch_config(model.config, weight_mode), sort_keys=False
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        shards = _write_shards(
            model, tmp, fmt, weight_mode, max_shard_bytes, np.dtype(jnp.dtype(stored))
        )
        n = len(shards)
        if n == 1:
            names = [SINGLE_FILE]
        elif fmt == "hf":
            names = [f"model-{k + 1:05d}-of-{n:05d}.safetensors" for k in range(n)]
        else:
            names = [f"model_{k}.safetensors" for k in range(n)]
        for k, name in enumerate(names):
            os.replace(tmp / f"shard-{k}", tmp / name)
        if fmt == "hf" and n > 1:
            total = sum((tmp / name).stat().st_size for name in names)
            index = {
                "metadata": {"total_size": total},
                "weight_map": {t: names[k] for k, tensors in enumerate(shards) for t in tensors},
            }
            (tmp / HF_INDEX).write_text(json.dumps(index, indent=2) + "\n")
        (tmp / config_name).write_text(config_text, encoding="utf-8")
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest

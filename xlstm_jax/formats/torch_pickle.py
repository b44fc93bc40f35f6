"""``torch.save`` files read without PyTorch and without executing anything.

A PyTorch checkpoint (``torch.save``'s zip format since PyTorch 1.6; a Lightning ``.ckpt``
is one) is a zip archive holding ``<prefix>/data.pkl``, a pickle whose tensors refer to raw
storages stored beside it as ``<prefix>/data/<key>``. ``read_torch_checkpoint`` unpickles it
with an unpickler that builds only dicts, lists, numbers, strings and tensors (as NumPy
arrays) and refuses every other object, so a crafted file cannot run code.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from xlstm_jax.formats.errors import CheckpointError

__all__ = ["read_torch_checkpoint"]


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

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: Path, error):
        super().__init__(file)
        self.archive, self.prefix, self.path, self.error = archive, prefix, path, error
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise self.error(
            f"{self.path}: the checkpoint pickles a {module}.{name}, which this reader does "
            "not build (it builds only tensors, numbers, strings and containers, and executes "
            "nothing); it is not a plain weights checkpoint."
        )

    def persistent_load(self, pid):
        # ("storage", storage type, key, location, numel)
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise self.error(f"{self.path}: unexpected persistent id {pid!r}.")
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


def read_torch_checkpoint(
    path: str | Path, *, error: type[CheckpointError] = CheckpointError
) -> dict:
    """The contents of a PyTorch ``torch.save`` zip file (a Lightning ``.ckpt``) with every
    tensor as a numpy array, without PyTorch and without executing anything.

    Args:
      path: the file.
      error: the ``CheckpointError`` subclass raised for every problem with the file.

    Returns:
      The pickled object (usually a dict), each tensor a NumPy array of its shape and dtype
      (bfloat16 widened to float32, which is exact).

    Raises:
      CheckpointError: (``error``) not a file, not a PyTorch zip checkpoint (e.g. the
        legacy format), damaged, or it pickles an object other than containers, numbers,
        strings and tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such checkpoint file.")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise error(
            f"{path}: not a PyTorch zip checkpoint (torch.save's format since PyTorch 1.6)."
        ) from None
    with archive:
        pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if not pkl:
            raise error(f"{path}: a zip file without data.pkl is not a torch checkpoint.")
        prefix = pkl[0][: -len("data.pkl")]
        try:
            pickled = io.BytesIO(archive.read(pkl[0]))
            return _SafeUnpickler(pickled, archive, prefix, path, error).load()
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
            if isinstance(e, error):
                raise
            raise error(f"{path}: the checkpoint is damaged ({e}).") from None

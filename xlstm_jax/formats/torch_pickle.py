"""``torch.save`` files read without PyTorch and without executing anything.

A PyTorch checkpoint (``torch.save``'s zip format since PyTorch 1.6; a Lightning ``.ckpt``
is one) is a zip archive holding ``<prefix>/data.pkl``, a pickle whose tensors refer to raw
storages stored beside it as ``<prefix>/data/<key>``. ``read_torch_checkpoint`` unpickles it
with an unpickler that builds only dicts, lists, numbers, strings and tensors (as NumPy
arrays) and refuses every other object, so a crafted file cannot run code.

The file is untrusted, so nothing is read before it is checked: each zip entry's declared
size against the archive (the zip's CRC then catches a changed byte), each storage's length
against the element count its pickle declares, and each tensor's offset, shape and strides
against the storage it views. Whatever still goes wrong inside the zip or pickle libraries
becomes the caller's ``CheckpointError``, so a damaged file never ends in a traceback nor in
a tensor read from outside its own bytes.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np

from xlstm_jax.formats.errors import CheckpointError, FormatError
from xlstm_jax.formats.tensors import fits_numpy

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

# Deflate cannot expand data by more than about 1032:1, so a compressed entry that declares
# more is lying about its size (torch itself stores entries uncompressed).
_MAX_DEFLATE_RATIO = 1032
# A tensor may repeat its storage's elements (a stride of 0, e.g. a saved ``expand``); it is
# built in memory, so beyond this it would let a few stored bytes ask for any amount.
_MAX_EXPANDED_BYTES = 2**30


class _StorageType:
    def __init__(self, name: str):
        self.name = name


def _is_count(x) -> bool:
    """A non-negative Python int (not a bool), as torch pickles offsets, sizes and strides."""
    return type(x) is int and x >= 0


def _short(x, limit: int = 200) -> str:
    text = repr(x) if not isinstance(x, str) else x
    return text if len(text) <= limit else text[:limit] + "..."


class _SafeUnpickler(pickle.Unpickler):
    """Builds only containers, numbers, strings and tensors; any other global is refused."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: Path, error, size):
        super().__init__(file)
        self.archive, self.prefix, self.path, self.error = archive, prefix, path, error
        self.archive_size = size
        # key -> (storage type name, array): a key read twice must keep its dtype.
        self.storages: dict[str, tuple[str, np.ndarray]] = {}
        self._allowed = {
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            ("builtins", "set"): set,
            ("builtins", "frozenset"): frozenset,
        }

    def damaged(self, problem: str) -> CheckpointError:
        return _damaged(self.path, problem, self.error)

    def find_class(self, module: str, name: str):
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise self.error(
            f"{self.path}: the checkpoint pickles a {_short(module)}.{_short(name)}, which this "
            "reader does not build (it builds only tensors, numbers, strings and containers, "
            "and executes nothing); it is not a plain weights checkpoint."
        )

    def persistent_load(self, pid):
        # torch writes ("storage", storage type, key, location, number of elements).
        ok = isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
        if not (ok and isinstance(pid[1], _StorageType) and _is_count(pid[4])):
            raise self.damaged(f"its pickle refers to a storage as {_short(pid)}")
        stype, key, numel = pid[1].name, str(pid[2]), pid[4]
        if key in self.storages:
            if self.storages[key][0] != stype:
                raise self.damaged(
                    f"storage {key!r} is read as both {self.storages[key][0]} and {stype}"
                )
            return self.storages[key][1]
        dt = _STORAGE_DTYPES[stype]
        itemsize = 2 if dt == "bfloat16" else np.dtype(dt).itemsize
        name = f"{self.prefix}data/{key}"
        info = _entry(self.archive, name, self.path, self.error, self.archive_size)
        if info.file_size != numel * itemsize:
            raise self.damaged(
                f"storage {key!r} holds {info.file_size} bytes; its pickle declares {numel} "
                f"elements of {itemsize} bytes ({stype})"
            )
        raw = self.archive.read(info)  # the zip's CRC check catches a changed byte here
        if dt == "bfloat16":
            bits = np.frombuffer(raw, np.uint16).astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(raw, dt)
        self.storages[key] = (stype, arr)
        return arr

    def _rebuild_tensor(self, storage, offset, size, stride, *_rest):
        """A tensor as torch rebuilds it: ``size`` elements of ``storage`` from ``offset`` on,
        ``stride`` elements apart; every index is checked to lie inside the storage."""
        if not any(storage is arr for _, arr in self.storages.values()):
            raise self.damaged(
                f"a tensor is built on {_short(type(storage).__name__)}, "
                "not on a storage of the file"
            )
        shapes_ok = isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list))
        shapes_ok = shapes_ok and len(size) == len(stride) and _is_count(offset)
        if not (shapes_ok and all(map(_is_count, [*size, *stride])) and fits_numpy(size)):
            raise self.damaged(
                f"a tensor has offset {_short(offset)}, size {_short(size)} and stride "
                f"{_short(stride)}, not counts of one length that NumPy can hold"
            )
        numel = math.prod(size)
        reach = (
            offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
            if numel
            else offset - 1
        )
        if reach >= len(storage):
            raise self.damaged(
                f"a tensor of size {tuple(size)}, stride {tuple(stride)} from element {offset} "
                f"needs elements up to {reach} of a storage of {len(storage)}"
            )
        if numel * storage.itemsize > max(storage.nbytes, _MAX_EXPANDED_BYTES):
            raise self.damaged(
                f"a tensor of size {tuple(size)} repeats its storage of {len(storage)} elements "
                f"to more than {_MAX_EXPANDED_BYTES} bytes"
            )
        if not size:
            return storage[offset : offset + 1].reshape(())
        itemsize = storage.itemsize
        view = np.lib.stride_tricks.as_strided(
            storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
        )
        return np.array(view)

    def _rebuild_parameter(self, tensor, *_rest):
        if not isinstance(tensor, np.ndarray):
            raise self.damaged(f"a parameter wraps {_short(type(tensor).__name__)}, not a tensor")
        return tensor


def _damaged(path: Path, problem: str, error: type[CheckpointError]) -> CheckpointError:
    return error(
        f"{path}: the checkpoint is damaged ({problem}). It is not a complete torch.save file: "
        "download it again, or save it again with torch.save."
    )


def _entry(archive: zipfile.ZipFile, name: str, path: Path, error, archive_size: int):
    """The zip entry ``name``, its declared sizes checked against the archive before any of
    its bytes are read."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise _damaged(path, f"it holds no {name}", error) from None
    if info.header_offset + info.compress_size > archive_size:
        raise _damaged(
            path,
            f"{name} claims {info.compress_size} bytes from byte {info.header_offset}; "
            f"the file has {archive_size}",
            error,
        )
    stored = info.compress_type == zipfile.ZIP_STORED
    limit = info.compress_size if stored else _MAX_DEFLATE_RATIO * info.compress_size + 64
    if info.file_size > limit:
        raise _damaged(
            path, f"{name} claims {info.file_size} bytes from {info.compress_size} stored", error
        )
    return info


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
        legacy format), damaged (truncated, a changed byte, sizes, offsets, shapes or
        strides that do not fit the bytes stored), or it pickles an object other than
        containers, numbers, strings and tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such checkpoint file.")
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed below, with the archive
    except OSError as e:  # no permission, ...: the zip library's errors come after this
        raise error(
            f"{path}: the checkpoint cannot be read ({e}); check its permissions."
        ) from None
    with file:
        return _read_archive(file, path, error)


def _read_archive(file, path: Path, error: type[CheckpointError]):
    """``read_torch_checkpoint`` on the opened ``file``."""
    try:
        archive = zipfile.ZipFile(file)
    except Exception:  # BadZipFile, or any zip library error on a damaged directory
        raise error(
            f"{path}: not a PyTorch zip checkpoint (torch.save's format since PyTorch 1.6)."
        ) from None
    with archive:
        pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if not pkl:
            raise error(f"{path}: a zip file without data.pkl is not a torch checkpoint.")
        prefix = pkl[0][: -len("data.pkl")]
        try:
            size = os.fstat(file.fileno()).st_size
            info = _entry(archive, pkl[0], path, error, size)
            pickled = io.BytesIO(archive.read(info))
            return _SafeUnpickler(pickled, archive, prefix, path, error, size).load()
        except FormatError:
            raise
        except Exception as e:
            # Anything the zip, zlib or pickle code raises here (a bad CRC, a truncated
            # pickle, an allowed constructor called with bad arguments, a memory or recursion
            # limit) means the file is not what torch.save wrote.
            raise _damaged(path, f"{type(e).__name__}: {_short(str(e))}", error) from None

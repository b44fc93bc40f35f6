"""Safetensors files, both ways, one tensor at a time: ``SafetensorsFile`` and
``SafetensorsWriter``.

A safetensors file is an 8-byte little-endian header length N, N bytes of UTF-8 JSON
(``{name: {"dtype": "BF16", "shape": [...], "data_offsets": [begin, end]}}`` and an
optional ``"__metadata__"`` of strings; trailing spaces allowed), then the tensors' bytes,
offsets relative to the first byte after the header. ``SafetensorsFile`` reads it with
positional reads into a fresh NumPy array per tensor rather than handing out views of an
mmap: mmap'd pages count toward the process's resident memory and stay there until the
kernel needs them back: the 7B in bfloat16 (12.8 GiB) peaked at 21.8 GiB (1.70x) through
views on a 24 GB machine, and at 13.4 GiB (1.05x) read this way, its own parameters plus
about one tensor (``benchmarks/load_pretrained.py``).

The file is untrusted: the header is checked whole before any tensor is read (its length
against the file, each entry's dtype, shape and byte range, the ranges tiling the data to
the end of the file), and whatever the JSON or file layers raise becomes the error below,
so a damaged file never ends in a traceback nor in an array read from the wrong bytes.

Both raise ``CheckpointError`` by default; a caller whose users catch a subclass (the
checkpoint folders' ``PretrainedError``) passes it as ``error``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

from xlstm_jax.formats.errors import CheckpointError
from xlstm_jax.formats.jsonfile import unique_keys
from xlstm_jax.formats.tensors import fits_numpy

__all__ = ["DTYPE_NAMES", "FLOAT_NAMES", "SafetensorsFile", "SafetensorsWriter"]

_MAX_HEADER = 100 * 2**20  # safetensors' own limit on the header's size

# safetensors dtype name <-> NumPy dtype (bfloat16 and float8 from ml_dtypes).
_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U64": np.dtype(np.uint64),
    "U32": np.dtype(np.uint32),
    "U16": np.dtype(np.uint16),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
DTYPE_NAMES = {dt: name for name, dt in _DTYPES.items()}
"""NumPy dtype -> its safetensors name (``"BF16"``, ...)."""
FLOAT_NAMES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
"""The safetensors names of the floating dtypes."""


def _damaged(path: Path, problem: str, error: type[CheckpointError]) -> CheckpointError:
    return error(
        f"{path}: {problem}. The file is damaged or not a safetensors file: download or save "
        "it again."
    )


def _short(x, limit: int = 200) -> str:
    text = repr(x)
    return text if len(text) <= limit else text[:limit] + "..."


def _entry_ok(e) -> bool:
    """Whether a header entry is ``{dtype, shape, data_offsets}`` of a known dtype, a shape
    NumPy can hold and two offsets, all non-negative ints (JSON's true is not a count)."""
    if not (isinstance(e, dict) and isinstance(e.get("dtype"), str) and e["dtype"] in _DTYPES):
        return False
    shape, offsets = e.get("shape"), e.get("data_offsets")
    if not (isinstance(shape, list) and isinstance(offsets, list) and len(offsets) == 2):
        return False
    return all(type(x) is int and x >= 0 for x in shape + offsets) and fits_numpy(shape)


def _read_exact(f, offset: int, out: memoryview, path: Path, error) -> None:
    """Fills ``out`` with the bytes of ``f`` from ``offset`` on (raw reads may come short)."""
    done = 0
    try:
        f.seek(offset)
        while done < len(out):
            n = f.readinto(out[done:])
            if not n:
                raise _damaged(path, f"it ends inside a tensor (at byte {offset + done})", error)
            done += n
    except OSError as e:
        raise error(f"{path}: reading byte {offset + done} failed ({e}); check the disk.") from None


def _bounds(index, shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """(start, stop) per axis of ``shape`` for ``index`` (slices of step 1 within it)."""
    index = tuple(index)
    if len(index) > len(shape) or not all(
        isinstance(s, slice) and s.step in (None, 1) for s in index
    ):
        raise IndexError(f"index {index!r}: expected slices of step 1 into shape {shape}")
    bounds = []
    for i, dim in enumerate(shape):
        s = index[i] if i < len(index) else slice(None)
        start, stop = 0 if s.start is None else s.start, dim if s.stop is None else s.stop
        if not (type(start) is int and type(stop) is int and 0 <= start <= stop <= dim):
            raise IndexError(f"index {index!r} is outside shape {shape}")
        bounds.append((start, stop))
    return bounds


class SafetensorsFile(Mapping):
    """A safetensors file as a read-only mapping name -> NumPy array, each tensor read from
    disk when asked for (a fresh array; nothing is cached or mapped).

    The header is checked when the file is opened: JSON of the right shape, known dtypes,
    each tensor's byte range matching its shape, the ranges tiling the data exactly to the
    end of the file. ``info(name)`` gives (dtype, shape) without reading; ``metadata`` is the
    header's ``__metadata__`` (or None). Use it as a context manager, or ``close()`` it.

    Args:
        path: the file.
        error: the ``CheckpointError`` subclass raised for a missing or damaged file.

    Raises:
        CheckpointError: (``error``) a missing file, a malformed header, or a file that ends
            inside a tensor.
    """

    def __init__(self, path: str | os.PathLike, *, error: type[CheckpointError] = CheckpointError):
        self.path = Path(path)
        self._error = error
        if sys.byteorder != "little":  # pragma: no cover - every supported host is little
            raise error(f"{self.path}: safetensors data are little-endian; this host is not.")
        try:
            self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        except FileNotFoundError:
            raise error(
                f"{self.path}: no such file; check the path (or download the checkpoint again)."
            ) from None
        except OSError as e:  # a folder, no permission, ...
            raise error(
                f"{self.path}: cannot be read ({e}); check the path and its permissions."
            ) from None
        try:
            self._entries, self.metadata, self._data_start = self._read_header()
        except BaseException:
            self._file.close()
            raise

    def _read_header(self):
        path, size = self.path, os.fstat(self._file.fileno()).st_size

        def damaged(problem: str) -> CheckpointError:
            return _damaged(path, problem, self._error)

        if size < 8:
            raise damaged(f"it has {size} bytes, fewer than the 8 of the header's length")
        length = bytearray(8)
        _read_exact(self._file, 0, memoryview(length), path, self._error)
        n = int.from_bytes(length, "little")
        if n > _MAX_HEADER or 8 + n > size:
            raise damaged(f"its header claims {n} bytes; the file has {size}")
        raw = bytearray(n)
        _read_exact(self._file, 8, memoryview(raw), path, self._error)
        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=unique_keys)
        except (ValueError, RecursionError) as err:
            # ValueError covers bytes that are not UTF-8, text that is not JSON, a key given
            # twice and an integer too long to parse; RecursionError, nesting too deep.
            raise damaged(f"its header is not JSON ({_short(str(err))})") from None
        if not isinstance(header, dict):
            raise damaged("its header is not a JSON object")
        metadata = header.pop("__metadata__", None)
        if metadata is not None and not (
            isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
        ):
            raise damaged("its __metadata__ is not a mapping of strings")
        entries = {}
        for name, e in header.items():
            if not _entry_ok(e):
                raise damaged(
                    f"its entry for {_short(name)} is not {{dtype, shape, data_offsets}} of a "
                    f"known dtype and counts NumPy can hold: {_short(e)}"
                )
            dtype, shape = _DTYPES[e["dtype"]], e["shape"]
            begin, end = e["data_offsets"]
            if end - begin != math.prod(shape) * dtype.itemsize:
                raise damaged(
                    f"{_short(name)} spans bytes {begin}..{end}, not the size of {dtype} "
                    f"{_short(shape)}"
                )
            entries[name] = (dtype, tuple(shape), begin, end)
        entries = dict(sorted(entries.items(), key=lambda item: item[1][2]))
        at = 0
        for name, (_, _, begin, end) in entries.items():
            if begin != at:
                raise damaged(f"{_short(name)} starts at data byte {begin}, expected {at}")
            at = end
        if 8 + n + at != size:
            raise damaged(f"its tensors end at byte {8 + n + at}; the file has {size}")
        return entries, metadata, 8 + n

    def info(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        """(dtype, shape) of tensor ``name``, from the header."""
        dtype, shape, _, _ = self._entries[name]
        return dtype, shape

    def __getitem__(self, name: str) -> np.ndarray:
        return self._whole(name)

    def _whole(self, name: str) -> np.ndarray:
        dtype, shape, begin, _ = self._entries[name]
        out = np.empty(shape, dtype)
        _read_exact(
            self._file,
            self._data_start + begin,
            memoryview(out.reshape(-1).view(np.uint8)),
            self.path,
            self._error,
        )
        return out

    def read_slice(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
        """``self[name][index]``, reading only the bytes it holds (a host placing a tensor
        into its devices' shards reads just their slices).

        The data are row-major, so for fixed indices of the axes before the last one
        ``index`` cuts, its range there (with the whole axes after it) is one contiguous
        run of bytes: one positional read per run.

        Args:
            name: the tensor.
            index: one ``slice`` (step 1, bounds within the axis, None for an end) per
                leading axis, as ``jax.make_array_from_callback`` gives; axes past it whole.

        Raises:
            IndexError: an index that is not such slices within the tensor's shape.
            CheckpointError: (``error``) the file ends inside the tensor, or a read fails.
        """
        dtype, shape, begin, _ = self._entries[name]
        bounds = _bounds(index, shape)
        out = np.empty(tuple(stop - start for start, stop in bounds), dtype)
        cut = [i for i, (start, stop) in enumerate(bounds) if (start, stop) != (0, shape[i])]
        if out.size == 0 or not cut:
            return out if out.size == 0 else self._whole(name)
        k = cut[-1]
        strides = [dtype.itemsize * math.prod(shape[i + 1 :]) for i in range(len(shape))]
        run = out.shape[k] * strides[k]
        flat = memoryview(out.reshape(-1).view(np.uint8))
        base = self._data_start + begin + bounds[k][0] * strides[k]
        for j, outer in enumerate(np.ndindex(*out.shape[:k])):
            at = base + sum((bounds[i][0] + o) * strides[i] for i, o in enumerate(outer))
            _read_exact(self._file, at, flat[j * run : (j + 1) * run], self.path, self._error)
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SafetensorsWriter:
    """Writes one safetensors file tensor by tensor, without holding more than the tensor
    being written.

    The tensors' bytes go to ``path + ".partial"`` after ``header_reserve`` bytes kept for
    the header; ``close()`` writes the header there (padded with spaces, as the format
    allows; a header larger than the reserve moves the data up once) and renames the file
    to ``path``; ``abort()`` (or an exception in a ``with`` block) deletes it, so ``path``
    is either complete or absent. The data start at a multiple of 8 bytes. ``error`` is the
    ``CheckpointError`` subclass ``add`` raises for a name given twice or a dtype
    safetensors cannot hold.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        metadata: Mapping[str, str] | None = None,
        header_reserve: int = 0,
        error: type[CheckpointError] = CheckpointError,
    ):
        self.path = Path(path)
        self._error = error
        self._partial = self.path.with_name(self.path.name + ".partial")
        self._metadata = dict(metadata) if metadata else None
        self._reserve = -(-header_reserve // 8) * 8
        self._entries: dict[str, dict] = {}
        self.nbytes = 0  # of tensor data written so far
        self._file = open(self._partial, "w+b")  # noqa: SIM115 - closed by close()/abort()
        self._file.seek(8 + self._reserve)

    def add(self, name: str, array: np.ndarray) -> None:
        """Appends tensor ``name`` (any dtype safetensors knows; written C-contiguous)."""
        array = np.asarray(array, order="C")  # (ascontiguousarray makes a 0-d array 1-d)
        if name in self._entries or name == "__metadata__":
            raise self._error(f"{self.path}: tensor name {name!r} given twice (or reserved).")
        if array.dtype not in DTYPE_NAMES:
            raise self._error(
                f"{self.path}: {name!r} has dtype {array.dtype}, which safetensors cannot hold; "
                f"cast it to one of {sorted(map(str, DTYPE_NAMES))}."
            )
        self._file.write(array.reshape(-1).view(np.uint8).data)
        self._entries[name] = {
            "dtype": DTYPE_NAMES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [self.nbytes, self.nbytes + array.nbytes],
        }
        self.nbytes += array.nbytes

    def close(self) -> Path:
        """Writes the header and moves the file into place; returns its path."""
        header = dict(self._entries)
        if self._metadata is not None:
            header = {"__metadata__": self._metadata, **header}
        text = json.dumps(header, separators=(",", ":")).encode()
        if len(text) <= self._reserve:
            self._file.seek(0)
            self._file.write(self._reserve.to_bytes(8, "little") + text.ljust(self._reserve))
            self._file.close()
        else:  # the reserve was too small: a new file with the data after the full header
            text = text.ljust(-(-len(text) // 8) * 8)
            moved = self._partial.with_name(self._partial.name + "2")
            with open(moved, "wb") as out:
                out.write(len(text).to_bytes(8, "little") + text)
                self._file.seek(8 + self._reserve)
                shutil.copyfileobj(self._file, out, 2**24)
            self._file.close()
            os.replace(moved, self._partial)
        os.replace(self._partial, self.path)
        return self.path

    def abort(self) -> None:
        """Closes and deletes the partial file."""
        self._file.close()
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

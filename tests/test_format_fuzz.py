"""The checkpoint readers of ``xlstm_jax.formats`` against hostile files: the cases found by
probing (a tensor larger than its stored bytes, a byte changed inside a stored tensor, an
allowed constructor called with bad arguments, crafted safetensors headers), then a fuzz of
each format: random truncations, bit flips and crafted headers applied to a small valid file
made here, each of which must either load or raise a ``FormatError``, never another
exception and never hang.

The fuzz runs ``XLSTM_JAX_FUZZ_COUNT`` mutations per format (40 by default, with the fixed
seed ``XLSTM_JAX_FUZZ_SEED``, so CI sees the same files every time); set them to search for
more.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import struct
import zipfile

import ml_dtypes
import numpy as np
import pytest
from helpers import FUZZ_COUNT, FUZZ_SEED, HungError, deadline  # noqa: F401

from xlstm_jax.formats.errors import CheckpointError, FormatError, PretrainedError
from xlstm_jax.formats.safetensors import SafetensorsFile, SafetensorsWriter
from xlstm_jax.formats.torch_pickle import read_torch_checkpoint

COUNT, SEED = FUZZ_COUNT, FUZZ_SEED


# --- torch.save files made by hand: the opcodes torch's pickles use, without torch ---------


def _frag(x) -> bytes:
    """The pickle opcodes that push ``x`` (no protocol header, no STOP)."""
    return pickle.dumps(x, protocol=2)[2:-1]


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _tensor(key, numel, offset, size, stride, stype="FloatStorage") -> bytes:
    """``_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`` with the
    storage loaded by persistent id, as ``torch.save`` writes a tensor."""
    pid = b"(" + _frag("storage") + _global("torch", stype) + _frag(key) + _frag("cpu")
    pid += _frag(numel) + b"tQ"
    args = pid + _frag(offset) + _frag(tuple(size)) + _frag(tuple(stride)) + _frag(False)
    args += _global("collections", "OrderedDict") + b")R"
    return _global("torch._utils", "_rebuild_tensor_v2") + b"(" + args + b"tR"


def _dict(items: dict[str, bytes]) -> bytes:
    """A pickle of a dict whose values are the given opcodes."""
    body = b"".join(_frag(k) + v + b"s" for k, v in items.items())
    return b"\x80\x02}" + body + b"."


def _torch_zip(pkl: bytes, storages: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        for key, raw in storages.items():
            z.writestr(f"archive/data/{key}", raw)
    return out.getvalue()


W = np.arange(6, dtype=np.float32)
B = np.array([7, -8, 9], np.int64)


def _handmade() -> bytes:
    """A small valid checkpoint: a (2, 3) float32 weight, its transposed view and a scalar
    share one storage; an int64 vector has its own."""
    pkl = _dict(
        {
            "w": _tensor("0", 6, 0, (2, 3), (3, 1)),
            "wt": _tensor("0", 6, 0, (3, 2), (1, 3)),
            "s": _tensor("0", 6, 5, (), ()),
            "b": _tensor("1", 3, 0, (3,), (1,), "LongStorage"),
        }
    )
    return _torch_zip(pkl, {"0": W.tobytes(), "1": B.tobytes()})


def test_handmade_checkpoint_reads_as_written(tmp_path):
    (tmp_path / "m.ckpt").write_bytes(_handmade())
    got = read_torch_checkpoint(tmp_path / "m.ckpt")
    np.testing.assert_array_equal(got["w"], W.reshape(2, 3))
    np.testing.assert_array_equal(got["wt"], W.reshape(2, 3).T)
    assert got["s"].shape == () and got["s"] == 5
    np.testing.assert_array_equal(got["b"], B)
    assert got["b"].dtype == np.int64


class _CallerError(CheckpointError):
    """A caller's own error class (TiRex passes its ``TiRexCheckpointError``), which every
    refusal must be."""


@pytest.mark.parametrize(
    "tensor, match",
    [
        (_tensor("0", 6, 0, (4, 4), (4, 1)), "needs elements up to 15 of a storage of 6"),
        (_tensor("0", 6, 5, (2,), (1,)), "needs elements up to 6 of a storage of 6"),
        (_tensor("0", 6, 7, (), ()), "needs elements up to 7"),
        (_tensor("0", 6, 7, (0,), (1,)), "needs elements up to 6"),
        (_tensor("0", 600, 0, (6,), (1,)), "holds 24 bytes; its pickle declares 600"),
        (_tensor("0", 6, 0, (2, 3), (3,)), "not counts of one length"),
        (_tensor("0", 6, -1, (2,), (1,)), "not counts"),
        (_tensor("0", 6, 0, (1,) * 70, (1,) * 70), "NumPy can hold"),
        (_tensor("0", 6, 0, (2**31, 2**31), (0, 0)), "repeats its storage"),
        (_tensor("9", 6, 0, (6,), (1,)), "holds no archive/data/9"),
    ],
    ids=[
        "past_the_end",
        "one_past",
        "scalar_past",
        "empty_past",
        "numel_over_bytes",
        "stride_rank",
        "negative_offset",
        "too_many_dims",
        "expanded",
        "missing_storage",
    ],
)
def test_a_tensor_outside_its_stored_bytes_is_refused(tmp_path, tensor, match):
    """Found by probing: a declared size larger than the bytes stored was read past the end
    of its buffer (and forecast from garbage)."""
    path = tmp_path / "model.ckpt"
    path.write_bytes(_torch_zip(_dict({"w": tensor}), {"0": W.tobytes()}))
    with pytest.raises(_CallerError, match=match) as info:
        read_torch_checkpoint(path, error=_CallerError)
    assert str(path) in str(info.value) and "download it again" in str(info.value)


def test_a_byte_changed_in_a_stored_tensor_is_refused(tmp_path):
    """Found by probing: a flipped byte inside a stored tensor ended in a BadZipFile
    traceback; the zip's CRC catches it and the reader names the file."""
    data = bytearray(_handmade())
    at = data.index(W.tobytes()) + 9
    data[at] ^= 0x40
    path = tmp_path / "model.ckpt"
    path.write_bytes(bytes(data))
    with pytest.raises(_CallerError, match="damaged.*CRC") as info:
        read_torch_checkpoint(path, error=_CallerError)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "value",
    [
        _global("collections", "OrderedDict") + _frag((1, 2, 3)) + b"R",
        _global("builtins", "set") + _frag((5,)) + b"R",
        _global("builtins", "frozenset") + b"(]]tR",  # a set of lists: unhashable
        _global("torch._utils", "_rebuild_tensor_v2") + _frag((1,)) + b"R",
        _global("torch._utils", "_rebuild_tensor_v2") + _frag(("x", 0, (1,), (1,))) + b"R",
        _global("torch._utils", "_rebuild_parameter") + _frag(("x", False)) + b"R",
        _global("torch", "FloatStorage") + _frag(()) + b"R",  # a storage type is not callable
        b"]}]s",  # a dict key that is a list
    ],
    ids=["odict", "set", "frozenset", "rebuild_1_arg", "rebuild_on_str", "param", "storage", "key"],
)
def test_an_allowed_constructor_with_bad_arguments_is_refused(tmp_path, value):
    """Found by probing: a pickle calling an allowed constructor with bad arguments ended in
    a TypeError traceback."""
    path = tmp_path / "model.ckpt"
    path.write_bytes(_torch_zip(_dict({"w": value}), {}))
    with pytest.raises(PretrainedError, match="damaged") as info:
        read_torch_checkpoint(path, error=PretrainedError)
    assert str(path) in str(info.value)


def _mutate_zip(rng: random.Random, data: bytes, storages: list[bytes]) -> bytes:
    data = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0:  # truncated anywhere
        return bytes(data[: rng.randrange(len(data))])
    if kind == 1:  # one bit flipped anywhere
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 2:  # a bit flipped inside a stored tensor
        raw = rng.choice(storages)
        at = data.index(raw) + rng.randrange(len(raw))
        data[at] ^= 1 << rng.randrange(8)
    elif kind == 3:  # a span overwritten with random bytes
        at = rng.randrange(len(data))
        n = rng.randint(1, 16)
        data[at : at + n] = bytes(rng.randrange(256) for _ in range(n))
    else:  # a consistent zip whose pickle declares random offsets, sizes and strides
        ndim = rng.randint(0, 3)
        size = [rng.choice([0, 1, 2, 3, 7, 2**40]) for _ in range(ndim)]
        stride = [rng.choice([0, 1, 2, 3, -1, 2**40]) for _ in range(ndim)]
        if rng.random() < 0.3:
            stride = stride[1:]
        numel = rng.choice([0, 3, 6, 7, 2**62])
        tensor = _tensor("0", numel, rng.choice([0, 1, 5, 6, 7, -3]), size, stride)
        return _torch_zip(_dict({"w": tensor}), {"0": W.tobytes()})
    return bytes(data)


def _fuzz_torch(tmp_path, seed_file: bytes, storages: list[bytes]) -> dict[str, int]:
    rng = random.Random(SEED)
    outcome = {"loaded": 0, "refused": 0}
    path = tmp_path / "fuzz.ckpt"
    for _ in range(COUNT):
        path.write_bytes(_mutate_zip(rng, seed_file, storages))
        try:
            with deadline(5):
                read_torch_checkpoint(path)
            outcome["loaded"] += 1
        except FormatError:
            outcome["refused"] += 1
    return outcome


def test_fuzz_handmade_torch_checkpoint(tmp_path):
    outcome = _fuzz_torch(tmp_path, _handmade(), [W.tobytes(), B.tobytes()])
    assert outcome["refused"] > 0


@pytest.mark.reference
def test_fuzz_torch_save_checkpoint(tmp_path):
    """The same fuzz from a file ``torch.save`` wrote (a Lightning-style checkpoint)."""
    torch = pytest.importorskip("torch", reason="torch.save makes the valid file to mutate")
    sd = {
        "w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "h": torch.arange(4, dtype=torch.bfloat16),
        "n": torch.tensor([1, 2, 3]),
    }
    buf = io.BytesIO()
    torch.save({"state_dict": sd, "epoch": 3}, buf)
    (tmp_path / "valid.ckpt").write_bytes(buf.getvalue())
    got = read_torch_checkpoint(tmp_path / "valid.ckpt")["state_dict"]
    for k, v in sd.items():
        np.testing.assert_array_equal(got[k], v.float().numpy() if k == "h" else v.numpy())
    raw = [v.view(torch.uint8).numpy().tobytes() for v in sd.values()]
    outcome = _fuzz_torch(tmp_path, buf.getvalue(), raw)
    assert outcome["refused"] > 0


# --- safetensors ---------------------------------------------------------------------------


def _valid_safetensors(path) -> dict[str, np.ndarray]:
    tensors = {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4),
        "h": np.arange(5).astype(ml_dtypes.bfloat16),
        "n": np.array([1, -2], np.int64),
        "s": np.float32(2.5),
        "e": np.zeros((0, 3), np.float16),
    }
    with SafetensorsWriter(path, metadata={"format": "np"}) as w:
        for name, value in tensors.items():
            w.add(name, value)
    return tensors


def _safetensors_bytes(header, data: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


CRAFTED = {
    "short_file": (b"\x01\x02", "fewer than the 8"),
    "huge_header_length": (struct.pack("<Q", 2**63) + b"{}", "header claims"),
    "header_past_the_end": (struct.pack("<Q", 100) + b"{}", "header claims"),
    "not_utf8": (_safetensors_bytes(b"\xff\xfe{}"), "not JSON"),
    "not_json": (_safetensors_bytes(b"{not json"), "not JSON"),
    "deep_nesting": (_safetensors_bytes(b"[" * 100_000), "not JSON"),
    "long_integer": (_safetensors_bytes(b'{"a": ' + b"9" * 5000 + b"}"), "not JSON"),
    "duplicate_key": (
        _safetensors_bytes(b'{"a": %s, "a": %s}' % ((json.dumps(_entry()).encode(),) * 2)),
        "appears twice",
    ),
    "not_an_object": (_safetensors_bytes([1, 2]), "not a JSON object"),
    "bad_metadata": (_safetensors_bytes({"__metadata__": {"a": 1}}), "__metadata__"),
    "unknown_dtype": (_safetensors_bytes({"a": _entry(dtype="F128")}, bytes(8)), "'F128'"),
    "dtype_not_str": (_safetensors_bytes({"a": _entry(dtype=4)}, bytes(8)), "not {dtype"),
    "negative_offset": (_safetensors_bytes({"a": _entry(offsets=(-8, 0))}, bytes(8)), "not {"),
    "float_shape": (_safetensors_bytes({"a": _entry(shape=(2.0,))}, bytes(8)), "not {"),
    "bool_shape": (_safetensors_bytes({"a": _entry(shape=(True, 2))}, bytes(8)), "not {"),
    "too_many_dims": (_safetensors_bytes({"a": _entry(shape=(1,) * 70, offsets=(0, 4))}), "not"),
    "huge_empty_dims": (
        _safetensors_bytes({"a": _entry(shape=(0, 2**62, 2**62), offsets=(0, 0))}),
        "NumPy can hold",
    ),
    "beyond_numpy": (
        _safetensors_bytes({"a": _entry(shape=(2**40, 2**40), offsets=(0, 2**82))}, bytes(8)),
        "NumPy can hold",
    ),
    "huge_size": (
        _safetensors_bytes({"a": _entry(shape=(2**30, 2**4), offsets=(0, 2**36))}, bytes(8)),
        "tensors end at byte",
    ),
    "offsets_not_a_list": (_safetensors_bytes({"a": _entry(offsets="x")}, bytes(8)), "not {"),
    "size_mismatch": (_safetensors_bytes({"a": _entry(shape=(3,))}, bytes(8)), "not the size"),
    "overlap": (
        _safetensors_bytes({"a": _entry(), "b": _entry(offsets=(4, 12))}, bytes(12)),
        "starts at data byte 4, expected 8",
    ),
    "gap": (_safetensors_bytes({"a": _entry(offsets=(4, 12))}, bytes(12)), "expected 0"),
    "data_past_the_end": (_safetensors_bytes({"a": _entry()}, bytes(4)), "tensors end"),
    "trailing_bytes": (_safetensors_bytes({"a": _entry()}, bytes(12)), "tensors end"),
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_a_crafted_safetensors_header_is_refused(tmp_path, name):
    data, match = CRAFTED[name]
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    with pytest.raises(PretrainedError, match=match) as info:
        SafetensorsFile(path, error=PretrainedError)
    assert str(path) in str(info.value)


def test_a_folder_in_place_of_a_safetensors_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="cannot be read"):
        SafetensorsFile(tmp_path)


def _mutate_safetensors(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    (n,) = struct.unpack("<Q", data[:8])
    kind = rng.randrange(5)
    if kind == 0:  # truncated anywhere
        return bytes(data[: rng.randrange(len(data))])
    if kind == 1:  # a bit flipped anywhere (in the data it cannot be seen: values differ)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 2:  # a bit flipped in the length or the header
        data[rng.randrange(8 + n)] ^= 1 << rng.randrange(8)
    elif kind == 3:  # bytes appended
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 9)))
    else:  # a header entry rewritten with a random dtype, shape or offsets
        header = json.loads(data[8 : 8 + n])
        name = rng.choice([k for k in header if k != "__metadata__"])
        field = rng.choice(["dtype", "shape", "data_offsets"])
        header[name][field] = rng.choice(
            [
                "F128",
                "I8",
                None,
                [],
                [2**64],
                [-1, 4],
                [0, 2**62, 2**62],
                [1] * 80,
                [3, 4],
                [0, 48],
                [48, 0],
                "x",
            ]
        )
        return _safetensors_bytes(header, bytes(data[8 + n :]))
    return bytes(data)


def test_fuzz_safetensors(tmp_path):
    tensors = _valid_safetensors(tmp_path / "valid.safetensors")
    seed_file = (tmp_path / "valid.safetensors").read_bytes()
    rng = random.Random(SEED)
    outcome = {"loaded": 0, "refused": 0}
    path = tmp_path / "fuzz.safetensors"
    for _ in range(COUNT):
        path.write_bytes(_mutate_safetensors(rng, seed_file))
        try:
            with deadline(5), SafetensorsFile(path) as f:
                got = {name: f[name] for name in f}
            # What loads is what the header declares: same names may differ in values only.
            for name, value in got.items():
                assert (value.dtype, value.shape) == f.info(name)
            outcome["loaded"] += 1
        except FormatError:
            outcome["refused"] += 1
    assert outcome["refused"] > 0
    with SafetensorsFile(tmp_path / "valid.safetensors") as f:
        for name, value in tensors.items():
            np.testing.assert_array_equal(f[name], value)

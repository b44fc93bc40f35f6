"""Checkpoint folders (``xlstm_jax.models.xlstm_large.checkpoint``) and our safetensors
reader and writer (``xlstm_jax.formats.safetensors``): round
trips through transformers' and the reference's own loaders and savers, sharding, dtypes,
and the error each broken folder gives.

One small config (E 128, so the qk dim 64 suits transformers' cache, which rounds it up to
a multiple of 64) and one jitted forward serve every logit comparison; every weight is
perturbed so that no parameter is left at its (often zero) initial value. Logits are
float32 and compared with the float32 tolerances of ``helpers.TOL``.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from helpers import TOL, require_reference

from xlstm_jax import xLSTMLarge, xLSTMLargeConfig
from xlstm_jax.formats.errors import PretrainedError
from xlstm_jax.formats.safetensors import SafetensorsFile, SafetensorsWriter
from xlstm_jax.models.xlstm_large import checkpoint
from xlstm_jax.models.xlstm_large.checkpoint import load_pretrained, save_pretrained

# HF's default ffn_proj_factor, so the configs read back from every folder are equal and the
# jitted forward compiles once.
CFG = dict(embedding_dim=128, num_heads=2, num_blocks=2, vocab_size=97, chunk_size=16)
CFG_FFN = 2.667
TOKENS = np.random.default_rng(0).integers(0, CFG["vocab_size"], (2, 23))
NATIVE = dict(
    chunkwise_kernel="chunkwise--native_autograd",
    sequence_kernel="native_sequence__native",
    step_kernel="native",
    mode="inference",
    autocast_kernel_dtype="float32",
    inference_state_dtype="float32",
)


@nnx.jit
def _logits(model, tokens):
    return model(tokens)


def logits(model) -> np.ndarray:
    return np.asarray(_logits(model, jnp.asarray(TOKENS)))


def assert_logits_close(ours, theirs) -> None:
    atol, rtol = TOL["float32"]
    np.testing.assert_allclose(ours, theirs, atol=atol, rtol=rtol)


def params(model) -> dict[str, np.ndarray]:
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in flat}


@pytest.fixture(scope="module")
def model() -> xLSTMLarge:
    config = xLSTMLargeConfig(**CFG, ffn_proj_factor=CFG_FFN)
    m = nnx.jit(lambda: xLSTMLarge(config, rngs=nnx.Rngs(0)))()
    rng = np.random.default_rng(1)
    state = nnx.state(m, nnx.Param)
    noisy = jax.tree.map(lambda x: x + 0.1 * rng.standard_normal(x.shape, np.float32), state)
    nnx.update(m, noisy)
    return m


def torch_perturb(torch, module) -> None:
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))


def torch_logits(torch, module) -> np.ndarray:
    with torch.no_grad():
        out = module(torch.from_numpy(TOKENS))
    return (out[0] if isinstance(out, tuple) else out.logits).numpy()


# --- safetensors ------------------------------------------------------------------------


def sample_tensors() -> dict[str, np.ndarray]:
    r = np.random.default_rng(3)
    return {
        "f32": r.standard_normal((3, 5)).astype(np.float32),
        "bf16": r.standard_normal((4, 2, 3)).astype(ml_dtypes.bfloat16),
        "f16": r.standard_normal(7).astype(np.float16),
        "f64": np.float64(r.standard_normal()),
        "i64": r.integers(-9, 9, (2, 2)),
        "u8": r.integers(0, 255, 6).astype(np.uint8),
        "bool": r.integers(0, 2, 5).astype(bool),
        "empty": np.zeros((0, 3), np.float32),
    }


@pytest.mark.parametrize("reserve", [0, 4096], ids=["header_moved", "header_reserved"])
def test_writer_and_reader_round_trip_every_dtype(tmp_path, reserve):
    tensors = sample_tensors()
    path = tmp_path / "t.safetensors"
    with SafetensorsWriter(path, metadata={"a": "b"}, header_reserve=reserve) as w:
        for name, value in tensors.items():
            w.add(name, value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]
    with SafetensorsFile(tmp_path / "t.safetensors") as f:
        assert f.metadata == {"a": "b"}
        assert list(f) == list(tensors)
        for name, value in tensors.items():
            assert f.info(name) == (value.dtype, value.shape)
            got = f[name]
            assert got.dtype == value.dtype
            np.testing.assert_array_equal(got, value)
    header_len = struct.unpack("<Q", (tmp_path / "t.safetensors").read_bytes()[:8])[0]
    assert header_len % 8 == 0


@pytest.mark.reference
def test_our_reader_gives_the_arrays_safetensors_reads(tmp_path):
    """Files safetensors writes read the same through ours, and files ours writes read the
    same through safetensors (numpy, and torch for bfloat16)."""
    torch, _ = require_reference()
    st_np = pytest.importorskip("safetensors.numpy")
    st_torch = pytest.importorskip("safetensors.torch")
    tensors = sample_tensors()
    plain = {k: np.atleast_1d(v) for k, v in tensors.items() if k != "bf16"}
    st_np.save_file(plain, tmp_path / "np.safetensors")
    with SafetensorsFile(tmp_path / "np.safetensors") as f:
        assert set(f) == set(plain)
        for name, value in plain.items():
            np.testing.assert_array_equal(f[name], value)
            assert f[name].dtype == value.dtype
    bf16 = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    st_torch.save_file({"w": bf16}, tmp_path / "bf16.safetensors")
    with SafetensorsFile(tmp_path / "bf16.safetensors") as f:
        ours = f["w"]
    assert ours.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(ours.view(np.int16), bf16.view(torch.int16).numpy())

    with SafetensorsWriter(tmp_path / "ours.safetensors", header_reserve=1000) as w:
        for name, value in tensors.items():
            w.add(name, value)
    theirs = st_torch.load_file(tmp_path / "ours.safetensors")
    assert set(theirs) == set(tensors)
    for name, value in tensors.items():
        t = theirs[name]
        if name == "bf16":
            np.testing.assert_array_equal(t.view(torch.int16).numpy(), value.view(np.int16))
        else:
            np.testing.assert_array_equal(t.numpy(), value)


# --- round trips ------------------------------------------------------------------------


@pytest.mark.reference
@pytest.mark.parametrize("max_shard_bytes", [5 * 2**30, 100_000], ids=["single_file", "sharded"])
def test_saved_hf_folder_loads_in_transformers_with_equal_logits(model, tmp_path, max_shard_bytes):
    torch, _ = require_reference()
    transformers = pytest.importorskip("transformers")
    folder = save_pretrained(model, tmp_path / "hf", max_shard_bytes=max_shard_bytes)
    sharded = (folder / "model.safetensors.index.json").is_file()
    assert sharded == (max_shard_bytes == 100_000)
    config = transformers.AutoConfig.from_pretrained(folder)
    assert type(config).__name__ == "xLSTMConfig"
    hf = transformers.xLSTMForCausalLM.from_pretrained(folder).eval()
    assert hf.dtype == torch.float32
    with torch.no_grad():
        theirs = hf(torch.from_numpy(TOKENS), use_cache=False).logits.numpy()
    assert_logits_close(logits(model), theirs)


@pytest.mark.reference
def test_transformers_save_pretrained_loads_with_equal_logits(tmp_path):
    torch, _ = require_reference()
    transformers = pytest.importorskip("transformers")
    cfg = transformers.xLSTMConfig(
        vocab_size=CFG["vocab_size"],
        hidden_size=CFG["embedding_dim"],
        num_hidden_layers=CFG["num_blocks"],
        num_heads=CFG["num_heads"],
        chunk_size=CFG["chunk_size"],
        **NATIVE,
    )
    torch.manual_seed(0)
    hf = transformers.xLSTMForCausalLM(cfg).float().eval()
    torch_perturb(torch, hf)
    hf.save_pretrained(tmp_path / "hf", max_shard_size="100KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    ours = load_pretrained(tmp_path / "hf")
    assert ours.config.param_dtype == "float32"
    with torch.no_grad():
        theirs = hf(torch.from_numpy(TOKENS), use_cache=False).logits.numpy()
    assert_logits_close(logits(ours), theirs)


@pytest.mark.reference
def test_reference_folder_loads_with_equal_logits_and_ours_loads_in_the_reference(model, tmp_path):
    torch, _ = require_reference()
    yaml = pytest.importorskip("yaml")
    st_torch = pytest.importorskip("safetensors.torch")
    xl = pytest.importorskip("xlstm.xlstm_large.model")
    from xlstm.xlstm_large.from_pretrained import load_from_pretrained

    cfg = xl.xLSTMLargeConfig(
        **CFG, ffn_proj_factor=CFG_FFN, return_last_states=True, weight_mode="single", **NATIVE
    )
    torch.manual_seed(0)
    ref = xl.xLSTMLarge(cfg).eval()
    torch_perturb(torch, ref)
    folder = tmp_path / "ref"
    folder.mkdir()
    st_torch.save_file(ref.state_dict(), folder / "model.safetensors")
    (folder / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg)))
    assert_logits_close(logits(load_pretrained(folder)), torch_logits(torch, ref))

    ours = save_pretrained(model, tmp_path / "ours", fmt="xlstm_large")
    assert sorted(p.name for p in ours.iterdir()) == ["config.yaml", "model.safetensors"]
    back = load_from_pretrained(ours).eval()
    assert_logits_close(logits(model), torch_logits(torch, back))


def test_sharded_fused_save_loads_back_exactly_and_reports_progress(model, tmp_path):
    folder = save_pretrained(model, tmp_path / "hf", weight_mode="fused", max_shard_bytes=150_000)
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    for shard in shards:  # each at most the limit, unless a single tensor is larger
        with SafetensorsFile(folder / shard) as f:
            sizes = [f[n].nbytes for n in f]
        assert sum(sizes) <= 150_000 or len(sizes) == 1
    calls = []
    loaded = load_pretrained(folder, progress=lambda n, total: calls.append((n, total)))
    total = len(index["weight_map"])
    assert calls == [(n, total) for n in range(1, total + 1)]
    want = params(model)
    got = params(loaded)
    assert set(got) == set(want)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)

    ref = save_pretrained(model, tmp_path / "ref", fmt="xlstm_large", max_shard_bytes=150_000)
    assert (ref / "model_0.safetensors").is_file() and (ref / "model_2.safetensors").is_file()
    for name, value in params(load_pretrained(ref)).items():
        np.testing.assert_array_equal(value, want[name], err_msg=name)


def test_bfloat16_checkpoint_loads_as_bfloat16_params(model, tmp_path):
    folder = save_pretrained(model, tmp_path / "bf16", dtype="bfloat16")
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    with SafetensorsFile(folder / "model.safetensors") as f:
        assert {f.info(n)[0] for n in f} == {np.dtype(ml_dtypes.bfloat16)}
    path = "backbone.blocks.0.ffn.proj_up.kernel"
    device = jax.devices()[0]
    sharding = jax.sharding.SingleDeviceSharding(device)
    loaded = load_pretrained(folder, shardings={path: sharding})
    assert (loaded.config.dtype, loaded.config.param_dtype) == ("bfloat16", "bfloat16")
    want = params(model)
    for name, value in params(loaded).items():
        assert value.dtype == jnp.bfloat16, name
        np.testing.assert_array_equal(value, want[name].astype(jnp.bfloat16), err_msg=name)
    kernel = loaded.backbone.blocks[0].ffn.proj_up.kernel.get_value()
    assert kernel.sharding == sharding
    wide = load_pretrained(folder, param_dtype="float32")
    assert wide.lm_head.kernel.get_value().dtype == jnp.float32


# --- errors -----------------------------------------------------------------------------


def test_failed_save_leaves_nothing_behind(model, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        yield "backbone.embeddings.weight", np.zeros((3, 3), np.float32)
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "iter_state_dict", broken)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(model, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_a_non_empty_folder_and_uncapped_models_in_hf(model, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(PretrainedError, match="full: exists and is not an empty folder"):
        save_pretrained(model, tmp_path / "full")
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    config = xLSTMLargeConfig(**CFG, gate_soft_cap=None)
    uncapped = nnx.eval_shape(lambda: xLSTMLarge(config, rngs=nnx.Rngs(0)))
    with pytest.raises(PretrainedError, match="gate_soft_cap=None.*fmt='xlstm_large'"):
        save_pretrained(uncapped, tmp_path / "new")
    assert not (tmp_path / "new").exists()


@pytest.fixture(scope="module")
def good_folder(model, tmp_path_factory) -> Path:
    return save_pretrained(model, tmp_path_factory.mktemp("good") / "hf", max_shard_bytes=150_000)


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _header(entries: dict) -> bytes:
    text = json.dumps(entries).encode()
    return struct.pack("<Q", len(text)) + text


# Each case breaks a copy of a good sharded folder (or writes a file) and names the message.
def _missing_folder(f: Path) -> Path:
    return f / "nowhere"


def _no_config(f: Path) -> Path:
    (f / "config.json").unlink()
    return f


def _bad_config(f: Path) -> Path:
    (f / "config.json").write_text("{not json")
    return f


def _no_weights(f: Path) -> Path:
    for p in f.glob("model*"):
        p.unlink()
    return f


def _pickle_only(f: Path) -> Path:
    _no_weights(f)
    (f / "pytorch_model.bin").write_bytes(b"\x80\x04.")
    return f


def _shard_absent(f: Path) -> Path:
    next(f.glob("model-00002-of-*.safetensors")).unlink()
    return f


def _index_disagrees(f: Path) -> Path:
    index = json.loads((f / "model.safetensors.index.json").read_text())
    name = next(iter(index["weight_map"]))
    index["weight_map"][name] = max(index["weight_map"].values())
    (f / "model.safetensors.index.json").write_text(json.dumps(index))
    return f


def _index_escapes(f: Path) -> Path:
    index = {"weight_map": {"a": "../elsewhere.safetensors"}}
    (f / "model.safetensors.index.json").write_text(json.dumps(index))
    return f


def _reference_gap(f: Path) -> Path:
    _no_weights(f)
    (f / "model_0.safetensors").write_bytes(_header({}))
    (f / "model_2.safetensors").write_bytes(_header({}))
    return f


def _single(f: Path, data: bytes) -> Path:
    _no_weights(f)
    (f / "model.safetensors").write_bytes(data)
    return f


ERROR_CASES = {
    "missing_folder": (_missing_folder, r"nowhere: no such folder.*downloads nothing"),
    "missing_config": (_no_config, r"no config.json .* or config.yaml"),
    "malformed_config": (_bad_config, r"config.json cannot be read \(not valid JSON"),
    "missing_weights": (_no_weights, r"no weights: expected model.safetensors"),
    "pickle_only": (_pickle_only, r"pytorch_model.bin\) are not read.*convert them"),
    "shard_absent": (_shard_absent, r"lists 1 shard\(s\) that are not here: model-00002-of"),
    "index_disagrees": (_index_disagrees, r"index.json and the shards disagree"),
    "index_escapes": (_index_escapes, r"index.json: names '../elsewhere.safetensors'"),
    "reference_gap": (_reference_gap, r"model_1.safetensors is missing"),
    "too_short": (lambda f: _single(f, b"\x01\x00"), r"model.safetensors: it has 2 bytes"),
    "header_too_long": (
        lambda f: _single(f, struct.pack("<Q", 10**6) + b"{}"),
        r"model.safetensors: its header claims 1000000 bytes",
    ),
    "header_not_json": (
        lambda f: _single(f, struct.pack("<Q", 3) + b"{x}"),
        r"model.safetensors: its header is not JSON",
    ),
    "unknown_dtype": (
        lambda f: _single(f, _header({"w": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}})),
        r"its entry for 'w' is not",
    ),
    "size_mismatch": (
        lambda f: _single(
            f, _header({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}) + bytes(4)
        ),
        r"'w' spans bytes 0..4, not the size of float32 \[2\]",
    ),
    "truncated": (
        lambda f: _single(
            f, _header({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}) + bytes(4)
        ),
        r"its tensors end at byte \d+; the file has \d+",
    ),
    "wrong_tensors": (
        lambda f: _single(
            f, _header({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}) + bytes(4)
        ),
        r"not an xLSTM-Large state dict",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_broken_folders_give_one_clear_error(good_folder, tmp_path, case):
    breaker, message = ERROR_CASES[case]
    folder = breaker(_copy(good_folder, tmp_path / "ckpt"))
    with pytest.raises(PretrainedError, match=message) as err:
        load_pretrained(folder)
    assert str(tmp_path) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_weights_that_do_not_fit_the_config_and_bad_overrides_name_the_fix(good_folder, tmp_path):
    folder = _copy(good_folder, tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    config.update(num_blocks=3, num_hidden_layers=3)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(PretrainedError, match="do not fit config.json.*check num_blocks"):
        load_pretrained(folder)
    with pytest.raises(PretrainedError, match="unknown override 'colour'"):
        load_pretrained(good_folder, colour="blue")

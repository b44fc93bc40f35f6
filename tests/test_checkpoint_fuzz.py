"""``Checkpointer.restore_latest`` against damaged Orbax checkpoints: each file of a small
real checkpoint (``_METADATA``, ``manifest.ocdbt``, the ``d/*`` data files,
``_CHECKPOINT_METADATA``, the ``meta`` item's JSON) truncated, bit-flipped or replaced with
garbage. Every restore must return the state that was saved (bit for bit) from that or an
older checkpoint, or raise ``CheckpointError``; never another exception, a hang, or other
values.

``XLSTM_JAX_FUZZ_COUNT`` mutations (40 by default; a restore of this checkpoint takes
about 50 ms) from the fixed seed ``XLSTM_JAX_FUZZ_SEED``.
"""

from __future__ import annotations

import random
import shutil

import jax
import numpy as np
import pytest
from helpers import FUZZ_COUNT, FUZZ_SEED, deadline, mutate_bytes

from train.runs.checkpoint import Checkpointer, CheckpointError

MODEL = {"num_blocks": 2, "embedding_dim": 8}


def _state(step: int) -> dict:
    return {
        "params": {
            "w": np.arange(12, dtype=np.float32).reshape(3, 4) * step,
            "b": np.array([1, -2, step], np.int32),
        },
        "opt_state": {"m": np.full((5,), 0.5 * step, np.float32)},
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt") / "checkpoints"
    ckpt = Checkpointer(root, keep=3, async_save=False)
    for step in (1, 2):
        ckpt.save(step, jax.tree.map(jax.numpy.asarray, _state(step)), {"model_config": MODEL})
    ckpt.close()
    return root


def _abstract():
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _state(1))


def _restore(root):
    ckpt = Checkpointer(root, keep=3, async_save=False, create=False)
    try:
        return ckpt.restore_latest(_abstract(), MODEL, lambda m: None)
    finally:
        ckpt.close()


def test_the_fixture_checkpoint_restores(saved):
    step, state, _ = _restore(saved)
    assert step == 2
    jax.tree.map(np.testing.assert_array_equal, state, _state(2))


def test_fuzz_checkpoint_files(saved, tmp_path):
    rng = random.Random(FUZZ_SEED)
    files = sorted(p.relative_to(saved) for p in (saved / "2").rglob("*") if p.is_file())
    assert any(p.name == "manifest.ocdbt" for p in files), files
    outcome = {"restored": 0, "older": 0, "refused": 0}
    for i in range(FUZZ_COUNT):
        root = tmp_path / str(i)
        shutil.copytree(saved, root)
        target = root / rng.choice(files)
        data = target.read_bytes()
        kind = rng.randrange(3)
        if kind == 0:
            data = mutate_bytes(rng, data)
        elif kind == 1 and data:
            at = rng.randrange(len(data))
            data = data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :]
        else:
            data = bytes(rng.randrange(256) for _ in range(rng.choice([0, 7, len(data)])))
        target.write_bytes(data)
        try:
            with deadline(30):
                got = _restore(root)
        except CheckpointError:
            outcome["refused"] += 1
            continue
        step, state, _ = got
        jax.tree.map(np.testing.assert_array_equal, state, _state(step))
        outcome["restored" if step == 2 else "older"] += 1
    assert outcome["older"] + outcome["refused"] > 0, outcome


@pytest.mark.parametrize(
    "checksums",
    [[1, 2], {"params": [1]}, {"params": {"['w']": "x"}}, {"params": None}, 5, "x"],
    ids=["list", "item_list", "value_str", "item_none", "int", "str"],
)
def test_a_meta_item_with_checksums_of_another_shape_is_refused(saved, tmp_path, checksums):
    """Found by probing: a meta item whose checksums were not a mapping of mappings ended in
    AttributeError ('list' object has no attribute 'get') instead of falling back."""
    import json

    root = tmp_path / "c"
    shutil.copytree(saved, root)
    meta_file = root / "2" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["checksums"] = checksums
    meta_file.write_text(json.dumps(meta))
    step, state, _ = _restore(root)  # checkpoint 2 is refused; 1 is intact
    assert step == 1
    jax.tree.map(np.testing.assert_array_equal, state, _state(1))

"""Run under 4 simulated CPU devices (see test_sharded_load.py).

A small xLSTM-Large checkpoint folder, written by ``save_pretrained`` (Hugging Face names
with fused weights, and the reference's with single ones), is read by ``initial_params``
(what ``train.init_from`` runs) into FSDP-over-4 shardings and without shardings: the
values agree bit for bit, each device holds its shard's shape, and the reader's byte
count shows each sharded tensor was read in slices (the file's bytes read once in all).
Prints one JSON line: per folder, the bytes in the files, bytes read, slice reads.
"""

import json
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from train.config import named
from train.config.overrides import apply_overrides
from train.loop.setup import build_state
from train.runs.load import initial_params
from xlstm_jax.formats.safetensors import SafetensorsFile
from xlstm_jax.layers.sharding import activate, make_mesh
from xlstm_jax.models.xlstm_large.checkpoint import save_pretrained
from xlstm_jax.registry import family_of

assert jax.device_count() == 4, jax.devices()
READS: list[tuple[str, int, int]] = []  # (tensor, bytes read, the tensor's bytes)
whole_read, slice_read = SafetensorsFile.__getitem__, SafetensorsFile.read_slice


def counted_whole(self, name):
    out = whole_read(self, name)
    READS.append((name, out.nbytes, out.nbytes))
    return out


def counted_slice(self, name, index):
    out = slice_read(self, name, index)
    dtype, shape = self.info(name)
    READS.append((name, out.nbytes, dtype.itemsize * int(np.prod(shape))))
    return out


SafetensorsFile.__getitem__, SafetensorsFile.read_slice = counted_whole, counted_slice

cfg = apply_overrides(named.load("xlstm_large_tiny"), ["model.num_blocks=2"])
mesh = make_mesh((1, 4, 1))
with activate(mesh, cfg.mesh.rules):
    setup = build_state(cfg, mesh)
model = family_of(cfg.model).model(cfg.model, rngs=nnx.Rngs(1))
out = {}
tmp = Path(tempfile.mkdtemp(dir=sys.argv[1] if len(sys.argv) > 1 else None))
for fmt, mode in [("hf", "fused"), ("xlstm_large", "single")]:
    folder = save_pretrained(model, tmp / fmt, fmt=fmt, weight_mode=mode)
    copy = jax.tree.map(lambda x: x, setup.param_state)
    ref = initial_params(folder, copy)
    READS.clear()
    with activate(mesh, cfg.mesh.rules):
        got = initial_params(folder, jax.tree.map(lambda x: x, setup.param_state),
                             shardings=setup.shardings["params"])  # fmt: skip
    sharded = 0
    for (path, new), old, sh in zip(
        jax.tree.leaves_with_path(got),
        jax.tree.leaves(ref),
        jax.tree.leaves(setup.shardings["params"]),
        strict=True,
    ):
        where = f"{fmt}: {jax.tree_util.keystr(path)}"
        assert new.dtype == old.dtype, where
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old), err_msg=where)
        assert new.sharding.is_equivalent_to(sh, new.ndim), (where, new.sharding, sh)
        for shard in new.addressable_shards:
            assert shard.data.shape == sh.shard_shape(new.shape), where
        sharded += sh.shard_shape(new.shape) != new.shape
    data = 0
    for f in folder.glob("*.safetensors"):
        with SafetensorsFile(f) as st:
            data += sum(st.info(n)[0].itemsize * int(np.prod(st.info(n)[1])) for n in st)
    out[fmt] = {
        "data_bytes": data,
        "bytes_read": sum(r[1] for r in READS),
        "slice_reads": sum(r[1] < r[2] for r in READS),
        "largest_read": max(r[1] for r in READS),
        "largest_tensor": max(r[2] for r in READS),
        "sharded_leaves": sharded,
    }
print(json.dumps(out))

"""Run under 4 simulated CPU devices (see test_sharded_init.py).

For the tiny config of each model family: the train state that ``build_state`` creates
sharded (one jitted function) equals, leaf by leaf and bit for bit, the one the model
built eagerly on one device gives, with FSDP over 4 devices (and, for xlstm_tiny, also on
a one-device mesh).
Prints one JSON line: per config, the number of leaves and how many are sharded.
"""

import json

import jax
import numpy as np
from flax import nnx

from train.config import named
from train.config.overrides import apply_overrides
from train.loop.setup import build_state
from xlstm_jax.layers.sharding import activate, make_mesh
from xlstm_jax.registry import family_of

assert jax.device_count() == 4, jax.devices()
# One block of each kind is enough (xlstm_tiny keeps its sLSTM block at 1).
CONFIGS = {
    "xlstm_tiny": ["model.num_blocks=2"],
    "xlstm_large_tiny": ["model.num_blocks=2"],
    "tirex_tiny": ["model.num_blocks=2"],
    "llama_mqar": [],
}


def eager_state(cfg, tx) -> dict:
    """The train state as ``build_state`` made it before: the model built eagerly."""
    model = family_of(cfg.model).model(cfg.model, rngs=nnx.Rngs(cfg.train.seed))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return {"params": params, "opt_state": tx.init(params)}


def sharded_state(cfg, devices: list) -> dict:
    mesh = make_mesh((1, len(devices), 1), devices)
    with activate(mesh, cfg.mesh.rules):
        setup = build_state(cfg, mesh)
        setup.state = setup.fresh_state()
        return setup


out = {}
for name, sets in CONFIGS.items():
    cfg = apply_overrides(named.load(name), sets)
    four = sharded_state(cfg, jax.devices())
    ref = eager_state(cfg, four.tx)
    # The one-device program for one family (CI's time): the rest compile once, sharded.
    one = [(sharded_state(cfg, jax.devices()[:1]), 1)] if name == "xlstm_tiny" else []
    for setup, n in (*one, (four, 4)):
        assert jax.tree.structure(setup.state) == jax.tree.structure(ref), name
        for (path, new), old in zip(
            jax.tree.leaves_with_path(setup.state), jax.tree.leaves(ref), strict=True
        ):
            where = f"{name} on {n} device(s): {jax.tree_util.keystr(path)}"
            assert new.dtype == old.dtype, where
            np.testing.assert_array_equal(np.asarray(new), np.asarray(old), err_msg=where)
    # Born sharded: every leaf has the sharding it is trained with, and no device holds
    # more than its shard of a sharded leaf.
    leaves = jax.tree.leaves(four.state)
    shardings = jax.tree.leaves(four.shardings)
    sharded = 0
    for x, sh in zip(leaves, shardings, strict=True):
        assert x.sharding.is_equivalent_to(sh, x.ndim), (name, x.sharding, sh)
        shard = x.addressable_shards[0].data.shape
        sharded += shard != x.shape
        assert shard == sh.shard_shape(x.shape)
    out[name] = {"leaves": len(leaves), "sharded": sharded}
print(json.dumps(out))

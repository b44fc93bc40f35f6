"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8 (see test_sharding.py).

The model's loss and gradients on several (data, fsdp, tensor) meshes equal the
unsharded ones; parameters are really sharded. Prints one JSON line of measurements.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from xlstm_jax import (
    mLSTMBlockConfig,
    mLSTMLayerConfig,
    sLSTMBlockConfig,
    sLSTMLayerConfig,
    xLSTMLarge,
    xLSTMLargeConfig,
    xLSTMLMModel,
    xLSTMLMModelConfig,
)
from xlstm_jax.layers.sharding import FSDP_MIN_SIZE, activate, make_mesh, param_shardings

assert len(jax.devices()) == 8, jax.devices()
form = sys.argv[1] if len(sys.argv) > 1 else "chunkwise"
if form == "large":  # the xLSTM-7B family's block: heads and the FFN split over tensor
    cfg = xLSTMLargeConfig(
        embedding_dim=64, num_heads=4, num_blocks=2, vocab_size=128, chunk_size=8, form="chunkwise"
    )
    model = xLSTMLarge(cfg, rngs=nnx.Rngs(0))
else:
    cfg = xLSTMLMModelConfig(
        mlstm_block=mLSTMBlockConfig(mlstm=mLSTMLayerConfig(num_heads=4, chunk_size=8, form=form)),
        slstm_block=sLSTMBlockConfig(slstm=sLSTMLayerConfig(num_heads=4)),
        num_blocks=3,
        slstm_at=(1,),
        embedding_dim=64,
        vocab_size=128,
    )
    model = xLSTMLMModel(cfg, rngs=nnx.Rngs(0))
graphdef, param_state = nnx.split(model)
params = nnx.to_pure_dict(param_state)
params = jax.tree.map(
    lambda p, k: p + 0.1 * jax.random.normal(k, p.shape, p.dtype),
    params,
    jax.tree.unflatten(
        jax.tree.structure(params),
        list(jax.random.split(jax.random.key(1), len(jax.tree.leaves(params)))),
    ),
)
tokens = jnp.asarray(np.random.default_rng(0).integers(0, 128, (8, 20)), jnp.int32)


def loss_fn(params, tokens):
    logits = nnx.merge(graphdef, params)(tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


ref_loss, ref_grads = jax.jit(jax.value_and_grad(loss_fn))(params, tokens)
ref_grads64 = [np.asarray(b, np.float64) for b in jax.tree.leaves(ref_grads)]
results = {}
# The xLSTM-Large block needs only the pure data-parallel baseline and the tensor-parallel
# mesh (the FSDP paths are the v1 run's).
MESHES = [(8, 1, 1), (1, 2, 4)] if form == "large" else [(8, 1, 1), (1, 8, 1), (2, 2, 2), (1, 2, 4)]
for sizes in MESHES:
    mesh = make_mesh(sizes)
    # Shardings from the parameters' logical axes, as the trainer computes them.
    shardings = param_shardings(param_state, mesh)
    with activate(mesh):
        p = jax.device_put(params, shardings)
        x = jax.device_put(tokens, NamedSharding(mesh, P(("data", "fsdp"))))
        # Compiled once: the program that runs is the one whose memory is analysed below.
        compiled = jax.jit(jax.value_and_grad(loss_fn)).lower(p, x).compile()
        loss, grads = compiled(p, x)
    # The error in NumPy (float64): eager ops on sharded arrays would compile a program each.
    err = max(
        float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))
        for a, b in zip(jax.tree.leaves(grads), ref_grads64, strict=True)
    )
    head = p["lm_head"]["kernel"]
    param_bytes = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(params))
    device0 = sum(a.addressable_shards[0].data.nbytes for a in jax.tree.leaves(p))
    big = [a for a in jax.tree.leaves(p) if a.size >= FSDP_MIN_SIZE]
    results[str(sizes)] = {
        "param_bytes_device0_frac": device0 / param_bytes,
        "big_param_shard_fracs": sorted({a.addressable_shards[0].data.size / a.size for a in big}),
        "arg_bytes_frac": compiled.memory_analysis().argument_size_in_bytes / param_bytes,
        "loss_err": abs(float(loss) - float(ref_loss)),
        "grad_rel_err": err,
        "lm_head_spec": str(head.sharding.spec),
        "lm_head_shard_frac": head.addressable_shards[0].data.size / head.size,
    }
    if form == "large":
        block = p["backbone"]["blocks"][0]
        for name, arr in (
            ("q_shard_frac", block["mlstm_layer"]["q"]["kernel"]),
            ("ffn_up_shard_frac", block["ffn"]["proj_up"]["kernel"]),
            ("ffn_down_shard_frac", block["ffn"]["proj_down"]["kernel"]),
        ):
            results[str(sizes)][name] = arr.addressable_shards[0].data.size / arr.size
        results[str(sizes)]["ffn_up_spec"] = str(block["ffn"]["proj_up"]["kernel"].sharding.spec)
print(json.dumps(results))

"""Sharding on simulated CPU devices (a subprocess, since the device count is fixed when
JAX starts): losses and gradients on several meshes equal one device's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from flax import nnx
from helpers import xla_flags

from xlstm_jax import (
    mLSTMBlockConfig,
    mLSTMLayerConfig,
    sLSTMBlockConfig,
    sLSTMLayerConfig,
    xLSTMLMModel,
    xLSTMLMModelConfig,
)
from xlstm_jax.layers.sharding import (
    ShardingError,
    logical_axes,
    logical_to_spec,
    make_mesh,
    param_shardings,
)

SCRIPTS = Path(__file__).parent / "scripts"
ROOT = Path(__file__).parent.parent


def run_script(name: str, *args: str, devices: int = 8) -> dict:
    env = dict(
        os.environ,
        XLA_FLAGS=xla_flags(devices),
        PYTHONPATH=str(ROOT),
        JAX_PLATFORMS="cpu",
    )
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_sharded_model_matches_one_device():
    # The chunkwise form: the training path, with the recurrent ops inside shard_map.
    results = run_script("sharded_model.py", "chunkwise")
    assert set(results) == {"(8, 1, 1)", "(1, 8, 1)", "(2, 2, 2)", "(1, 2, 4)"}
    for mesh, r in results.items():
        assert r["loss_err"] < 1e-5, (mesh, r)
        assert r["grad_rel_err"] < 1e-4, (mesh, r)
    # FSDP shards the head over fsdp (embed) and tensor parallelism over the vocabulary.
    assert results["(1, 8, 1)"]["lm_head_shard_frac"] == pytest.approx(1 / 8)
    assert results["(2, 2, 2)"]["lm_head_shard_frac"] == pytest.approx(1 / 4)
    assert results["(8, 1, 1)"]["lm_head_shard_frac"] == 1.0  # pure data parallel
    # FSDP really shards: every parameter of FSDP_MIN_SIZE elements or more holds 1/8 per
    # device (the small norm scales, biases and gates stay replicated), and the compiled
    # step's per-device arguments shrink to match; pure data parallelism holds everything.
    dp, fsdp = results["(8, 1, 1)"], results["(1, 8, 1)"]
    assert fsdp["big_param_shard_fracs"] == [1 / 8]
    assert dp["big_param_shard_fracs"] == [1.0]
    assert dp["param_bytes_device0_frac"] == pytest.approx(1.0)
    assert fsdp["param_bytes_device0_frac"] < 0.25
    assert fsdp["arg_bytes_frac"] == pytest.approx(fsdp["param_bytes_device0_frac"], abs=0.02)
    assert dp["arg_bytes_frac"] == pytest.approx(1.0, abs=0.02)


@pytest.mark.slow
def test_large_model_shards_heads_and_ffn_and_matches_one_device():
    results = run_script("sharded_model.py", "large")
    for mesh, r in results.items():
        assert r["loss_err"] < 1e-5 and r["grad_rel_err"] < 1e-4, (mesh, r)
    # (1, 2, 4): FSDP 2 over the embedding dim, tensor 4 over heads / the FFN width.
    tp = results["(1, 2, 4)"]
    assert tp["q_shard_frac"] == tp["ffn_up_shard_frac"] == tp["ffn_down_shard_frac"] == 1 / 8
    assert tp["ffn_up_spec"].endswith("('fsdp', 'tensor')")  # the repr's name varies by JAX
    assert results["(8, 1, 1)"]["q_shard_frac"] == 1.0


def test_mesh_errors_name_the_fix():
    n = len(jax.devices())
    have = f"{n} device is" if n == 1 else f"{n} devices are"
    with pytest.raises(ShardingError, match=f"but {have} available") as err:
        make_mesh((n + 1, 1, 1))
    if jax.devices()[0].platform == "cpu":
        assert f"--xla_force_host_platform_device_count={n + 1}" in str(err.value)
    with pytest.raises(ShardingError, match="at most one -1"):
        make_mesh((-1, -1, 1))
    mesh = make_mesh((-1, 1, 1))
    assert mesh.shape == {"data": n, "fsdp": 1, "tensor": 1}


def _model():
    cfg = xLSTMLMModelConfig(
        mlstm_block=mLSTMBlockConfig(mlstm=mLSTMLayerConfig(num_heads=2)),
        slstm_block=sLSTMBlockConfig(slstm=sLSTMLayerConfig(num_heads=2)),
        num_blocks=2,
        slstm_at=(1,),
        embedding_dim=32,
        vocab_size=64,
    )
    return nnx.eval_shape(lambda: xLSTMLMModel(cfg, rngs=nnx.Rngs(0)))


def test_parameters_carry_their_logical_axes():
    model = _model()
    slstm, mlstm = model.xlstm_block_stack.blocks[1].xlstm, model.xlstm_block_stack.blocks[0].xlstm
    assert logical_axes(slstm.recurrent_kernel) == ("heads", None, None, None)
    assert logical_axes(model.lm_head.kernel) == ("embed", "vocab")
    assert logical_axes(model.token_embedding.embedding) == ("vocab", "embed")
    assert logical_axes(mlstm.proj_up.kernel) == ("embed", "inner")
    assert logical_axes(model.xlstm_block_stack.blocks[1].xlstm_norm.weight) == (None,)
    mesh = make_mesh((1, 1, -1))
    spec = logical_to_spec(("embed", "vocab"), mesh=mesh, rules={"vocab": "tensor"})
    expected = "tensor" if mesh.shape["tensor"] > 1 else None  # size-1 axes shard nothing
    assert spec == jax.sharding.PartitionSpec(None, expected)


def test_renaming_an_attribute_keeps_every_parameters_sharding():
    """The logical axes travel with the parameter, not its path: moving every parameter
    to a new attribute name changes no parameter's logical axes or sharding."""
    # An abstract 2 x 2 x 2 mesh: every rule shards something, so specs differ by axes.
    mesh = jax.sharding.AbstractMesh((2, 2, 2), ("data", "fsdp", "tensor"))
    model = _model()

    def by_identity(m):
        specs = param_shardings(nnx.state(m, nnx.Param), mesh)
        out = {}
        for path, var in nnx.to_flat_state(nnx.state(m, nnx.Param)):
            node = specs
            for key in path:
                node = node[key]
            out[id(var.get_value())] = (path, logical_axes(var), node.spec)
        return out

    before = by_identity(model)
    assert len({spec for _, _, spec in before.values()}) >= 4  # a real mix of shardings
    for _, module in list(nnx.iter_graph(model)):
        if isinstance(module, nnx.Module):
            for name, value in list(vars(module).items()):
                if isinstance(value, nnx.Param):
                    delattr(module, name)
                    setattr(module, f"renamed_{name}", value)
    after = by_identity(model)
    assert set(after) == set(before)
    for key, (path, axes, spec) in after.items():
        old_path, old_axes, old_spec = before[key]
        assert path != old_path and str(path[-1]) == f"renamed_{old_path[-1]}"
        assert (axes, spec) == (old_axes, old_spec), path

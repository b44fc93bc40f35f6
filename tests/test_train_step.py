"""Optimizer pieces and the jitted train step (accumulation, mixed precision)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from train.config import OptimizerConfig, ScheduleConfig, named
from train.config.overrides import apply_overrides
from train.data.batch import all_scored
from train.loop.memory import estimate_memory
from train.loop.optimizer import decay_mask, make_optimizer, make_schedule, path_str
from train.loop.step import make_train_step
from xlstm_jax import xLSTMLMModel

SMALL = ["model.embedding_dim=32", "model.num_blocks=2", "model.slstm_at=[1]"]
# One mLSTM block: the step's logic does not depend on the block type, and it compiles fast.
ONE_BLOCK = ["model.num_blocks=1", "model.slstm_at=[]"]


def _setup(*overrides: str):
    cfg = apply_overrides(named.load("xlstm_tiny"), [*SMALL, *overrides])
    model = xLSTMLMModel(cfg.model, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return cfg, graphdef, nnx.to_pure_dict(params), rest


def _flat(tree) -> dict[str, object]:
    return {path_str(p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_decay_mask_follows_the_paper_rule():
    cfg, _, params, _ = _setup()
    mask = _flat(decay_mask(params))
    assert mask["token_embedding.embedding"] is False
    assert mask["lm_head.kernel"] is True
    assert mask["xlstm_block_stack.blocks.0.xlstm.proj_up.kernel"] is True
    assert mask["xlstm_block_stack.blocks.0.xlstm.q_proj.weight"] is True  # headwise, 3-D
    assert mask["xlstm_block_stack.blocks.1.xlstm.recurrent_kernel"] is False  # as reference
    assert mask["xlstm_block_stack.blocks.1.xlstm.bias"] is False  # 3-D sLSTM gate bias
    assert mask["xlstm_block_stack.blocks.0.xlstm.igate.bias"] is False
    assert mask["xlstm_block_stack.blocks.0.xlstm_norm.weight"] is False
    assert mask["xlstm_block_stack.post_blocks_norm.weight"] is False
    assert mask["xlstm_block_stack.blocks.0.xlstm.learnable_skip"] is False
    flat = _flat(params)
    assert all(not mask[k] for k, v in flat.items() if v.ndim < 2)
    assert _flat(decay_mask(params, weight_decay_on_embedding=True))["token_embedding.embedding"]


def test_schedule_warms_up_then_decays_to_ten_percent():
    opt = OptimizerConfig(lr=1e-3)
    sched = make_schedule(opt, ScheduleConfig(warmup_steps=10, final_lr_ratio=0.1), 100)
    assert float(sched(0)) == 0.0
    assert float(sched(5)) == pytest.approx(5e-4)
    assert float(sched(10)) == pytest.approx(1e-3)
    assert float(sched(55)) == pytest.approx(1e-4 + 0.9e-3 * 0.5, rel=1e-5)
    assert float(sched(100)) == pytest.approx(1e-4)


def test_gradient_accumulation_equals_one_big_batch():
    cfg, graphdef, params, rest = _setup(*ONE_BLOCK)
    tx = make_optimizer(
        cfg.optimizer, make_schedule(cfg.optimizer, cfg.schedule, 10), decay_mask(params)
    )
    step = jax.jit(make_train_step(graphdef, rest, tx))
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=(4, 9), dtype=np.int32)
    results = []
    for accum in (1, 4):
        state = {"params": params, "opt_state": tx.init(params)}
        for _ in range(2):  # two steps so the LR is non-zero and the update shows
            state, out = step(state, all_scored(batch.reshape(accum, 4 // accum, 9)))
        results.append((float(out["loss"]), float(out["grad_norm"]), state["params"]))
    (loss1, norm1, p1), (loss4, norm4, p4) = results
    assert loss4 == pytest.approx(loss1, rel=1e-5) and norm4 == pytest.approx(norm1, rel=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p4, p1)
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), p1, params)
    assert max(jax.tree.leaves(moved)) > 0


def test_bf16_compute_keeps_fp32_master_weights():
    cfg, graphdef, params, rest = _setup(*ONE_BLOCK, "model.dtype=bfloat16")
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(params))
    tx = optax.adamw(1e-3)
    state = {"params": params, "opt_state": tx.init(params)}
    batch = all_scored(np.zeros((1, 2, 9), np.int32))
    state, out = jax.jit(make_train_step(graphdef, rest, tx))(state, batch)
    assert np.isfinite(float(out["loss"]))
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(state["params"]))


def test_memory_estimate_counts_adamw_state_and_grows_with_batch():
    cfg = named.load("xlstm_350m")
    n = 409_000_000
    small = estimate_memory(apply_overrides(cfg, ["train.micro_batch_size=1"]), n)
    assert small["params"] == 4 * n and small["optimizer"] == 8 * n
    assert small["grads"] == 8 * n  # accumulation keeps a second gradient buffer
    big = estimate_memory(apply_overrides(cfg, ["train.micro_batch_size=8"]), n)
    assert big["activations"] == pytest.approx(8 * small["activations"], rel=1e-6)
    remat = estimate_memory(apply_overrides(cfg, ["model.remat=true"]), n)
    assert remat["activations"] < estimate_memory(cfg, n)["activations"] / 4
    # On a mesh: the state over fsdp x tensor, the micro-batch over data x fsdp.
    mesh = estimate_memory(cfg, n, (2, 4, 2))
    one = estimate_memory(cfg, n)
    assert mesh["optimizer"] == one["optimizer"] // 8
    assert mesh["activations"] == one["activations"] // 8
    # A scan over the blocks adds their stacked parameters and gradients.
    large = named.load("xlstm_large_165m")
    scan = estimate_memory(large, n)
    scanned = estimate_memory(apply_overrides(large, ["model.scan_layers=true"]), n)
    assert "scan" not in scan and scanned["total"] - scan["total"] == scanned["scan"]
    assert 0 < scanned["scan"] < 2 * 4 * n


@pytest.mark.reference
def test_decay_mask_equals_the_reference_optimizer_groups():
    """Our mask, mapped to the reference's parameter names, equals the reference's own
    weight-decay grouping (``get_weight_decay_optim_group_param_names``)."""
    from helpers import require_reference, torch_reference_config

    from xlstm_jax import convert

    _, xlstm = require_reference()
    tm = xlstm.xLSTMLMModel(torch_reference_config(xlstm))
    decay, no_decay = tm.get_weight_decay_optim_group_param_names()
    model = convert.from_torch(tm, slstm_backend="vanilla")
    graphdef, params = nnx.split(model)
    mask = decay_mask(params)
    as_float = jax.tree.map(lambda p, m: jnp.full(p.shape, float(m)), params, mask)
    named = convert.to_torch_state_dict(
        nnx.merge(graphdef, as_float), slstm_backend="vanilla", as_torch=False
    )
    ours = {k for k, v in named.items() if v.min() == 1.0}
    assert all(v.min() == v.max() for v in named.values())
    assert ours == set(decay)
    assert set(named) - ours == set(no_decay)

"""The Flax model family: conversion round trips, init statistics, mixed precision,
state passing, configuration errors."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import (
    jit_call,
    jit_with_state,
    mixed_config,
    perturbed_model,
    rel_err,
    require_reference,
    tokens,
    torch_reference_config,
    with_weights_of,
)

from xlstm_jax import (
    ConfigError,
    FeedForwardConfig,
    convert,
    mLSTMBlockConfig,
    mLSTMLayerConfig,
    sLSTMBlockConfig,
    sLSTMLayerConfig,
    xLSTMLMModel,
    xLSTMLMModelConfig,
)


@pytest.mark.reference
def test_round_trip_torch_jax_torch_is_exact():
    torch, xlstm = require_reference()
    torch.manual_seed(0)
    tm = xlstm.xLSTMLMModel(torch_reference_config(xlstm, bias=True))
    tm.reset_parameters()
    with torch.no_grad():
        for p in tm.parameters():
            p.add_(torch.randn_like(p))
    sd = tm.state_dict()
    back = convert.to_torch_state_dict(convert.from_torch(tm), slstm_backend="vanilla")
    assert set(back) == set(sd)
    for k, v in sd.items():
        assert torch.equal(back[k], v), k
    fresh = xlstm.xLSTMLMModel(torch_reference_config(xlstm, bias=True))
    fresh.load_state_dict(back, strict=True)


@pytest.mark.reference
def test_cuda_layout_checkpoint_converts_like_vanilla():
    """A CUDA-backend sLSTM checkpoint (other storage layout) gives the same model."""
    torch, xlstm = require_reference()
    from xlstm.blocks.slstm.cell import sLSTMCell_cuda

    torch.manual_seed(0)
    tm = xlstm.xLSTMLMModel(torch_reference_config(xlstm, num_blocks=2, slstm_at=(0, 1)))
    with torch.no_grad():
        for p in tm.parameters():
            p.add_(torch.randn_like(p))
    sd = dict(tm.state_dict())
    for idx in (0, 1):
        van = tm.xlstm_block_stack.blocks[idx].xlstm.slstm_cell
        cuda_cell = sLSTMCell_cuda(van.config, skip_backend_init=True)
        pre = f"xlstm_block_stack.blocks.{idx}.xlstm.slstm_cell."
        # The reference's own external -> CUDA-internal layout functions.
        sd[pre + "_recurrent_kernel_"] = cuda_cell._recurrent_kernel_ext2int(
            van.recurrent_kernel.clone()
        )
        sd[pre + "_bias_"] = cuda_cell._bias_ext2int(van.bias.clone())
    cfg = convert.config_from_torch(tm.config)
    ours_vanilla = convert.from_state_dict(tm.state_dict(), cfg, slstm_backend="vanilla")
    ours_cuda = convert.from_state_dict(sd, cfg, slstm_backend="cuda")
    for (p, a), (_, b) in zip(
        nnx.to_flat_state(nnx.state(ours_vanilla, nnx.Param)),
        nnx.to_flat_state(nnx.state(ours_cuda, nnx.Param)),
        strict=True,
    ):
        np.testing.assert_array_equal(a[...], b[...], err_msg=str(p))
    back = convert.to_torch_state_dict(ours_cuda, slstm_backend="cuda")
    for k in sd:
        assert torch.equal(back[k], sd[k]), k


@pytest.mark.reference
def test_from_state_dict_reports_mismatches():
    torch, xlstm = require_reference()
    tm = xlstm.xLSTMLMModel(torch_reference_config(xlstm))
    cfg = convert.config_from_torch(tm.config)
    sd = dict(tm.state_dict())
    del sd["lm_head.weight"]
    with pytest.raises(ValueError, match="lacks 1 parameter"):
        convert.from_state_dict(sd, cfg)
    with pytest.raises(ValueError, match="that is the vanilla layout"):
        convert.from_state_dict(tm.state_dict(), cfg, slstm_backend="cuda")


@pytest.mark.reference
def test_init_statistics_match_reference():
    torch, xlstm = require_reference()
    E, V = 128, 512
    torch.manual_seed(0)
    tm = xlstm.xLSTMLMModel(torch_reference_config(xlstm, E=E, V=V, num_blocks=4, slstm_at=(1, 3)))
    tm.reset_parameters()
    ref = {k: v.double().numpy() for k, v in tm.state_dict().items()}
    cfg = convert.config_from_torch(tm.config)
    ours = convert.to_torch_state_dict(
        xLSTMLMModel(cfg, rngs=nnx.Rngs(0)), slstm_backend="vanilla", as_torch=False
    )
    assert set(ours) == set(ref)
    for name, r in ref.items():
        o = np.asarray(ours[name], np.float64)
        if r.std() == 0.0 or "_bias_" in name or "fgate.bias" in name and "mlstm" in name:
            # Deterministic inits (zeros, ones, linspace, power law) must be equal.
            np.testing.assert_allclose(o, r, rtol=1e-6, atol=1e-6, err_msg=name)
        elif r.size >= 256:  # random inits: same distribution (mean and spread)
            assert abs(o.mean() - r.mean()) < 5 * r.std() / np.sqrt(r.size), name
            assert abs(o.std() / r.std() - 1.0) < 0.15, (name, o.std(), r.std())
        else:  # too few samples for statistics (mLSTM igate bias, 2 heads): same scale
            assert o.shape == r.shape and 0 < np.abs(o).max() < 5 * max(np.abs(r).max(), 0.1)


def test_bf16_compute_close_to_fp32():
    cfg = mixed_config()
    model = perturbed_model(cfg, scale=0.05)
    x = tokens(2, 40, cfg.vocab_size)
    ref = jit_call(model, x)
    bf16 = convert.from_state_dict(
        convert.to_torch_state_dict(model, as_torch=False),
        dataclasses.replace(cfg, dtype="bfloat16"),
    )
    assert bf16.xlstm_block_stack.blocks[0].xlstm.proj_up.kernel[...].dtype == jnp.float32
    out = jit_call(bf16, x)
    assert out.dtype == jnp.float32
    err = rel_err(out, ref)
    assert err < 2e-2, err


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["chunkwise", "recurrent"])
def test_model_state_passing_equals_whole(backend):
    mb = mLSTMBlockConfig(mlstm=mLSTMLayerConfig(num_heads=2, chunk_size=8, form=backend))
    cfg = mixed_config(mlstm_block=mb)
    model = perturbed_model(cfg)
    x = tokens(2, 29, cfg.vocab_size)
    whole, whole_state = jit_with_state(model, x, model.init_state(2))
    state = model.init_state(2)
    pieces = []
    for lo, hi in [(0, 10), (10, 11), (11, 29)]:
        out, state = jit_with_state(model, x[:, lo:hi], state)
        pieces.append(out)
    np.testing.assert_allclose(jnp.concatenate(pieces, 1), whole, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(whole_state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # Without a state the model runs the same computation (no fixed context length).
    np.testing.assert_allclose(jit_call(model, x), whole, rtol=1e-5, atol=1e-5)


def test_token_by_token_equals_full_forward():
    cfg = mixed_config()
    model = perturbed_model(cfg)
    x = tokens(2, 9, cfg.vocab_size)
    full = jit_call(model, x)
    state = model.init_state(2)
    outs = []
    for t in range(9):
        out, state = jit_with_state(model, x[:, t : t + 1], state)
        outs.append(out)
    np.testing.assert_allclose(jnp.concatenate(outs, 1), full, rtol=1e-5, atol=1e-5)


@nnx.jit  # one compiled program: eager, forward and backward run op by op (slower on CPU)
def _mean_square_grads(model, x):
    return nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)


@pytest.mark.slow
def test_remat_gives_same_gradients():
    cfg = mixed_config()
    x = tokens(2, 12, cfg.vocab_size)

    model = perturbed_model(cfg)
    g0 = _mean_square_grads(model, x)
    # The weights perturbed_model gives the remat config too (remat adds no parameter),
    # without a second initialisation to compile.
    g1 = _mean_square_grads(with_weights_of(model, dataclasses.replace(cfg, remat=True)), x)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_tied_weights_share_the_embedding():
    cfg = mixed_config(tie_weights=True)
    model = xLSTMLMModel(cfg, rngs=nnx.Rngs(0))
    assert model.lm_head is None
    names = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert "token_embedding.embedding" in names and not any("lm_head" in n for n in names)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: mixed_config(slstm_at=(3,)), r"slstm_at has 3"),
        (lambda: mixed_config(vocab_size=0), "vocab_size"),
        (lambda: mixed_config(dtype="float8"), "dtype must be one of"),
        (lambda: mixed_config(slstm_block=None), "slstm_block is None"),
        (
            lambda: mixed_config(mlstm_block=mLSTMBlockConfig(mlstm=mLSTMLayerConfig(num_heads=3))),
            "num_heads=3 must divide the inner dim",
        ),
        (
            lambda: mixed_config(slstm_block=sLSTMBlockConfig(slstm=sLSTMLayerConfig(num_heads=5))),
            "num_heads=5 must divide embedding_dim",
        ),
        (lambda: mLSTMLayerConfig(form="fast"), "form must be one of"),
        (lambda: sLSTMLayerConfig(function="gru"), "function must be"),
        (lambda: FeedForwardConfig(act_fn="tanh"), "act_fn must be one of"),
        (lambda: xLSTMLMModelConfig(vocab_size=10), "needs mlstm_block or slstm_block"),
    ],
)
def test_invalid_configs_raise_naming_the_field(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_bad_tokens_raise():
    model = xLSTMLMModel(mixed_config(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="integer array"):
        model(jnp.zeros((2, 3), jnp.float32))


@pytest.mark.reference
def test_block_stack_converts_and_matches():
    torch, xlstm = require_reference()
    cfg = torch_reference_config(xlstm, num_blocks=2, slstm_at=(1,))
    stack_cfg = xlstm.xLSTMBlockStackConfig(
        mlstm_block=cfg.mlstm_block,
        slstm_block=cfg.slstm_block,
        context_length=16,
        num_blocks=2,
        embedding_dim=32,
        slstm_at=[1],
    )
    torch.manual_seed(0)
    ts = xlstm.xLSTMBlockStack(stack_cfg)
    with torch.no_grad():
        for p in ts.parameters():
            p.add_(0.2 * torch.randn_like(p))
    ours = convert.from_torch(ts)
    assert type(ours).__name__ == "xLSTMBlockStack"
    x = np.random.default_rng(0).normal(size=(2, 16, 32)).astype(np.float32)
    ref = ts(torch.from_numpy(x)).detach().numpy()
    y, _ = ours(jnp.asarray(x))  # the stack returns (y, state)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    back = convert.to_torch_state_dict(ours, slstm_backend="vanilla")
    ts.load_state_dict(back, strict=True)

"""The Pallas mLSTM kernels (pallas_kernels/mlstm/) against the XLA reference.

On CPU the kernels run in interpret mode at tiny shapes (outputs, final states and the
gradients of all of them, initial states included), and are cross-lowered to CUDA (the real
Pallas -> Triton lowering, plus an MLIR verification of the Triton IR) at the benchmark
shapes. On a CUDA GPU the same checks also run compiled.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CUDA_TARGETS, MODES, TOL, lower_for_cuda, rel_err, sweep, triton_calls

import pallas_kernels as pk
from pallas_kernels.dispatch import on_cuda_gpu
from pallas_kernels.mlstm import triton_backward as backward
from pallas_kernels.mlstm import triton_chunkwise as chunkwise
from pallas_kernels.mlstm import triton_forward as forward
from pallas_kernels.mlstm import triton_step as step_kernel
from pallas_kernels.mlstm.block_sizes import BlockSizes


def _inputs(seed, B, NH, S, DQ, DV, dtype=jnp.float32, with_state=True):
    """Fresh random inputs: forget gates mostly open, random initial C, n >= 0 and m."""
    ks = jax.random.split(jax.random.key(seed), 8)
    normal = functools.partial(jax.random.normal, dtype=jnp.float32)
    q = normal(ks[0], (B, NH, S, DQ)).astype(dtype)
    k = normal(ks[1], (B, NH, S, DQ)).astype(dtype)
    v = normal(ks[2], (B, NH, S, DV)).astype(dtype)
    i = normal(ks[3], (B, NH, S))
    f = normal(ks[4], (B, NH, S)) + 2.0
    state = None
    if with_state:
        state = (
            normal(ks[5], (B, NH, DQ, DV)),
            jnp.abs(normal(ks[6], (B, NH, DQ))),
            normal(ks[7], (B, NH)),
        )
    return q, k, v, i, f, state


def _chunkwise(impl, L, interpret=True, block_sizes=None):
    """(q, k, v, i, f, state) -> (h, last state) for one implementation."""

    def run(q, k, v, i, f, state):
        if block_sizes is not None:
            return chunkwise.mlstm_chunkwise_pallas(
                q, k, v, i, f, state, chunk_size=L, interpret=interpret, block_sizes=block_sizes
            )
        return pk.mlstm_chunkwise(
            q,
            k,
            v,
            i,
            f,
            chunk_size=L,
            initial_state=state,
            return_last_state=True,
            impl=impl,
            interpret=interpret,
        )

    return run


def _forward_and_grads(run, q, k, v, i, f, state, seed):
    """Outputs (h, last state) and the gradients of a random linear loss of all of them
    w.r.t. q, k, v, i, f and the initial state."""
    B, NH, S, DQ = q.shape
    DV = v.shape[-1]
    s0 = pk.mlstm_zero_state(B, NH, DQ, DV) if state is None else state
    ks = jax.random.split(jax.random.key(seed + 1000), 4)
    w_h = jax.random.normal(ks[0], (B, NH, S, DV))
    w_last = [jax.random.normal(kk, x.shape) for kk, x in zip(ks[1:], s0, strict=True)]

    def loss(q, k, v, i, f, s0):
        h, last = run(q, k, v, i, f, s0)
        val = jnp.sum(h.astype(jnp.float32) * w_h)
        val += sum(jnp.sum(s * w) for s, w in zip(last, w_last, strict=True))
        return val, (h, last)

    with jax.default_matmul_precision("float32"):  # a full-precision reference on GPU, too
        grads, out = jax.jit(jax.grad(loss, argnums=tuple(range(6)), has_aux=True))(
            q, k, v, i, f, s0
        )
    return out, grads


NAMES = ["h", "C_last", "n_last", "m_last", "dq", "dk", "dv", "di", "df", "dC0", "dn0", "dm0"]


def _assert_close(actual, desired, dtype, names=NAMES):
    atol, rtol = TOL[jnp.dtype(dtype).name]
    leaves_a, leaves_d = jax.tree.leaves(actual), jax.tree.leaves(desired)
    assert len(leaves_a) == len(leaves_d) == len(names)
    for name, a, d in zip(names, leaves_a, leaves_d, strict=True):
        a, d = np.asarray(a, np.float64), np.asarray(d, np.float64)
        assert a.shape == d.shape, name
        if dtype in (jnp.float32, jnp.float64):
            np.testing.assert_allclose(a, d, atol=atol, rtol=rtol, err_msg=name)
        else:  # 16-bit matmul operands: compare norm-relative errors
            assert rel_err(a, d) < rtol, (name, rel_err(a, d))


SMALL_TILES = BlockSizes(
    state_tile_qk=16,
    state_tile_v=16,
    out_tile_qk=16,
    out_tile_v=16,
    bwd_tile_qk=16,
    bwd_tile_v=16,
    step_tile_v=16,
)
# xLSTM-7B head dims (8 heads, embedding 4096): DHQK 256, DHV 512.
DQ_7B, DV_7B = 256, 512
# (B, NH, S, DHQK, DHV, chunk, with initial state, block sizes); None = defaults via pk.
CASES = [
    (1, 1, 16, 16, 16, 16, False, None),
    (2, 2, 40, 16, 32, 16, True, None),  # S not a multiple of the chunk, DHV > DHQK
    (1, 2, 64, 32, 16, 32, True, None),  # DHQK > DHV, two chunks of 32
    (2, 1, 37, 24, 40, 16, True, SMALL_TILES),  # padded dims 24 -> 32, 40 -> 64; 2 x 4 tiles
    (1, 2, 40, 64, 128, 16, True, None),  # the 7B ratio DHV = 2 DHQK; 2 DHQK tiles in B, D
    (1, 2, 40, DQ_7B, DV_7B, 16, True, None),  # the 7B head dims: 8 DHQK, 16 DHV tiles in D
]


# fp32 element-wise at TOL needs gradients of moderate size: in CASES[2] they reach ~170
# (small normalisers), where fp32 rounding alone is ~1e-5 absolute. There the XLA fp32 path
# itself misses TOL against float64 (one element of di), as does the kernel (one of dk); its
# math is checked exactly by the float64 test, which runs every case. Likewise at the 7B head
# dims (CASES[5]): the gradients reach ~100-500 (sums over 256 x 512 state entries), and
# against float64 the XLA fp32 path misses TOL in 31 elements of dk, 3 of di and 1 of dm0,
# the kernel in 15 of dk (its math passes at 1e-10; bf16 at these dims is checked below).
# CASES[4] (64 / 128) has gradients of the same size (dq up to 297, dk 237): it passes on
# JAX 0.10.2 and 0.11.2, but on JAX 0.12.0.1 9 of 5120 dk elements miss TOL by up to
# 2.2e-5 (1.3e-4 relative); its float64 run is exact like the others'.
FP32_CASES = [c for n, c in enumerate(CASES) if n not in (2, 4, 5)]


def _ids(cases):
    return [f"B{c[0]}-NH{c[1]}-S{c[2]}-DQ{c[3]}-DV{c[4]}-L{c[5]}" for c in cases]


@pytest.mark.parametrize("interpret", MODES)
@pytest.mark.parametrize("case", sweep(FP32_CASES, keep=(0,), ids=_ids(FP32_CASES)))
def test_matches_reference_fp32(case, interpret):
    B, NH, S, DQ, DV, L, with_state, bs = case
    seed = CASES.index(case)
    args = _inputs(seed, B, NH, S, DQ, DV, with_state=with_state)
    want = _forward_and_grads(_chunkwise("xla", L), *args, seed)
    got = _forward_and_grads(_chunkwise("pallas", L, interpret, bs), *args, seed)
    _assert_close(got, want, jnp.float32)


# Every JAX: the padded, tiled case with a state; the GPU machine's JAX: all of them.
@pytest.mark.parametrize("case", sweep(CASES, keep=(3,), ids=_ids(CASES)))
def test_matches_reference_exactly_in_fp64(case):
    """The kernels' math (interpret mode, float64 throughout) equals the reference's to 1e-10:
    forward and the full backward, stabilisers included, are the same function and the exact
    derivative of it, apart from rounding."""
    B, NH, S, DQ, DV, L, with_state, bs = case
    seed = CASES.index(case)
    args = _inputs(seed, B, NH, S, DQ, DV, with_state=with_state)
    with jax.enable_x64(True):
        args = jax.tree.map(lambda x: x.astype(jnp.float64), args)
        want = _forward_and_grads(_chunkwise("xla", L), *args, seed)
        got = _forward_and_grads(_chunkwise("pallas", L, True, bs), *args, seed)
        _assert_close(got, want, jnp.float64)


@pytest.mark.parametrize("interpret", MODES)
@pytest.mark.parametrize(
    "DQ,DV",
    [
        (32, 32),
        pytest.param(DQ_7B, DV_7B, id="7B-DQ256-DV512", marks=pytest.mark.kernel_sweep),
    ],
    ids=["DQ32-DV32", None],
)
def test_matches_reference_bf16(DQ, DV, interpret):
    args = _inputs(7, 1, 2, 40, DQ, DV, jnp.bfloat16)
    want = _forward_and_grads(_chunkwise("xla", 16), *args, 7)
    got = _forward_and_grads(_chunkwise("pallas", 16, interpret), *args, 7)
    _assert_close(got, want, jnp.bfloat16)


def test_kernel_outputs_fully_written():
    """Every element of every kernel output, padding included, is written: interpret mode
    fills outputs with NaN first (test_slstm_kernel.py guards that), and no NaN survives."""
    B, NH, S, DQ, DV, L = 2, 1, 37, 24, 40, 16
    bs = SMALL_TILES

    # Jitted (interpret mode poisons outputs under jit too): eager, every op of the
    # interpreted kernels would be dispatched one by one, several times slower on CPU.
    @jax.jit
    def kernel_outputs(q, k, v, i, f, state):
        # The wrapper's padding, as mlstm_chunkwise_pallas does it.
        BH, Sp, DQp, DVp, z = B * NH, 48, 32, 64, (0, 0)
        ps, pq, pv = (0, Sp - S), (0, DQp - DQ), (0, DVp - DV)
        qp = jnp.pad(q, (z, z, ps, pq)).reshape(BH, Sp, DQp)
        kp = jnp.pad(k, (z, z, ps, pq)).reshape(BH, Sp, DQp)
        vp = jnp.pad(v, (z, z, ps, pv)).reshape(BH, Sp, DVp)
        ip = jnp.pad(i, (z, z, ps), constant_values=chunkwise.PAD_I).reshape(BH, Sp)
        b = jnp.cumsum(
            jax.nn.log_sigmoid(jnp.pad(f, (z, z, ps), constant_values=30.0)).reshape(BH, -1, L), -1
        ).reshape(BH, Sp)
        s0 = (
            jnp.pad(state[0], (z, z, pq, pv)).reshape(BH, DQp, DVp),
            jnp.pad(state[1], (z, z, pq)).reshape(BH, DQp),
            state[2].reshape(BH, 1),
        )
        scale = DQ**-0.5
        (h, last), res = chunkwise._mlstm_core_fwd(qp, kp, vp, ip, b, s0, L, scale, 1e-6, bs, True)
        starts, last_a = forward.chunk_states(kp, vp, ip, b, s0, L, bs, True)
        dlast = (jnp.ones((BH, DQp, DVp)), jnp.ones((BH, DQp)), jnp.ones((BH, 1)))
        grads = backward.chunkwise_bwd(L, scale, 1e-6, bs, True, res, (jnp.ones_like(h), dlast))
        step = step_kernel._step_call(
            qp[:, 0], kp[:, 0], vp[:, 0], ip[:, :1], b[:, :1], s0, 1e-6, scale, bs, True
        )
        return h, last, res, starts, last_a, grads, step

    h, last, res, starts, last_a, grads, step = kernel_outputs(*_inputs(3, B, NH, S, DQ, DV))
    # The backward kernels' outputs feed the gradients: a NaN left in them shows up there.
    for leaf in jax.tree.leaves((h, last, res, starts, last_a, grads, step)):
        assert np.isfinite(np.asarray(leaf)).all()


# (B, NH, DHQK, DHV, block sizes): decode step.
STEP_CASES = [(2, 3, 16, 32, None), (1, 2, 24, 40, SMALL_TILES), (1, 2, DQ_7B, DV_7B, None)]


@pytest.mark.parametrize("interpret", MODES)
@pytest.mark.parametrize(
    "case", sweep(STEP_CASES, keep=(1,), ids=["default", "padded-tiled", "7B-head-dims"])
)
def test_step_matches_reference(case, interpret):
    B, NH, DQ, DV, bs = case
    q, k, v, i, f, state = _inputs(11, B, NH, 3, DQ, DV)
    q, k, v, i, f = q[:, :, 0], k[:, :, 0], v[:, :, 0], i[..., 0], f[..., 0]

    def run(impl):
        if impl == "pallas" and bs is not None:
            return lambda *a: step_kernel.mlstm_step_pallas(*a, interpret=interpret, block_sizes=bs)
        return lambda *a: pk.mlstm_step(*a, impl=impl, interpret=interpret)

    def loss(run, q, k, v, i, f, state):
        h, new = run(q, k, v, i, f, state)
        return jnp.sum(h * jnp.arange(DV)) + sum(jnp.sum(x) for x in new), (h, new)

    want = jax.jit(
        jax.grad(functools.partial(loss, run("xla")), argnums=tuple(range(6)), has_aux=True)
    )
    got = jax.jit(
        jax.grad(functools.partial(loss, run("pallas")), argnums=tuple(range(6)), has_aux=True)
    )
    names = ["h", "C", "n", "m"] + ["dq", "dk", "dv", "di", "df", "dC", "dn", "dm"]
    (g_w, o_w), (g_g, o_g) = want(q, k, v, i, f, state), got(q, k, v, i, f, state)
    _assert_close((o_g, g_g), (o_w, g_w), jnp.float32, names)


def test_step_continues_chunkwise():
    """Prefill with the chunkwise kernel, then one decode step with the step kernel, equals
    the recurrent reference over the whole sequence."""
    q, k, v, i, f, _ = _inputs(5, 1, 2, 33, 16, 16)

    # Jitted: eager, the interpreted kernels run op by op, several times slower on CPU.
    @jax.jit
    def prefill_then_step(q, k, v, i, f):
        _, state = pk.mlstm_chunkwise(
            q[:, :, :-1],
            k[:, :, :-1],
            v[:, :, :-1],
            i[..., :-1],
            f[..., :-1],
            chunk_size=16,
            return_last_state=True,
            impl="pallas",
            interpret=True,
        )
        h_last, _ = pk.mlstm_step(
            q[:, :, -1],
            k[:, :, -1],
            v[:, :, -1],
            i[..., -1],
            f[..., -1],
            state,
            impl="pallas",
            interpret=True,
        )
        return h_last

    h_all = jax.jit(pk.mlstm_recurrent)(q, k, v, i, f)
    h_last = prefill_then_step(q, k, v, i, f)
    np.testing.assert_allclose(h_last, h_all[:, :, -1], atol=1e-5, rtol=1e-5)


def test_transformations_jit_grad_checkpoint_vmap():
    """The op under jit + grad + checkpoint, and vmapped over an extra leading axis."""
    q, k, v, i, f, state = _inputs(9, 1, 1, 24, 16, 16)

    def loss(impl, q, k, v, i, f):
        h = _chunkwise(impl, 16)(q, k, v, i, f, state)[0]
        return jnp.sum(h**2)

    grad = {
        impl: jax.jit(jax.grad(jax.checkpoint(functools.partial(loss, impl)), argnums=(0, 3, 4)))
        for impl in ("xla", "pallas")
    }
    _assert_close(grad["pallas"](q, k, v, i, f), grad["xla"](q, k, v, i, f), jnp.float32, NAMES[:3])

    stack = [jnp.stack([x, 0.5 * x]) for x in (q, k, v, i, f)]
    # Jitted around the vmap: eager, the interpreted kernel would run op by op.
    vm = {
        impl: jax.jit(jax.vmap(lambda *a, impl=impl: _chunkwise(impl, 16)(*a, state)[0]))
        for impl in ("xla", "pallas")
    }
    _assert_close(vm["pallas"](*stack), vm["xla"](*stack), jnp.float32, ["h"])


@pytest.mark.slow
@pytest.mark.kernel_sweep
def test_model_with_pallas_kernels_matches_xla(pallas_interpret):
    """An xLSTM LM whose mLSTM and sLSTM layers run the Pallas kernels (selected through the
    config; interpret mode by the fixture) gives the impl="xla" logits and gradients, and
    its prefill + decode step equals the full forward."""
    from flax import nnx

    from xlstm_jax import (
        mLSTMBlockConfig,
        mLSTMLayerConfig,
        sLSTMBlockConfig,
        sLSTMLayerConfig,
        xLSTMLMModel,
        xLSTMLMModelConfig,
    )

    def model(impl):
        layer = mLSTMLayerConfig(num_heads=2, chunk_size=16, form="chunkwise", impl=impl)
        slstm = sLSTMLayerConfig(num_heads=2, impl=impl)
        cfg = xLSTMLMModelConfig(
            mlstm_block=mLSTMBlockConfig(mlstm=layer),
            slstm_block=sLSTMBlockConfig(slstm=slstm),
            num_blocks=2,
            slstm_at=(1,),
            embedding_dim=32,
            vocab_size=29,
        )
        return xLSTMLMModel(cfg, rngs=nnx.Rngs(0))

    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 29, (2, 20)), jnp.int32)

    def loss(m):
        return jnp.mean(m(tokens).astype(jnp.float32) ** 2)

    # Under nnx.jit: eager, the model (and the interpreted kernels) would run op by op,
    # several times slower on CPU.
    @nnx.jit
    def prefill_and_step(m):
        logits, state = m.with_state(tokens[:, :19], m.init_state(2))
        last, _ = m.with_state(tokens[:, 19:], state)
        return m(tokens), logits, last

    value_and_grad = nnx.jit(nnx.value_and_grad(loss))
    want = value_and_grad(model("xla"))
    pallas = model("pallas")
    got = value_and_grad(pallas)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    for a, d in zip(jax.tree.leaves(got[1]), jax.tree.leaves(want[1]), strict=True):
        np.testing.assert_allclose(a, d, atol=1e-5, rtol=1e-5)
    full, logits, last = prefill_and_step(pallas)
    np.testing.assert_allclose(jnp.concatenate([logits, last], 1), full, atol=1e-5, rtol=1e-5)
    # Every op ran its kernel: the chunkwise form, the decode step and the sLSTM.
    assert {"mlstm_chunkwise", "mlstm_step", "slstm"} <= set(pallas_interpret)


def test_pallas_without_gpu_or_interpret_raises():
    if on_cuda_gpu():
        pytest.skip("this machine has a CUDA GPU")
    q, k, v, i, f, state = _inputs(0, 1, 1, 4, 16, 16)
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        pk.mlstm_chunkwise(q, k, v, i, f, chunk_size=16, impl="pallas")
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        pk.mlstm_step(
            q[:, :, 0], k[:, :, 0], v[:, :, 0], i[..., 0], f[..., 0], state, impl="pallas"
        )


def test_auto_on_cpu_takes_the_xla_path():
    if on_cuda_gpu():
        pytest.skip("this machine has a CUDA GPU")
    assert pk.resolve_impl("mlstm_chunkwise", "auto", False) == "xla"
    assert pk.resolve_impl("mlstm_step", "auto", False) == "xla"


def test_unsupported_arguments_raise():
    q, k, v, i, f, _ = _inputs(0, 1, 1, 4, 16, 16)
    with pytest.raises(ValueError, match="power of two >= 16"):
        pk.mlstm_chunkwise(q, k, v, i, f, chunk_size=8, impl="pallas", interpret=True)
    with pytest.raises(ValueError, match="out_tile_v"):
        BlockSizes(out_tile_v=48).validate()
    with pytest.raises(ValueError, match="bwd_tile_qk"):
        BlockSizes(bwd_tile_qk=8).validate()


# --- Cross-lowering to CUDA (the Pallas -> Triton lowering GPUs run), benchmark shapes. ---

FWD = ["mlstm_chunk_states", "mlstm_chunk_outputs"]
BWD = FWD + ["mlstm_chunk_states", "mlstm_state_grads", "mlstm_chunk_grads"]


# (B, NH, S, DHQK, DHV, chunk, dtype): the 65,536-token benchmark shapes (NH 16, DHQK 128,
# DHV 256), and one xLSTM-7B layer (NH 8, DHQK 256, DHV 512) at S 8192.
LOWER_SHAPES = [
    (65536 // S, 16, S, 128, 256, L, dtype)
    for S, L, dtype in [
        (2048, 64, jnp.bfloat16),
        (2048, 128, jnp.bfloat16),
        (8192, 64, jnp.bfloat16),
        (8192, 128, jnp.bfloat16),
        (2048, 64, jnp.float32),
    ]
] + [(1, 8, 8192, DQ_7B, DV_7B, 64, jnp.bfloat16)]


@pytest.mark.parametrize(
    "shape",
    LOWER_SHAPES,
    ids=[
        "S2048-L64-bf16",
        "S2048-L128-bf16",
        "S8192-L64-bf16",
        "S8192-L128-bf16",
        "S2048-L64-fp32",
        "7B-S8192-L64-bf16",
    ],
)
@pytest.mark.parametrize("target", CUDA_TARGETS)
def test_cross_lowers_to_cuda(target, shape):
    B, NH, S, DQ, DV, L, dtype = shape
    spec = jax.ShapeDtypeStruct
    args = (
        spec((B, NH, S, DQ), dtype),
        spec((B, NH, S, DQ), dtype),
        spec((B, NH, S, DV), dtype),
        spec((B, NH, S), jnp.float32),
        spec((B, NH, S), jnp.float32),
        (
            spec((B, NH, DQ, DV), jnp.float32),
            spec((B, NH, DQ), jnp.float32),
            spec((B, NH), jnp.float32),
        ),
    )

    def run(q, k, v, i, f, s0):
        return chunkwise.mlstm_chunkwise_pallas(q, k, v, i, f, s0, chunk_size=L)

    def loss(q, k, v, i, f, s0):
        h, last = run(q, k, v, i, f, s0)
        return jnp.sum(h.astype(jnp.float32)) + sum(jnp.sum(s) for s in last)

    assert triton_calls(lower_for_cuda(run, *args, target=target)) == FWD
    assert (
        triton_calls(lower_for_cuda(jax.grad(loss, argnums=tuple(range(6))), *args, target=target))
        == BWD
    )


@pytest.mark.parametrize(
    "B,NH,DQ,DV",
    [(8, 16, 128, 256), (1, 8, DQ_7B, DV_7B), (16, 8, DQ_7B, DV_7B)],
    ids=["B8-NH16-DQ128-DV256", "7B-B1", "7B-B16"],
)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("target", CUDA_TARGETS)
def test_step_cross_lowers_to_cuda(target, dtype, B, NH, DQ, DV):
    spec = jax.ShapeDtypeStruct
    args = (
        spec((B, NH, DQ), dtype),
        spec((B, NH, DQ), dtype),
        spec((B, NH, DV), dtype),
        spec((B, NH), jnp.float32),
        spec((B, NH), jnp.float32),
        (
            spec((B, NH, DQ, DV), jnp.float32),
            spec((B, NH, DQ), jnp.float32),
            spec((B, NH), jnp.float32),
        ),
    )
    assert triton_calls(lower_for_cuda(step_kernel.mlstm_step_pallas, *args, target=target)) == [
        "mlstm_step"
    ]

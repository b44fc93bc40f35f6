"""The Mosaic GPU mLSTM kernels (pallas_kernels/mlstm/mosaic_chunkwise.py) against the XLA
reference.

On CPU the kernels run in the Mosaic GPU interpreter (simulated SMEM, barriers and TMA, with
race detection) at tiny shapes: outputs, final states and the gradients of all of them,
initial states included, for S not a multiple of the chunk. They are also cross-lowered for
sm_90 (the real Pallas -> Mosaic GPU lowering) at the xLSTM-7B head dims. JAX older than
0.11.2 has no Mosaic GPU interpreter: there the kernel tests skip, naming the version, and
the op's error for that case is checked instead. CI budget: under 60 s with ``-n 2``.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TOL, lower_for_cuda, rel_err

import pallas_kernels as pk
from pallas_kernels import dispatch, mosaic
from pallas_kernels.mlstm import api, mosaic_chunkwise, mosaic_kernels

REASON = mosaic.jax_reason()
needs_mosaic = pytest.mark.skipif(REASON is not None, reason=f"JAX {jax.__version__}: {REASON}")


def _inputs(seed, S, DQ, DV, dtype, with_state):
    """Fresh random inputs: forget gates mostly open, random initial C, n >= 0 and m."""
    ks = jax.random.split(jax.random.key(seed), 8)
    normal = functools.partial(jax.random.normal, dtype=jnp.float32)
    q = normal(ks[0], (1, 1, S, DQ)).astype(dtype)
    k = normal(ks[1], (1, 1, S, DQ)).astype(dtype)
    v = normal(ks[2], (1, 1, S, DV)).astype(dtype)
    i = normal(ks[3], (1, 1, S))
    f = normal(ks[4], (1, 1, S)) + 2.0
    state = pk.mlstm_zero_state(1, 1, DQ, DV)
    if with_state:
        state = pk.MLSTMState(
            normal(ks[5], (1, 1, DQ, DV)),
            jnp.abs(normal(ks[6], (1, 1, DQ))),
            normal(ks[7], (1, 1)),
        )
    return q, k, v, i, f, state


def _loss_weights(args, seed):
    """The random weights of the linear loss over h and the last state, as float32 numpy
    arrays, so that a float64 run (under x64) sums the same loss."""
    _, _, v, _, _, s0 = args
    ks = jax.random.split(jax.random.key(seed + 1000), 4)
    w_h = jax.random.normal(ks[0], v.shape, jnp.float32)
    w_last = [jax.random.normal(kk, x.shape, jnp.float32) for kk, x in zip(ks[1:], s0, strict=True)]
    return np.asarray(w_h), [np.asarray(w) for w in w_last]


def _forward_and_grads(impl, L, args, weights):
    """(h, last state) and the gradients of a random linear loss of all of them w.r.t.
    q, k, v, i, f and the initial state."""
    w_h, w_last = weights

    def loss(q, k, v, i, f, s0):
        h, last = pk.mlstm_chunkwise(
            q,
            k,
            v,
            i,
            f,
            chunk_size=L,
            initial_state=s0,
            return_last_state=True,
            impl=impl,
            interpret=impl == "mosaic",
        )
        val = jnp.sum(h.astype(w_h.dtype) * w_h)
        val += sum(jnp.sum(s * w) for s, w in zip(last, w_last, strict=True))
        return val, (h, last)

    grads, out = jax.jit(jax.grad(loss, argnums=tuple(range(6)), has_aux=True))(*args)
    return jax.tree.leaves(out), jax.tree.leaves(grads)


def _float64_truth(L, args, weights):
    """The same outputs and gradients from the XLA reference in float64 (inputs and loss
    weights upcast exactly): the oracle that fp32 rounding is measured against."""
    with jax.enable_x64(True):
        up = jax.tree.map(lambda x: jnp.asarray(np.asarray(x), jnp.float64), (args, weights))
        out, grads = _forward_and_grads("xla", L, *up)
        return [np.asarray(x) for x in out + grads]


NAMES = ["h", "C_last", "n_last", "m_last", "dq", "dk", "dv", "di", "df", "dC0", "dn0", "dm0"]


# fp32: each element against the float64 truth, within TOL of the tensor's scale
# max(1, max |x|). The gradients are sums of O(scale) terms that can cancel to a small
# element (dk at JAX 0.12.1: 0.261345 in float64 from terms of up to 79; XLA fp32 gives
# 0.261338, Mosaic 0.261324: both ~1e-6 of the scale off, in different summation orders), so
# an absolute 1e-5 on the element would measure which rounding order was used, not
# correctness. Measured worst, |mosaic - float64| / scale: 1.7e-6 (di); XLA fp32 6.5e-7.
def _assert_close_to_truth(got, truth):
    atol, rtol = TOL["float32"]
    for name, a, t in zip(NAMES, got, truth, strict=True):
        a, t = np.asarray(a, np.float64), np.asarray(t, np.float64)
        assert a.shape == t.shape, name
        assert np.all(np.isfinite(a)), name
        scale = max(1.0, float(np.max(np.abs(t))))
        np.testing.assert_allclose(a, t, atol=atol * scale, rtol=rtol, err_msg=name)


def _assert_close_norm_relative(got, want, dtype):
    """16-bit matmul operands: norm-relative errors against the XLA reference."""
    _, rtol = TOL[jnp.dtype(dtype).name]
    for name, a, d in zip(NAMES, got, want, strict=True):
        a, d = np.asarray(a, np.float64), np.asarray(d, np.float64)
        assert a.shape == d.shape, name
        assert np.all(np.isfinite(a)), name
        assert rel_err(a, d) < rtol, (name, rel_err(a, d))


# (dtype, S, DHQK, DHV, with initial state): S = a chunk + 3 steps (the interpreter costs
# ~1 s a CTA); DHV 128 is two DHV tiles of kernels S and O. The zero-state path runs in
# fp32 (element-wise against float64): from a zero state dm_0 is an eps-sized effect (~4e-6
# here, the rest of the m_0 paths cancel), which fp32 rounding of the O(10) terms that cancel
# sets to ~10% in the reference itself, so a norm-relative bf16 bound on it would measure
# rounding.
CASES = [
    pytest.param(jnp.float32, 67, 64, 64, False, id="fp32-S67-64x64"),
    pytest.param(jnp.bfloat16, 67, 64, 128, True, id="bf16-S67-64x128-state"),
]


@needs_mosaic
@pytest.mark.parametrize(("dtype", "S", "DQ", "DV", "with_state"), CASES)
def test_interpreted_kernels_match_reference(dtype, S, DQ, DV, with_state):
    args = _inputs(0, S, DQ, DV, dtype, with_state)
    weights = _loss_weights(args, seed=0)
    got = _forward_and_grads("mosaic", 64, args, weights)
    if dtype == jnp.float32:
        _assert_close_to_truth(got[0] + got[1], _float64_truth(64, args, weights))
    else:
        want = _forward_and_grads("xla", 64, args, weights)
        _assert_close_norm_relative(got[0] + got[1], want[0] + want[1], dtype)


@needs_mosaic
def test_interpreter_runs_with_race_detection():
    params = mosaic_kernels._interpret_params(mosaic.plgpu(), interpret=True)
    assert params.detect_races
    assert mosaic_kernels._interpret_params(mosaic.plgpu(), interpret=False) is None


@needs_mosaic
def test_unsupported_arguments_raise():
    args = _inputs(0, 64, 64, 64, jnp.bfloat16, False)
    call = functools.partial(pk.mlstm_chunkwise, *args[:5], impl="mosaic")
    with pytest.raises(ValueError, match="chunk_size 64 or 128"):
        call(chunk_size=32, interpret=True)
    wide = _inputs(0, 64, 256, 64, jnp.bfloat16, False)
    with pytest.raises(ValueError, match="Use chunk_size=64"):
        pk.mlstm_chunkwise(*wide[:5], chunk_size=128, impl="mosaic", interpret=True)
    fp32 = [x.astype(jnp.float32) for x in args[:3]]
    with pytest.raises(ValueError, match="bf16 or fp16"):
        mosaic_chunkwise.mlstm_chunkwise_mosaic(*fp32, *args[3:], chunk_size=64, interpret=False)
    if not dispatch.on_hopper_or_newer():
        with pytest.raises(ValueError, match="compute capability 9.0"):
            call(chunk_size=64)
    with pytest.raises(ValueError, match="no Mosaic GPU kernel"):
        pk.mlstm_parallel(*args[:5], impl="mosaic")


@pytest.mark.skipif(REASON is None, reason=f"JAX {jax.__version__} runs the Mosaic kernels")
def test_old_jax_raises_naming_the_version():
    args = _inputs(0, 64, 64, 64, jnp.bfloat16, False)
    with pytest.raises(ValueError, match=f"this is JAX {jax.__version__}"):
        pk.mlstm_chunkwise(*args[:5], chunk_size=64, impl="mosaic", interpret=True)


def test_auto_on_cpu_never_takes_the_mosaic_path():
    if dispatch.on_cuda_gpu():
        pytest.skip("this machine has a CUDA GPU")
    assert not dispatch.on_hopper_or_newer()
    q, _, v, *_ = _inputs(0, 64, 64, 64, jnp.bfloat16, False)
    probe = api._probe(q, v, q.dtype, 64, 1e-6)  # what pk.mlstm_chunkwise passes
    fn = dispatch.select("mlstm_chunkwise", "auto", False, probe)
    assert fn is dispatch.IMPLEMENTATIONS["mlstm_chunkwise"]["xla"]


def _mosaic_kernels(lowered) -> list[str]:
    """The names of the Mosaic GPU kernels a lowered program launches, in program order."""
    names = []
    for line in lowered.as_text().splitlines():
        if "stablehlo.custom_call @mosaic_gpu" in line:
            # JAX 0.12 appends "_mosaic_gpu" to the kernel name, 0.11.2 a counter ("_0").
            found = re.findall(r"mlstm_mosaic_\w+", line)[:1]
            names += [re.sub(r"(_mosaic_gpu|_\d+)+$", "", n) for n in found]
    return names


@needs_mosaic
@pytest.mark.parametrize(("L", "DQ"), [(64, 256), (128, 128)])
def test_cross_lowers_for_sm90_at_the_7b_head_dims(L, DQ):
    """The real Mosaic GPU lowering (layouts, TMA strides, swizzles, wgmma shapes, the
    shared-memory budget) from this machine, forward and gradient, at DHV 512 (eight DHV
    tiles) and the largest DHQK each chunk size takes."""
    dtype, S, DV = jnp.bfloat16, 2 * L, 512
    args = (
        jnp.zeros((1, 2, S, DQ), dtype),
        jnp.zeros((1, 2, S, DQ), dtype),
        jnp.zeros((1, 2, S, DV), dtype),
        jnp.zeros((1, 2, S)),
        jnp.zeros((1, 2, S)),
        pk.mlstm_zero_state(1, 2, DQ, DV),
    )

    def run(*a):
        return mosaic_chunkwise.mlstm_chunkwise_mosaic(*a, chunk_size=L)

    def loss(*a):
        h, last = run(*a)
        return jnp.sum(h.astype(jnp.float32)) + jnp.sum(last[0])

    fwd = ["mlstm_mosaic_chunk_states", "mlstm_mosaic_chunk_outputs"]
    assert _mosaic_kernels(lower_for_cuda(run, *args)) == fwd
    # The backward recomputes the states (kernel S) and runs kernel S reversed for G_k.
    grad = jax.value_and_grad(loss, argnums=(0, 1, 2))
    bwd = ["mlstm_mosaic_chunk_states", "mlstm_mosaic_state_grads"]
    assert sorted(_mosaic_kernels(lower_for_cuda(grad, *args))) == sorted(fwd + bwd)

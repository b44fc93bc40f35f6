"""The Pallas sLSTM kernel (pallas_kernels/slstm/) against the lax.scan reference.

On CPU the kernels run in interpret mode at tiny shapes, and are cross-lowered to CUDA
(the real Pallas -> Triton lowering, plus an MLIR verification of the Triton IR) at the
benchmark shapes. On a CUDA GPU the same checks also run compiled.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CUDA_TARGETS, MODES, TOL, lower_for_cuda, rel_err, sweep, triton_calls
from jax.experimental import pallas as pl

import pallas_kernels as pk
from pallas_kernels.dispatch import on_cuda_gpu
from pallas_kernels.slstm import triton_backward as backward
from pallas_kernels.slstm import triton_forward as forward
from pallas_kernels.slstm import triton_scan as kernel
from pallas_kernels.slstm.block_sizes import BlockSizes


def _inputs(seed, B, S, NH, DH, dtype=jnp.float32, with_state=True):
    """Fresh random inputs; the initial n mixes zeros and positive values per element."""
    ks = jax.random.split(jax.random.key(seed), 8)
    gx = jax.random.normal(ks[0], (B, S, 4, NH, DH), jnp.float32).astype(dtype)
    R = (jax.random.normal(ks[1], (NH, DH, 4, DH)) / np.sqrt(DH)).astype(dtype)
    bias = jax.random.normal(ks[2], (NH, 4, DH)).astype(dtype)
    state = None
    if with_state:
        shape = (B, NH, DH)
        n0 = jnp.abs(jax.random.normal(ks[5], shape)) + 0.1
        n0 = jnp.where(jax.random.bernoulli(ks[6], 0.5, shape), 0.0, n0)
        state = (
            jax.random.normal(ks[3], shape),
            jax.random.normal(ks[4], shape),
            n0,
            jax.random.normal(ks[7], shape),
        )
    return gx, R, bias, state


def _forward_and_grads(run, gx, R, bias, state, seed):
    """Outputs (y, last state) and the gradients of a random linear loss of all of them."""
    B, _, _, NH, DH = gx.shape
    s0 = pk.slstm_zero_state(B, NH, DH) if state is None else state
    y_shape = (B, gx.shape[1], NH, DH)
    ks = jax.random.split(jax.random.key(seed + 1000), 5)
    w_y = jax.random.normal(ks[0], y_shape)
    w_last = [jax.random.normal(k, (B, NH, DH)) for k in ks[1:]]

    def loss(gx, R, bias, s0):
        ys, last = run(gx, R, bias, s0)
        val = jnp.sum(ys.astype(jnp.float32) * w_y)
        val += sum(jnp.sum(s * w) for s, w in zip(last, w_last, strict=True))
        return val, (ys, last)

    with jax.default_matmul_precision("float32"):  # a full-precision reference on GPU, too
        grads, out = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(gx, R, bias, s0)
    return out, grads


def _reference(function):
    def run(gx, R, bias, s0):
        return pk.slstm(
            gx, R, bias, initial_state=s0, return_last_state=True, function=function, impl="xla"
        )

    return run


def _pallas(function, interpret, block_sizes=None):
    def run(gx, R, bias, s0):
        if block_sizes is None:  # through the public dispatch
            return pk.slstm(
                gx,
                R,
                bias,
                initial_state=s0,
                return_last_state=True,
                function=function,
                impl="pallas",
                interpret=interpret,
            )
        return kernel.slstm_pallas(
            gx, R, bias, s0, function=function, interpret=interpret, block_sizes=block_sizes
        )

    return run


def _assert_close(actual, desired, dtype):
    names = ["y", "y_last", "c_last", "n_last", "m_last"]
    names += ["d_gates_x", "d_recurrent_kernel", "d_bias", "d_y0", "d_c0", "d_n0", "d_m0"]
    atol, rtol = TOL[jnp.dtype(dtype).name]
    for name, a, d in zip(names, jax.tree.leaves(actual), jax.tree.leaves(desired), strict=True):
        a, d = np.asarray(a.astype(jnp.float32)), np.asarray(d.astype(jnp.float32))
        assert a.shape == d.shape, name
        if dtype == jnp.float32:
            np.testing.assert_allclose(a, d, atol=atol, rtol=rtol, err_msg=name)
        else:  # 16-bit matmul operands: compare norm-relative errors
            assert rel_err(a, d) < rtol, (name, rel_err(a, d))


# (B, S, NH, DH, with initial state, function, block sizes); None = defaults via pk.slstm.
CASES = [
    (1, 1, 1, 8, False, "slstm", None),
    (3, 7, 2, 8, True, "slstm", None),
    (1, 16, 1, 32, True, "slstm", None),
    (3, 7, 2, 16, False, "slstm", None),
    # DH tiled (NT = 2), R re-read every step, two batch tiles, padded DH (24 -> 32).
    (17, 5, 1, 24, True, "slstm", BlockSizes(dh_tile=16, r_on_chip_max_bytes=0)),
    (3, 7, 2, 32, True, "slstm", BlockSizes(dh_tile=16)),
    (3, 7, 2, 8, True, "lstm", None),
    (17, 5, 1, 24, True, "lstm", BlockSizes(dh_tile=16, r_on_chip_max_bytes=0)),
]


@pytest.mark.parametrize("interpret", MODES)
# Every JAX: the tiled, padded, two-batch-tile case of each function; the GPU machine's
# JAX: all of them.
@pytest.mark.parametrize(
    "case",
    sweep(
        CASES,
        keep=(4, 7),
        ids=[f"B{c[0]}-S{c[1]}-NH{c[2]}-DH{c[3]}-{c[5]}-{i}" for i, c in enumerate(CASES)],
    ),
)
def test_matches_reference_fp32(case, interpret):
    B, S, NH, DH, with_state, function, bs = case
    seed = CASES.index(case)
    gx, R, bias, state = _inputs(seed, B, S, NH, DH, with_state=with_state)
    want = _forward_and_grads(_reference(function), gx, R, bias, state, seed)
    got = _forward_and_grads(_pallas(function, interpret, bs), gx, R, bias, state, seed)
    _assert_close(got, want, jnp.float32)


@pytest.mark.parametrize("interpret", MODES)
def test_matches_reference_bf16(interpret):
    gx, R, bias, state = _inputs(7, 3, 7, 1, 16, jnp.bfloat16)
    want = _forward_and_grads(_reference("slstm"), gx, R, bias, state, 7)
    got = _forward_and_grads(_pallas("slstm", interpret), gx, R, bias, state, 7)
    _assert_close(got, want, jnp.bfloat16)


def test_interpret_mode_poisons_unwritten_outputs():
    """Guards the next test: interpret mode fills outputs with NaN before the kernel runs."""

    def kernel(x_ref, o_ref):
        o_ref[:8] = x_ref[:8]

    x = jnp.ones((16,), jnp.float32)
    out = pl.pallas_call(
        kernel, out_shape=jax.ShapeDtypeStruct((16,), jnp.float32), interpret=True
    )(x)
    assert np.isnan(np.asarray(out[8:])).all()


@pytest.mark.parametrize("function", ["slstm", "lstm"])
def test_kernel_outputs_fully_written(function):
    """Every element of every kernel output, padding included, is written (no NaN left)."""
    bs = BlockSizes(dh_tile=16, r_on_chip_max_bytes=0)
    B, S, NH, DH = 17, 3, 2, 24  # padded to 32 rows and DH 32, two DH tiles
    Bp, DHp = 32, 32
    pb, pd = (0, Bp - B), (0, DHp - DH)

    # Jitted (interpret mode poisons outputs under jit too): eager, every op of the
    # interpreted kernels would be dispatched one by one, several times slower on CPU.
    @jax.jit
    def kernel_outputs(gx, R, bias, state):
        gxp = jnp.pad(gx, (pb, (0, 0), (0, 0), (0, 0), pd))
        r = jnp.pad(jnp.transpose(R, (0, 2, 1, 3)), ((0, 0), (0, 0), pd, pd))
        b = jnp.pad(bias, ((0, 0), (0, 0), pd))
        s0 = tuple(jnp.pad(s, (pb, (0, 0), pd)) for s in state)
        outs = forward.fwd_call(gxp, r, b, s0, function, True, bs, False)[:2]
        y_seq, seqs, raw = forward.fwd_call(gxp, r, b, s0, function, True, bs, True)
        ns = 3 if function == "slstm" else 1
        dlast = tuple(jnp.ones((Bp, NH, DHp)) for _ in range(ns))
        draw, d0 = backward.bwd_call(
            jnp.ones_like(y_seq), raw, r, seqs, s0, dlast, function, True, bs
        )
        return outs, y_seq, seqs, raw, draw, d0

    outs, y_seq, seqs, raw, draw, d0 = kernel_outputs(*_inputs(3, B, S, NH, DH))
    for leaf in jax.tree.leaves((outs, y_seq, seqs, raw, draw, d0)):
        assert np.isfinite(np.asarray(leaf)).all()


def test_pallas_without_gpu_or_interpret_raises():
    if on_cuda_gpu():
        pytest.skip("this machine has a CUDA GPU")
    gx, R, bias, _ = _inputs(0, 1, 2, 1, 8)
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        pk.slstm(gx, R, bias, impl="pallas")


def test_auto_on_cpu_takes_the_xla_path():
    if on_cuda_gpu():
        pytest.skip("this machine has a CUDA GPU")
    assert pk.resolve_impl("slstm", "auto", False) == "xla"


def test_block_sizes_are_validated():
    gx, R, bias, _ = _inputs(0, 1, 2, 1, 8)
    s0 = pk.slstm_zero_state(1, 1, 8)
    with pytest.raises(ValueError, match="batch_tile"):
        kernel.slstm_pallas(gx, R, bias, s0, interpret=True, block_sizes=BlockSizes(batch_tile=8))
    with pytest.raises(ValueError, match="dh_tile"):
        kernel.slstm_pallas(gx, R, bias, s0, interpret=True, block_sizes=BlockSizes(dh_tile=48))


# --- Cross-lowering to CUDA (the Pallas -> Triton lowering GPUs run), benchmark shapes. ---


@pytest.mark.parametrize("function", ["slstm", "lstm"])
@pytest.mark.parametrize(
    "NH,DH,dtype",
    [(4, 256, jnp.bfloat16), (16, 64, jnp.bfloat16), (16, 64, jnp.float32)],
    ids=["NH4-DH256-bf16", "NH16-DH64-bf16", "NH16-DH64-fp32"],
)
@pytest.mark.parametrize("target", CUDA_TARGETS)
def test_cross_lowers_to_cuda(target, NH, DH, dtype, function):
    B, S = 16, 2048
    spec = jax.ShapeDtypeStruct
    args = (
        spec((B, S, 4, NH, DH), dtype),
        spec((NH, DH, 4, DH), dtype),
        spec((NH, 4, DH), dtype),
        tuple(spec((B, NH, DH), jnp.float32) for _ in range(4)),
    )

    def run(gx, R, bias, s0):
        return kernel.slstm_pallas(gx, R, bias, s0, function=function)

    def loss(gx, R, bias, s0):
        ys, last = run(gx, R, bias, s0)
        return jnp.sum(ys) + sum(jnp.sum(s) for s in last)

    fwd = lower_for_cuda(run, *args, target=target)
    bwd = lower_for_cuda(jax.grad(loss, argnums=(0, 1, 2, 3)), *args, target=target)
    assert triton_calls(fwd) == [f"{function}_fwd"]
    assert triton_calls(bwd) == [f"{function}_fwd", f"{function}_bwd"]


# The GPU machine's JAX is 0.11.2: CI runs this in leg 3, on that JAX, only.
@pytest.mark.slow
@pytest.mark.gpu_machine_jax
def test_gpu_check_script_dry_run(tmp_path):
    """benchmarks/gpu_check.py runs end to end (interpret mode, tiny shapes) and checks out."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "gpu_check.md"
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--reps", "1", "--out", str(out)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root), "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "## sLSTM" in text and "| NO |" not in text
    assert "lax.scan (XLA)" in text and "Pallas default" in text
    assert "## mLSTM" in text and "## The model" in text and "failed" not in text
    assert "- machine:" in text and "- command:" in text

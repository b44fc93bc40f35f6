"""The pure-JAX ops: the three mLSTM forms agree, state passing, the sLSTM scan against a
plain Python loop, and input validation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pallas_kernels as pk

# The ops jitted once for the module: called eagerly they run op by op, several times
# slower on CPU (equal shapes and options reuse the compiled program).
_parallel = jax.jit(pk.mlstm_parallel, static_argnames="eps")
_chunkwise = jax.jit(pk.mlstm_chunkwise, static_argnames=("chunk_size", "eps", "return_last_state"))
_recurrent = jax.jit(pk.mlstm_recurrent, static_argnames=("eps", "return_last_state"))
_step = jax.jit(pk.mlstm_step)
_slstm = jax.jit(pk.slstm, static_argnames=("return_last_state", "function"))


def mlstm_inputs(rng, B=2, NH=3, S=37, DHQK=8, DHV=6, dtype=np.float64):
    q, k = (rng.normal(size=(B, NH, S, DHQK)) for _ in range(2))
    v = rng.normal(size=(B, NH, S, DHV))
    i = rng.normal(size=(B, NH, S)) * 3.0  # wide gate range exercises the stabiliser
    f = rng.normal(size=(B, NH, S)) * 3.0 + 2.0
    return tuple(jnp.asarray(x.astype(dtype)) for x in (q, k, v, i, f))


@pytest.mark.parametrize("S,chunk", [(37, 8), (16, 16), (5, 64), (64, 1), (1, 4)])
def test_mlstm_forms_agree_float64(rng, S, chunk):
    with jax.enable_x64(True):
        args = mlstm_inputs(rng, S=S)
        # eps = 0: the forms are then the same function (eps enters each form's own
        # stabilised domain, see test_parity.py).
        h_par = _parallel(*args, eps=0.0)
        h_chk, s_chk = _chunkwise(*args, chunk_size=chunk, eps=0.0, return_last_state=True)
        h_rec, s_rec = _recurrent(*args, eps=0.0, return_last_state=True)
        assert h_par.dtype == jnp.float64
        np.testing.assert_allclose(h_chk, h_par, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(h_rec, h_par, rtol=1e-10, atol=1e-10)
        for a, b in zip(s_chk, s_rec, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
        # With the default eps, chunkwise and recurrent share the stabiliser exactly.
        h_chk = _chunkwise(*args, chunk_size=chunk)
        h_rec = _recurrent(*args)
        np.testing.assert_allclose(h_chk, h_rec, rtol=1e-10, atol=1e-10)


def test_mlstm_step_matches_recurrent(rng):
    with jax.enable_x64(True):
        q, k, v, i, f = mlstm_inputs(rng, S=6)
        state = pk.mlstm_zero_state(2, 3, 8, 6, jnp.float64)
        hs = []
        for t in range(6):
            h, state = _step(q[:, :, t], k[:, :, t], v[:, :, t], i[..., t], f[..., t], state)
            hs.append(h)
        h_rec, s_rec = _recurrent(q, k, v, i, f, return_last_state=True)
        np.testing.assert_allclose(jnp.stack(hs, 2), h_rec, rtol=1e-12, atol=1e-12)
        for a, b in zip(state, s_rec, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form", ["chunkwise", "recurrent"])
def test_mlstm_state_passing_three_pieces(rng, form):
    with jax.enable_x64(True):
        args = mlstm_inputs(rng, S=41)
        op = {
            "chunkwise": lambda *a, **kw: _chunkwise(*a, chunk_size=8, **kw),
            "recurrent": _recurrent,
        }[form]
        h_all, s_all = op(*args, return_last_state=True)
        state, pieces = None, []
        for lo, hi in [(0, 13), (13, 30), (30, 41)]:
            part = [x[:, :, lo:hi] for x in args]
            h, state = op(*part, initial_state=state, return_last_state=True)
            pieces.append(h)
        np.testing.assert_allclose(jnp.concatenate(pieces, 2), h_all, rtol=1e-10, atol=1e-10)
        for a, b in zip(state, s_all, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_mlstm_chunkwise_gradients_match_recurrent(rng):
    with jax.enable_x64(True):
        args = mlstm_inputs(rng, S=19)
        init = tuple(jnp.asarray(rng.normal(size=s)) for s in [(2, 3, 8, 6), (2, 3, 8), (2, 3)])
        w = jnp.asarray(rng.normal(size=(2, 3, 19, 6)))

        def loss(op, args, init):
            h, (C, n, m) = op(*args, initial_state=init, return_last_state=True)
            return jnp.sum(h * w) + jnp.sum(C) * 0.1 + jnp.sum(n) * 0.1 + jnp.sum(m) * 0.1

        def chunk(*a, **kw):
            return pk.mlstm_chunkwise(*a, chunk_size=4, **kw)

        # Jitted: eager, the gradients run op by op, several times slower on CPU.
        g_c = jax.jit(jax.grad(lambda a, s: loss(chunk, a, s), argnums=(0, 1)))(args, init)
        g_r = jax.jit(jax.grad(lambda a, s: loss(pk.mlstm_recurrent, a, s), argnums=(0, 1)))(
            args, init
        )
        for a, b in zip(jax.tree.leaves(g_c), jax.tree.leaves(g_r), strict=True):
            assert np.all(np.isfinite(a))
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_mlstm_low_precision_inputs_keep_float32_state(rng):
    args = mlstm_inputs(rng, S=10, dtype=np.float32)
    bf = tuple(x.astype(jnp.bfloat16) for x in args)
    h, (C, n, m) = _chunkwise(*bf, chunk_size=4, return_last_state=True)
    assert h.dtype == jnp.bfloat16
    assert C.dtype == n.dtype == m.dtype == jnp.float32
    ref = _chunkwise(*(x.astype(jnp.float32) for x in bf), chunk_size=4)
    np.testing.assert_allclose(h.astype(jnp.float32), ref, rtol=2e-2, atol=2e-2)


def slstm_python_loop(gx, R, b, state, function="slstm"):
    """A deliberately plain NumPy loop over time, batch and unit (float64)."""
    gx, R, b = (np.asarray(x, np.float64) for x in (gx, R, b))
    y, c, n, m = (np.array(s, np.float64) for s in state)
    B, S, _, NH, DH = gx.shape
    out = np.zeros((B, S, NH, DH))

    def sig(x):
        return 1.0 / (1.0 + np.exp(-x))

    for t in range(S):
        raw = np.zeros((B, 4, NH, DH))
        for bb in range(B):
            for h in range(NH):
                for g in range(4):
                    raw[bb, g, h] = gx[bb, t, g, h] + y[bb, h] @ R[h, :, g, :] + b[h, g]
        for bb in range(B):
            for h in range(NH):
                for d in range(DH):
                    ir, fr, zr, orr = raw[bb, :, h, d]
                    if function == "lstm":
                        c[bb, h, d] = sig(fr) * c[bb, h, d] + sig(ir) * np.tanh(zr)
                        y[bb, h, d] = sig(orr) * np.tanh(c[bb, h, d])
                        continue
                    logfm = m[bb, h, d] + np.log(sig(fr))
                    mn = ir if n[bb, h, d] == 0 else max(ir, logfm)
                    ia, fa = min(np.exp(ir - mn), 1.0), min(np.exp(logfm - mn), 1.0)
                    c[bb, h, d] = fa * c[bb, h, d] + ia * np.tanh(zr)
                    n[bb, h, d] = fa * n[bb, h, d] + ia
                    m[bb, h, d] = mn
                    y[bb, h, d] = sig(orr) * c[bb, h, d] / n[bb, h, d]
        out[:, t] = y
    return out, (y, c, n, m)


@pytest.mark.parametrize("function", ["slstm", "lstm"])
def test_slstm_scan_matches_python_loop(rng, function):
    B, S, NH, DH = 2, 7, 2, 3
    gx = rng.normal(size=(B, S, 4, NH, DH))
    R = rng.normal(size=(NH, DH, 4, DH)) * 0.5
    b = rng.normal(size=(NH, 4, DH))
    # Initial state with n zero in some units and non-zero in others (per-element rule).
    n0 = np.abs(rng.normal(size=(B, NH, DH))) + 0.5
    n0[0, 0, :2] = 0.0
    n0[1, 1, 1] = 0.0
    state = (
        rng.normal(size=(B, NH, DH)),
        rng.normal(size=(B, NH, DH)),
        n0,
        rng.normal(size=(B, NH, DH)),
    )
    state = tuple(np.where(n0 == 0.0, 0.0, s) if k in (1,) else s for k, s in enumerate(state))
    ref_y, ref_state = slstm_python_loop(gx, R, b, state, function)
    with jax.enable_x64(True):
        y, last = _slstm(
            jnp.asarray(gx),
            jnp.asarray(R),
            jnp.asarray(b),
            initial_state=tuple(jnp.asarray(s) for s in state),
            return_last_state=True,
            function=function,
        )
        np.testing.assert_allclose(y, ref_y, rtol=1e-12, atol=1e-12)
        for a, r in zip(last, ref_state, strict=True):
            np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)


def test_slstm_state_passing_and_dtype(rng):
    B, S, NH, DH = 2, 12, 2, 4
    gx = jnp.asarray(rng.normal(size=(B, S, 4, NH, DH)), jnp.float32)
    R = jnp.asarray(rng.normal(size=(NH, DH, 4, DH)) * 0.3, jnp.float32)
    b = jnp.asarray(rng.normal(size=(NH, 4, DH)), jnp.float32)
    y_all, s_all = _slstm(gx, R, b, return_last_state=True)
    y1, s1 = _slstm(gx[:, :5], R, b, return_last_state=True)
    y2, s2 = _slstm(gx[:, 5:], R, b, initial_state=s1, return_last_state=True)
    np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), y_all, rtol=1e-6, atol=1e-6)
    for a, c in zip(s2, s_all, strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-6)
    y_bf, s_bf = _slstm(gx.astype(jnp.bfloat16), R, b, return_last_state=True)
    assert y_bf.dtype == jnp.bfloat16 and s_bf[2].dtype == jnp.float32


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda a: (a[0][0],) + a[1:], "`q` must have rank 4"),
        (lambda a: (a[0], a[1][..., :4]) + a[2:], "`k` must have shape"),
        (lambda a: a[:2] + (a[2][:, :, :3],) + a[3:], "`v` must have shape"),
        (lambda a: a[:3] + (a[3][..., None],) + a[4:], "`i` must have rank 3"),
        (lambda a: a[:4] + (a[4][:, :, :2],), "`f` must have shape"),
        (lambda a: (a[0].astype(jnp.bfloat16),) + a[1:], "must share one dtype"),
    ],
)
def test_mlstm_bad_input_raises(rng, mutate, match):
    args = mlstm_inputs(rng, S=8, dtype=np.float32)
    with pytest.raises(ValueError, match=match):
        pk.mlstm_chunkwise(*mutate(args))


def test_mlstm_bad_options_raise(rng):
    args = mlstm_inputs(rng, S=8, dtype=np.float32)
    with pytest.raises(ValueError, match="chunk_size"):
        pk.mlstm_chunkwise(*args, chunk_size=0)
    with pytest.raises(ValueError, match="impl"):
        pk.mlstm_chunkwise(*args, impl="cuda")
    with pytest.raises(ValueError, match=r"initial_state\.m"):
        pk.mlstm_chunkwise(
            *args, initial_state=(jnp.zeros((2, 3, 8, 6)), jnp.zeros((2, 3, 8)), jnp.zeros((2,)))
        )


def test_slstm_bad_input_raises(rng):
    gx = jnp.zeros((2, 5, 4, 2, 8))
    R, b = jnp.zeros((2, 8, 4, 8)), jnp.zeros((2, 4, 8))
    with pytest.raises(ValueError, match="`gates_x` must have rank 5"):
        pk.slstm(gx[0], R, b)
    with pytest.raises(ValueError, match="4 gates"):
        pk.slstm(jnp.zeros((2, 5, 3, 2, 8)), R, b)
    with pytest.raises(ValueError, match="`recurrent_kernel` must have shape"):
        pk.slstm(gx, R[:, :4], b)
    with pytest.raises(ValueError, match="`bias` must have shape"):
        pk.slstm(gx, R, b[0])
    with pytest.raises(ValueError, match="`function`"):
        pk.slstm(gx, R, b, function="gru")

"""The mLSTM decode step as a Pallas GPU kernel (Triton lowering), one fused update of
``pallas_kernels.mlstm.reference.recurrent_step`` (``pk.mlstm_step`` with ``impl="pallas"``).

Grid (B*NH, DHV tiles): each program updates its DHV tile of C and, from the tile-0
program, n and m; h is written per tile. Decoding is not a training path: the backward is
autodiff of the reference step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels.mlstm.block_sizes import DEFAULT_BLOCK_SIZES, BlockSizes
from pallas_kernels.mlstm.reference import MLSTMState, recurrent_step
from pallas_kernels.triton import call, kernel_state_dtype, log_sigmoid, pad_dim


def _step_kernel(
    q_ref,
    k_ref,
    v_ref,
    i_ref,
    f_ref,
    c_ref,
    n_ref,
    m_ref,
    h_ref,
    co_ref,
    no_ref,
    mo_ref,
    *,
    eps,
    scale,
):
    """One decode step for one (BH, DHV tile), as ``reference.recurrent_step``.

    Refs: q, k (DQp,), v (TV,), i, f (1,), C (DQp, TV), n (DQp,), m (1,); outputs h (TV,),
    the new C (DQp, TV), n (DQp,) and m (1,) (n, m from the DHV-tile-0 program).
    """
    acc = c_ref.dtype
    q = q_ref[...].astype(acc)
    k = k_ref[...].astype(acc)
    f = f_ref[0]
    logf = log_sigmoid(f)
    m = m_ref[0]
    i = i_ref[0]
    m_new = jnp.maximum(logf + m, i)
    fa = jnp.exp(logf + m - m_new)
    ia = jnp.exp(i - m_new)
    C = fa * c_ref[...] + ia * (k[:, None] * v_ref[...].astype(acc)[None, :])
    n = fa * n_ref[...] + ia * k
    qs = q * scale
    num = jnp.sum(qs[:, None] * C, axis=0)
    den = jnp.maximum(jnp.abs(jnp.sum(qs * n)), jnp.exp(-m_new)) + eps
    h_ref[...] = (num / den).astype(h_ref.dtype)
    co_ref[...] = C

    @pl.when(pl.program_id(1) == 0)
    def _():
        no_ref[...] = n
        mo_ref[0] = m_new


def _step_call(q, k, v, i, f, state, eps, scale, bs, interpret):
    """Decode-step kernel on kernel-layout arrays: q, k (BH, DQp), v (BH, DVp), i, f, m (BH, 1)."""
    BH, DQp = q.shape
    DVp = v.shape[-1]
    acc = state[0].dtype
    TV = min(bs.step_tile_v, DVp)
    vec_q = pl.BlockSpec((None, DQp), lambda h, j: (h, 0))
    vec_v = pl.BlockSpec((None, TV), lambda h, j: (h, j))
    one = pl.BlockSpec((None, 1), lambda h, j: (h, 0))
    C = pl.BlockSpec((None, DQp, TV), lambda h, j: (h, 0, j))
    out_shape = [
        jax.ShapeDtypeStruct((BH, DVp), v.dtype),
        jax.ShapeDtypeStruct((BH, DQp, DVp), acc),
        jax.ShapeDtypeStruct((BH, DQp), acc),
        jax.ShapeDtypeStruct((BH, 1), acc),
    ]
    return call(
        functools.partial(_step_kernel, eps=eps, scale=scale),
        name="mlstm_step",
        grid=(BH, DVp // TV),
        in_specs=[vec_q, vec_q, vec_v, one, one, C, vec_q, one],
        out_specs=[vec_v, C, vec_q, one],
        out_shape=out_shape,
        num_warps=bs.num_warps_step,
        num_stages=bs.num_stages,
        interpret=interpret,
    )(q, k, v, i, f, *state)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9))
def _step_core(q, k, v, i, f, state, eps, scale, bs, interpret):
    return _step_call(q, k, v, i, f, state, eps, scale, bs, interpret)


def _step_core_fwd(q, k, v, i, f, state, eps, scale, bs, interpret):
    return _step_call(q, k, v, i, f, state, eps, scale, bs, interpret), (q, k, v, i, f, state)


def _step_ref(q, k, v, i, f, state, eps, scale):
    """``reference.recurrent_step`` on kernel-layout arrays (zero-padded q/k dims: the scale
    is passed in)."""
    C, n, m = state
    acc = C.dtype
    q, k, v = (x.astype(acc)[None] for x in (q, k, v))  # (1, BH, D): the step's (B, NH, D)
    h, (C, n, m) = recurrent_step(
        q * (scale * q.shape[-1] ** 0.5), k, v, i.T, f.T, MLSTMState(C[None], n[None], m.T), eps
    )
    return h[0], C[0], n[0], m.T


def _step_core_bwd(eps, scale, bs, interpret, res, cts):
    """Decoding is not a training path: the backward is autodiff of the XLA step."""
    q, k, v, i, f, state = res
    _, vjp = jax.vjp(lambda *a: _step_ref(*a, eps, scale), q, k, v, i, f, state)
    dh, dC, dn, dm = cts
    return vjp((dh.astype(dC.dtype), dC, dn, dm))


_step_core.defvjp(_step_core_fwd, _step_core_bwd)


def mlstm_step_pallas(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    i: jax.Array,
    f: jax.Array,
    state: tuple[jax.Array, jax.Array, jax.Array],
    *,
    eps: float = 1e-6,
    interpret: bool = False,
    block_sizes: BlockSizes | None = None,
):
    """One fused decode step (the "pallas" entry of ``mlstm_step`` in the dispatch table),
    with the numerics of ``reference.recurrent_step``.

    Args:
      q, k: (B, NH, DHQK); v: (B, NH, DHV) in bf16, fp16 or fp32; i, f: (B, NH);
      state: (C (B, NH, DHQK, DHV), n (B, NH, DHQK), m (B, NH)).
      eps, interpret, block_sizes: as ``chunkwise.mlstm_chunkwise_pallas``.

    Returns:
      (h (B, NH, DHV) in v's dtype, new (C, n, m) float32).
    """
    bs = DEFAULT_BLOCK_SIZES if block_sizes is None else block_sizes
    bs.validate()
    acc = kernel_state_dtype("mLSTM", q.dtype, interpret)
    B, NH, DQ = q.shape
    DV = v.shape[-1]
    BH, DQp, DVp = B * NH, pad_dim(DQ), pad_dim(DV)
    pq, pv, z = (0, DQp - DQ), (0, DVp - DV), (0, 0)
    C, n, m = (s.astype(acc) for s in state)
    args = (
        jnp.pad(q, (z, z, pq)).reshape(BH, DQp),
        jnp.pad(k, (z, z, pq)).reshape(BH, DQp),
        jnp.pad(v, (z, z, pv)).reshape(BH, DVp),
        i.astype(acc).reshape(BH, 1),
        f.astype(acc).reshape(BH, 1),
        (
            jnp.pad(C, (z, z, pq, pv)).reshape(BH, DQp, DVp),
            jnp.pad(n, (z, z, pq)).reshape(BH, DQp),
            m.reshape(BH, 1),
        ),
    )
    h, C, n, m = _step_core(*args, eps, DQ**-0.5, bs, interpret)
    new = (
        C.reshape(B, NH, DQp, DVp)[..., :DQ, :DV],
        n.reshape(B, NH, DQp)[..., :DQ],
        m.reshape(B, NH),
    )
    return h.reshape(B, NH, DVp)[..., :DV], new

"""Forward kernels of the chunkwise mLSTM (Triton lowering); the design and equations
(1)-(5) are in ``pallas_kernels/mlstm/triton_chunkwise.py``.

  kernel A ``mlstm_chunk_states``, grid (B*NH, DHQK tiles, DHV tiles): chunk-start states.
  kernel B ``mlstm_chunk_outputs``, grid (B*NH, chunks, DHV tiles): outputs, m_t and den_t.

Kernel layouts: q, k (BH, Sp, DQp); v, h (BH, Sp, DVp); i, b (BH, Sp) fp32; chunk states
C (BH, NC, DQp, DVp), n (BH, NC, DQp), m (BH, NC) fp32; m0/m_last (BH, 1).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels.triton import call, dot, dot_nt, dot_tn


def intra_chunk(s_qk, i, b, m_prev):
    """Eqs. (3)-(4) inside one chunk: everything but the products with v and the state.

    Args:
      s_qk: (L, L) fp32 scaled scores s q_t . k_s; i, b: (L,) fp32; m_prev: scalar m_{k-1}.
    Returns:
      dict with mask (L, L), log_d (L, L) (-inf above the diagonal), row_max (L,) =
      max_s log D_ts, l (L,) = b_t + m_{k-1}, m (L,) = m_t, P (L, L) = e^{log D - m_t} (0 off
      the causal part), A = s_qk * P, e (L,) = e^{l_t - m_t}.
    """
    L = s_qk.shape[0]
    rows = jax.lax.broadcasted_iota(jnp.int32, (L, L), 0)
    cols = jax.lax.broadcasted_iota(jnp.int32, (L, L), 1)
    mask = cols <= rows
    log_d = jnp.where(mask, b[:, None] - b[None, :] + i[None, :], -jnp.inf)  # (3)
    row_max = jnp.max(log_d, axis=1)
    l_t = b + m_prev
    m_t = jnp.maximum(l_t, row_max)  # (3)
    P = jnp.where(mask, jnp.exp(log_d - m_t[:, None]), 0.0)
    return dict(
        mask=mask,
        log_d=log_d,
        row_max=row_max,
        l=l_t,
        m=m_t,
        P=P,
        A=s_qk * P,  # (4)
        e=jnp.exp(l_t - m_t),  # (4)
    )


def chunk_slice(c, L):
    return pl.ds(pl.multiple_of(c * L, L), L)


def _chunk_states_kernel(
    k_ref,
    v_ref,
    i_ref,
    b_ref,
    c0_ref,
    n0_ref,
    m0_ref,
    cs_ref,
    ns_ref,
    ms_ref,
    cl_ref,
    nl_ref,
    ml_ref,
    *,
    L,
    NC,
):
    """Kernel A: eqs. (1)-(2) over all chunks for one (BH, DHQK tile, DHV tile).

    Refs: k (Sp, TQ), v (Sp, TV), i, b (Sp,), C0 (TQ, TV), n0 (TQ,), m0 (1,); outputs the
    chunk-start states C (NC, TQ, TV), n (NC, TQ), m (NC,) and the final C, n, m. n is
    written by the DHV-tile-0 programs only, m by program (., 0, 0) only.
    """
    mm, acc = k_ref.dtype, c0_ref.dtype
    first_v = pl.program_id(2) == 0
    first_qv = jnp.logical_and(pl.program_id(1) == 0, first_v)

    def body(c, carry):
        C, n, m = carry
        cs_ref[c] = C

        @pl.when(first_v)
        def _():
            ns_ref[c] = n

        @pl.when(first_qv)
        def _():
            ms_ref[c] = m

        rows = chunk_slice(c, L)
        kk = k_ref[rows, :]
        g = b_ref[c * L + L - 1]
        a = g - b_ref[rows] + i_ref[rows]  # (1)
        m_new = jnp.maximum(g + m, jnp.max(a))  # (1)
        decay = jnp.exp(g + m - m_new)
        w = jnp.exp(a - m_new)
        kw = kk.astype(acc) * w[:, None]
        C = decay * C + dot_tn(kw.astype(mm), v_ref[rows, :], acc)  # (2)
        n = decay * n + jnp.sum(kw, axis=0)  # (2)
        return C, n, m_new

    init = (c0_ref[...], n0_ref[...], m0_ref[0])
    C, n, m = jax.lax.fori_loop(0, NC, body, init)
    cl_ref[...] = C

    @pl.when(first_v)
    def _():
        nl_ref[...] = n

    @pl.when(first_qv)
    def _():
        ml_ref[0] = m


def _chunk_outputs_kernel(
    q_ref,
    k_ref,
    v_ref,
    i_ref,
    b_ref,
    cs_ref,
    ns_ref,
    ms_ref,
    h_ref,
    mt_ref,
    den_ref,
    *,
    scale,
    eps,
    TQ,
    NQ,
):
    """Kernel B: eqs. (3)-(5) for one (BH, chunk, DHV tile).

    Refs: q, k (L, DQp), v (L, TV), i, b (L,), C_{k-1} (DQp, TV), n_{k-1} (DQp,), m (NC,);
    outputs h (L, TV) and, from the DHV-tile-0 program, m_t and den_t (L,) fp32. The
    contractions over DHQK (q.k, q.C, q.n) run over (L, TQ) tiles of q and k.
    """
    mm, acc = q_ref.dtype, cs_ref.dtype
    L, TV = v_ref.shape

    def over_qk(a, carry):
        s_qk, qc, qn = carry
        rows = pl.ds(pl.multiple_of(a * TQ, TQ), TQ)
        q_a = q_ref[:, rows]
        s_qk += dot_nt(q_a, k_ref[:, rows], acc)
        qc += dot(q_a, cs_ref[rows, :].astype(mm), acc)
        qn += jnp.sum(q_a.astype(acc) * ns_ref[rows][None, :], axis=1)
        return s_qk, qc, qn

    init = (jnp.zeros((L, L), acc), jnp.zeros((L, TV), acc), jnp.zeros((L,), acc))
    s_qk, qc, qn = jax.lax.fori_loop(0, NQ, over_qk, init)
    x = intra_chunk(s_qk * scale, i_ref[...], b_ref[...], ms_ref[pl.program_id(1)])
    e = x["e"]
    num = dot(x["A"].astype(mm), v_ref[...], acc) + (e * scale)[:, None] * qc  # (4)
    den = jnp.sum(x["A"], axis=1) + e * scale * qn  # (4)
    normaliser = jnp.maximum(jnp.abs(den), jnp.exp(-x["m"])) + eps  # (5)
    h_ref[...] = (num / normaliser[:, None]).astype(h_ref.dtype)

    @pl.when(pl.program_id(2) == 0)
    def _():
        mt_ref[...] = x["m"]
        den_ref[...] = den


def chunk_states(k, v, i, b, state0, L, bs, interpret):
    """Kernel A. Returns chunk-start (C, n, m) (BH, NC, ...) and the final (C, n, m (BH, 1))."""
    BH, Sp, DQp = k.shape
    DVp = v.shape[-1]
    NC = Sp // L
    acc = b.dtype
    TQ, TV = min(bs.state_tile_qk, DQp), min(bs.state_tile_v, DVp)
    grid = (BH, DQp // TQ, DVp // TV)
    kernel = functools.partial(_chunk_states_kernel, L=L, NC=NC)
    seq_q = pl.BlockSpec((None, Sp, TQ), lambda h, a, c: (h, 0, a))
    seq_v = pl.BlockSpec((None, Sp, TV), lambda h, a, c: (h, 0, c))
    gate = pl.BlockSpec((None, Sp), lambda h, a, c: (h, 0))
    C = pl.BlockSpec((None, TQ, TV), lambda h, a, c: (h, a, c))
    n = pl.BlockSpec((None, TQ), lambda h, a, c: (h, a))
    m = pl.BlockSpec((None, 1), lambda h, a, c: (h, 0))
    out_specs = [
        pl.BlockSpec((None, NC, TQ, TV), lambda h, a, c: (h, 0, a, c)),
        pl.BlockSpec((None, NC, TQ), lambda h, a, c: (h, 0, a)),
        pl.BlockSpec((None, NC), lambda h, a, c: (h, 0)),
        C,
        n,
        m,
    ]
    out_shape = [
        jax.ShapeDtypeStruct((BH, NC, DQp, DVp), acc),
        jax.ShapeDtypeStruct((BH, NC, DQp), acc),
        jax.ShapeDtypeStruct((BH, NC), acc),
        jax.ShapeDtypeStruct((BH, DQp, DVp), acc),
        jax.ShapeDtypeStruct((BH, DQp), acc),
        jax.ShapeDtypeStruct((BH, 1), acc),
    ]
    cs, ns, ms, cl, nl, ml = call(
        kernel,
        name="mlstm_chunk_states",
        grid=grid,
        in_specs=[seq_q, seq_v, gate, gate, C, n, m],
        out_specs=out_specs,
        out_shape=out_shape,
        num_warps=bs.num_warps_state,
        num_stages=bs.num_stages,
        interpret=interpret,
    )(k, v, i, b, *state0)
    return (cs, ns, ms), (cl, nl, ml)


def chunk_outputs(q, k, v, i, b, starts, L, scale, eps, bs, interpret):
    """Kernel B. Returns h (BH, Sp, DVp) in v's dtype, m_t and den_t (BH, Sp) fp32."""
    BH, Sp, DQp = q.shape
    DVp = v.shape[-1]
    NC = Sp // L
    acc = b.dtype
    TQ, TV = min(bs.out_tile_qk, DQp), min(bs.out_tile_v, DVp)
    kernel = functools.partial(_chunk_outputs_kernel, scale=scale, eps=eps, TQ=TQ, NQ=DQp // TQ)
    qk = pl.BlockSpec((None, L, DQp), lambda h, c, j: (h, c, 0))
    vt = pl.BlockSpec((None, L, TV), lambda h, c, j: (h, c, j))
    gate = pl.BlockSpec((None, L), lambda h, c, j: (h, c))
    in_specs = [
        qk,
        qk,
        vt,
        gate,
        gate,
        pl.BlockSpec((None, None, DQp, TV), lambda h, c, j: (h, c, 0, j)),
        pl.BlockSpec((None, None, DQp), lambda h, c, j: (h, c, 0)),
        pl.BlockSpec((None, NC), lambda h, c, j: (h, 0)),
    ]
    out_shape = [
        jax.ShapeDtypeStruct((BH, Sp, DVp), v.dtype),
        jax.ShapeDtypeStruct((BH, Sp), acc),
        jax.ShapeDtypeStruct((BH, Sp), acc),
    ]
    return call(
        kernel,
        name="mlstm_chunk_outputs",
        grid=(BH, NC, DVp // TV),
        in_specs=in_specs,
        out_specs=[vt, gate, gate],
        out_shape=out_shape,
        num_warps=bs.num_warps_chunk,
        num_stages=bs.num_stages,
        interpret=interpret,
    )(q, k, v, i, b, *starts)

"""Backward kernels of the chunkwise mLSTM (Triton lowering) and the custom_vjp backward
rule that drives them; the design is in ``pallas_kernels/mlstm/triton_chunkwise.py``.

  kernel C ``mlstm_state_grads``, grid (B*NH, DHQK tiles, DHV tiles), chunks in reverse:
    the chunk-end state cotangents G_k and dn_k, and the initial-state gradients.
  kernel D ``mlstm_chunk_grads``, grid (B*NH, chunks): dq, dk, dv and the log-space gradients
    of the gate terms of one chunk.
The scalar stabiliser recursion and the gate cumsum are differentiated in XLA.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels.mlstm.triton_forward import chunk_slice, chunk_states, intra_chunk
from pallas_kernels.triton import call, dot, dot_nt, dot_tn


def _state_grads_kernel(
    q_ref,
    dh_ref,
    coef_ref,
    coef_den_ref,
    decay_ref,
    dcl_ref,
    dnl_ref,
    gs_ref,
    gns_ref,
    dc0_ref,
    dn0_ref,
    *,
    L,
    NC,
    scale,
):
    """Kernel C: the chunk-end state cotangents G_k, dn_k, chunks in reverse.

    Refs: q (Sp, TQ), dh (Sp, TV), coef = e_t / N_t and coef_den = e_t dden_t (Sp,) fp32,
    decay (NC,) = e^{g_k + m_{k-1} - m_k}, cotangents of the final C (TQ, TV) and n (TQ,);
    outputs G (NC, TQ, TV), dn (NC, TQ) (DHV-tile-0 programs) and dC0, dn0.
    """
    mm, acc = q_ref.dtype, dcl_ref.dtype
    first_v = pl.program_id(2) == 0

    def body(j, carry):
        G, dn = carry
        c = NC - 1 - j
        gs_ref[c] = G

        @pl.when(first_v)
        def _():
            gns_ref[c] = dn

        rows = chunk_slice(c, L)
        qf = q_ref[rows, :].astype(acc) * scale
        decay = decay_ref[c]
        # dL/dC_{k-1} = decay dL/dC_k (2) + sum_t e_t s q_t dnum_t^T (4).
        G = decay * G + dot_tn(
            (qf * coef_ref[rows][:, None]).astype(mm), dh_ref[rows, :].astype(mm), acc
        )
        dn = decay * dn + jnp.sum(qf * coef_den_ref[rows][:, None], axis=0)
        return G, dn

    G, dn = jax.lax.fori_loop(0, NC, body, (dcl_ref[...], dnl_ref[...]))
    dc0_ref[...] = G

    @pl.when(first_v)
    def _():
        dn0_ref[...] = dn


def _chunk_grads_kernel(
    q_ref,
    k_ref,
    v_ref,
    dh_ref,
    i_ref,
    b_ref,
    cs_ref,
    ns_ref,
    ms_ref,
    gs_ref,
    gns_ref,
    inv_n_ref,
    dden_ref,
    dm_n_ref,
    w_ref,
    dq_ref,
    dk_ref,
    dv_ref,
    drow_ref,
    dcol_ref,
    dl_ref,
    dlw_ref,
    ddecay_ref,
    *,
    scale,
    TQ,
    NQ,
    TV,
    NV,
):
    """Kernel D: dq, dk, dv and the log-space gate gradients of one (BH, chunk).

    Refs: q, k (L, DQp), v, dh (L, DVp), i, b (L,), C_{k-1} (DQp, DVp), n_{k-1} (DQp,),
    m (NC,), G_k (DQp, DVp), dn_k (DQp,), 1/N_t, dden_t, dm_t (from N) and w_s (L,) fp32.
    Outputs dq, dk (L, DQp), dv (L, DVp) fp32; per step sum_s dlogD_ts, sum_t dlogD_ts,
    dL/dl_t and dL/dlog w_s (L,); dL/d(decay of chunk k) at [k] of a (NC,) row.

    Both head dims are tiled (TQ, TV), so no (L, DQp) or (DQp, DVp) value is ever held
    whole: pass 1 over the DHV tiles gives dA and dv (DHQK tiles inside), pass 2 over the
    DHQK tiles gives dq and dk (DHV tiles inside). C_{k-1} and G_k are read twice.
    """
    mm, acc = q_ref.dtype, cs_ref.dtype
    c = pl.program_id(1)
    L = q_ref.shape[0]
    inv_n, w, dden = inv_n_ref[...], w_ref[...], dden_ref[...]

    def qk_tile(a):
        return pl.ds(pl.multiple_of(a * TQ, TQ), TQ)

    def v_tile(j):
        return pl.ds(pl.multiple_of(j * TV, TV), TV)

    def dnum_of(cols):
        return dh_ref[:, cols].astype(acc) * inv_n[:, None]  # dL/dnum_t

    def scores(a, s_qk):
        cols = qk_tile(a)
        return s_qk + dot_nt(q_ref[:, cols], k_ref[:, cols], acc)

    s_qk = jax.lax.fori_loop(0, NQ, scores, jnp.zeros((L, L), acc)) * scale
    x = intra_chunk(s_qk, i_ref[...], b_ref[...], ms_ref[c])
    A, P, e = x["A"], x["P"], x["e"]
    A_mm = A.astype(mm)

    def dv_pass(j, dA):
        cols = v_tile(j)
        dnum_mm = dnum_of(cols).astype(mm)

        def k_g(a, kg):  # k_s^T G_k, contracted over the DHQK tiles
            rows = qk_tile(a)
            return kg + dot(k_ref[:, rows], gs_ref[rows, cols].astype(mm), acc)

        kg = jax.lax.fori_loop(0, NQ, k_g, jnp.zeros((L, TV), acc))
        # dv_s = sum_t A_ts dnum_t (4) + w_s G_k^T k_s (2).
        dv_ref[:, cols] = dot_tn(A_mm, dnum_mm, acc) + w[:, None] * kg
        return dA + dot_nt(dnum_mm, v_ref[:, cols], acc)  # dnum_t . v_s

    dA = jax.lax.fori_loop(0, NV, dv_pass, jnp.zeros((L, L), acc)) + dden[:, None]
    dS_mm = (dA * P).astype(mm)

    def dqk_pass(a, carry):
        qcd, qn, dlw, ddec = carry
        rows = qk_tile(a)
        q_a, k_a = q_ref[:, rows], k_ref[:, rows]
        n_a, gn_a = ns_ref[rows], gns_ref[rows]

        def over_v(j, inner):
            qcd, dqi, kg, ddec = inner
            cols = v_tile(j)
            dnum = dnum_of(cols)
            dnum_mm = dnum.astype(mm)
            c_aj, g_aj = cs_ref[rows, cols], gs_ref[rows, cols]
            qcd += jnp.sum(dot(q_a, c_aj.astype(mm), acc) * dnum, axis=1)  # q_t^T C dnum_t
            dqi += dot_nt(dnum_mm, c_aj.astype(mm), acc)  # C dnum_t
            kg += dot_nt(v_ref[:, cols], g_aj.astype(mm), acc)  # G_k v_s
            ddec += jnp.sum(g_aj * c_aj)  # <G_k, C_{k-1}>
            return qcd, dqi, kg, ddec

        zeros_lq = jnp.zeros((L, TQ), acc)
        qcd, dqi, kg, ddec = jax.lax.fori_loop(0, NV, over_v, (qcd, zeros_lq, zeros_lq, ddec))
        dq_ref[:, rows] = scale * (
            dot(dS_mm, k_a, acc) + e[:, None] * (dqi + dden[:, None] * n_a[None, :])
        )
        dk_rec = w[:, None] * (kg + gn_a[None, :])  # dL/dk_s through (2)
        dk_ref[:, rows] = scale * dot_tn(dS_mm, q_a, acc) + dk_rec
        dlw += jnp.sum(k_a.astype(acc) * dk_rec, axis=1)  # dL/dlog w_s
        qn += jnp.sum(q_a.astype(acc) * n_a[None, :], axis=1)
        return qcd, qn, dlw, ddec + jnp.sum(gn_a * n_a)

    zeros_l = jnp.zeros((L,), acc)
    init = (zeros_l, zeros_l, zeros_l, jnp.zeros((), acc))
    qcd, qn, dlw, ddec = jax.lax.fori_loop(0, NQ, dqk_pass, init)

    de = scale * (qcd + dden * qn)  # dL/de_t
    R = dA * A  # dL/dlog D through P
    # (3): m_t = max(l_t, max_s log D_ts) passes its cotangent to the branch it took (ties
    # split evenly, as autodiff of jnp.maximum / jnp.max does).
    dm = dm_n_ref[...] - jnp.sum(R, axis=1) - de * e
    l_t, row_max = x["l"], x["row_max"]
    w_l = jnp.where(l_t > row_max, 1.0, jnp.where(l_t == row_max, 0.5, 0.0))
    is_max = jnp.logical_and(x["mask"], x["log_d"] == row_max[:, None]).astype(acc)
    to_max = (1.0 - w_l) * dm / jnp.sum(is_max, axis=1)
    dlog_d = R + is_max * to_max[:, None]
    drow_ref[...] = jnp.sum(dlog_d, axis=1)
    dcol_ref[...] = jnp.sum(dlog_d, axis=0)
    dl_ref[...] = de * e + w_l * dm
    dlw_ref[...] = dlw
    ddecay_ref[c] = ddec


def state_grads(q, dh, coef, coef_den, decay, dlast, L, scale, bs, interpret):
    """Kernel C. Returns chunk-end cotangents G (BH, NC, DQp, DVp), dn (BH, NC, DQp), dC0, dn0."""
    BH, Sp, DQp = q.shape
    DVp = dh.shape[-1]
    NC = Sp // L
    acc = coef.dtype
    TQ, TV = min(bs.state_tile_qk, DQp), min(bs.state_tile_v, DVp)
    kernel = functools.partial(_state_grads_kernel, L=L, NC=NC, scale=scale)
    gate = pl.BlockSpec((None, Sp), lambda h, a, c: (h, 0))
    C = pl.BlockSpec((None, TQ, TV), lambda h, a, c: (h, a, c))
    n = pl.BlockSpec((None, TQ), lambda h, a, c: (h, a))
    in_specs = [
        pl.BlockSpec((None, Sp, TQ), lambda h, a, c: (h, 0, a)),
        pl.BlockSpec((None, Sp, TV), lambda h, a, c: (h, 0, c)),
        gate,
        gate,
        pl.BlockSpec((None, NC), lambda h, a, c: (h, 0)),
        C,
        n,
    ]
    out_specs = [
        pl.BlockSpec((None, NC, TQ, TV), lambda h, a, c: (h, 0, a, c)),
        pl.BlockSpec((None, NC, TQ), lambda h, a, c: (h, 0, a)),
        C,
        n,
    ]
    out_shape = [
        jax.ShapeDtypeStruct((BH, NC, DQp, DVp), acc),
        jax.ShapeDtypeStruct((BH, NC, DQp), acc),
        jax.ShapeDtypeStruct((BH, DQp, DVp), acc),
        jax.ShapeDtypeStruct((BH, DQp), acc),
    ]
    return call(
        kernel,
        name="mlstm_state_grads",
        grid=(BH, DQp // TQ, DVp // TV),
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        num_warps=bs.num_warps_state,
        num_stages=bs.num_stages,
        interpret=interpret,
    )(q, dh, coef, coef_den, decay, *dlast)


def chunk_grads(q, k, v, dh, i, b, starts, gstarts, vecs, L, scale, bs, interpret):
    """Kernel D. Returns dq, dk (BH, Sp, DQp), dv (BH, Sp, DVp) fp32, the per-step gate
    vectors (row sums, column sums of dlog D, dl, dlog w) (BH, Sp) and ddecay (BH, NC)."""
    BH, Sp, DQp = q.shape
    DVp = v.shape[-1]
    NC = Sp // L
    acc = b.dtype
    TQ, TV = min(bs.bwd_tile_qk, DQp), min(bs.bwd_tile_v, DVp)
    kernel = functools.partial(
        _chunk_grads_kernel, scale=scale, TQ=TQ, NQ=DQp // TQ, TV=TV, NV=DVp // TV
    )
    qk = pl.BlockSpec((None, L, DQp), lambda h, c: (h, c, 0))
    vt = pl.BlockSpec((None, L, DVp), lambda h, c: (h, c, 0))
    gate = pl.BlockSpec((None, L), lambda h, c: (h, c))
    Cs = pl.BlockSpec((None, None, DQp, DVp), lambda h, c: (h, c, 0, 0))
    ns = pl.BlockSpec((None, None, DQp), lambda h, c: (h, c, 0))
    row = pl.BlockSpec((None, NC), lambda h, c: (h, 0))
    in_specs = [qk, qk, vt, vt, gate, gate, Cs, ns, row, Cs, ns] + [gate] * 4
    out_specs = [qk, qk, vt] + [gate] * 4 + [row]
    vec = jax.ShapeDtypeStruct((BH, Sp), acc)
    out_shape = [
        jax.ShapeDtypeStruct((BH, Sp, DQp), acc),
        jax.ShapeDtypeStruct((BH, Sp, DQp), acc),
        jax.ShapeDtypeStruct((BH, Sp, DVp), acc),
        vec,
        vec,
        vec,
        vec,
        jax.ShapeDtypeStruct((BH, NC), acc),
    ]
    return call(
        kernel,
        name="mlstm_chunk_grads",
        grid=(BH, NC),
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        num_warps=bs.num_warps_chunk,
        num_stages=bs.num_stages,
        interpret=interpret,
    )(q, k, v, dh, i, b, *starts, *gstarts, *vecs)


def chunkwise_bwd(L, scale, eps, bs, interpret, res, cts):
    """The custom_vjp backward of the chunkwise core (``chunkwise._mlstm_core``): kernels C
    and D plus the stabiliser recursion; ``res`` are the forward's residuals."""
    q, k, v, i, b, state0, h, m_t, den = res
    dh, (dc_last, dn_last, dm_last) = cts
    BH, Sp, _ = q.shape
    NC = Sp // L
    acc = b.dtype
    # Chunk-start states, recomputed (kernel A).
    starts, (_, _, m_last) = chunk_states(k, v, i, b, state0, L, bs, interpret)
    m_prev = starts[2]  # (BH, NC): m_{k-1} of chunk k
    m_end = jnp.concatenate([m_prev[:, 1:], m_last], axis=1)  # (BH, NC): m_k

    # (5), per step: N_t and the cotangents of num_t, den_t and (through the max) m_t.
    exp_neg_m = jnp.exp(-m_t)
    abs_den = jnp.abs(den)
    w_den = jnp.where(abs_den > exp_neg_m, 1.0, jnp.where(abs_den == exp_neg_m, 0.5, 0.0))
    norm = jnp.maximum(abs_den, exp_neg_m) + eps
    dnorm = -jnp.sum(dh.astype(acc) * h.astype(acc), axis=-1) / norm
    dden = dnorm * w_den * jnp.sign(den)
    dm_norm = -dnorm * (1.0 - w_den) * exp_neg_m
    inv_n = 1.0 / norm

    # Gate scalars per chunk / step: (1)-(4).
    bc = b.reshape(BH, NC, L)
    ic = i.reshape(BH, NC, L)
    g = bc[..., -1]  # (BH, NC)
    a = g[..., None] - bc + ic  # (1)
    decay = jnp.exp(g + m_prev - m_end)  # (2)
    w = jnp.exp(a - m_end[..., None]).reshape(BH, Sp)  # (2)
    e = jnp.exp(bc + m_prev[..., None] - m_t.reshape(BH, NC, L)).reshape(BH, Sp)  # (4)

    # Kernel C: chunk-end state cotangents (reverse over chunks).
    dlast = (dc_last.astype(acc), dn_last.astype(acc))
    gs, gns, dc0, dn0 = state_grads(
        q, dh, e * inv_n, e * dden, decay, dlast, L, scale, bs, interpret
    )
    # Kernel D: dq, dk, dv and the gate vectors, per chunk.
    dq, dk, dv, drow, dcol, dl, dlw, ddecay = chunk_grads(
        q,
        k,
        v,
        dh,
        i,
        b,
        starts[:2] + (m_prev,),
        (gs, gns),
        (inv_n, dden, dm_norm, w),
        L,
        scale,
        bs,
        interpret,
    )

    # log D_ts = b_t - b_s + i_s (3); l_t = b_t + m_{k-1} (3)-(4).
    db = drow - dcol + dl
    di = dcol
    dm_prev_out = dl.reshape(BH, NC, L).sum(-1)  # dL/dm_{k-1} through l_t of chunk k
    # (1)-(2) backwards over chunks. With T_k = dL/dm_k (total), the cotangent reaching the
    # max in (1) is T_k - dlog decay_k - sum_j dlog w_j; it goes to g_k + m_{k-1} or argmax a.
    dlog_decay = ddecay * decay
    dlw_c = dlw.reshape(BH, NC, L)
    a_max = jnp.max(a, axis=-1)
    branch = g + m_prev
    w_g = jnp.where(branch > a_max, 1.0, jnp.where(branch == a_max, 0.5, 0.0))
    base = dlog_decay + w_g * (-dlog_decay - dlw_c.sum(-1))  # d(g + m_{k-1}) without T_k

    def chunk_back(t_k, xs):
        base_k, wg_k, dmo_k = xs
        through = t_k * wg_k + base_k  # dL/d(g_k + m_{k-1})
        return dmo_k + through, t_k

    dm0, t_all = jax.lax.scan(
        chunk_back,
        dm_last[:, 0].astype(acc),
        (base.T, w_g.T, dm_prev_out.T),
        reverse=True,
    )
    t_all = t_all.T  # (BH, NC): T_k
    to_max = (1.0 - w_g) * (t_all - dlog_decay - dlw_c.sum(-1))
    is_max = (a == a_max[..., None]).astype(acc)
    da = dlw_c + is_max * (to_max / is_max.sum(-1))[..., None]  # dL/da_j
    dg = da.sum(-1) + t_all * w_g + base  # a_j and the g_k + m_{k-1} branch
    di = di + da.reshape(BH, Sp)
    db = (db.reshape(BH, NC, L) - da).at[..., -1].add(dg).reshape(BH, Sp)

    dstate0 = (dc0, dn0, dm0[:, None])
    dstate0 = tuple(d.astype(s.dtype) for d, s in zip(dstate0, state0, strict=True))
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), di, db, dstate0

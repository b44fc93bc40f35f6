"""Backward kernel of the sLSTM (Triton lowering), its pallas_call wrapper and the
custom_vjp backward rule; the derivation is in ``pallas_kernels/slstm/triton_scan.py``."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels.slstm.triton_forward import geometry, r_on_chip_tiles, specs
from pallas_kernels.slstm.triton_pointwise import pointwise_bwd
from pallas_kernels.triton import F32, PRECISION, barrier, call, dot_nt


def _slstm_bwd_kernel(*refs, function, S, NT, T, r_on_chip, interpret):
    """Reverse time loop of one (batch tile, head) program.

    Refs (head axis squeezed): dy (bt, S, DH) fp32 (dL/dy_t, external), raw (bt, S, G, DH),
    r (G, DH, DH), state sequences c[, n, m] (bt, S, DH), initial c[, n, m] (bt, DH), final
    cotangents dc[, dn, dm] (bt, DH); outputs: draw (bt, S, G, DH) fp32, then the
    initial-state gradients dy0, dc0[, dn0, dm0] (bt, DH) fp32.

    The recurrent product draw_t R^T is unrolled with R on chip; with R streamed it is a loop
    over the output tiles j that reads draw_t back from this program's output (after a
    barrier), as in the forward.
    """
    sl = function == "slstm"
    np_ = 3 if sl else 1  # states needed at t-1: (c, n, m) or (c,); also the carried cotangents
    dy_ref, raw_ref, r_ref = refs[:3]
    seq_refs = refs[3 : 3 + np_]
    s0_refs = refs[3 + np_ : 3 + 2 * np_]
    dlast_refs = refs[3 + 2 * np_ : 3 + 3 * np_]
    draw_ref, *d0_refs = refs[3 + 3 * np_ :]
    mm_dtype = r_ref.dtype
    cols = [pl.ds(j * T, T) for j in range(NT)]
    r_tiles = r_on_chip_tiles(r_ref, NT, T) if r_on_chip else None
    s0 = [[s_ref[:, cols[j]].astype(F32) for j in range(NT)] for s_ref in s0_refs]
    zeros = tuple(jnp.zeros_like(s0[0][j]) for j in range(NT))
    init = (
        zeros,  # dh_rec: draw_{t+1} R^T
        tuple(tuple(d_ref[:, cols[j]].astype(F32) for j in range(NT)) for d_ref in dlast_refs),
    )

    def recurrent(t, draw_mm):
        """dh_{t-1} (recurrent part) = draw_t R^T: tile k sums over gates g and tiles j."""
        if r_on_chip:
            out = []
            for k in range(NT):
                acc = jnp.zeros_like(zeros[k])
                for j in range(NT):
                    for g in range(4):
                        acc += dot_nt(draw_mm[j][g], r_tiles[g, k, j])
                out.append(acc)
            return out
        barrier(interpret)  # draw_t, stored by all threads, is read back below
        out = []
        for k in range(NT):

            def body(j, acc, k=k):
                col = pl.ds(pl.multiple_of(j * T, T), T)
                for g in range(4):
                    d = draw_ref[:, t, g, col].astype(mm_dtype)
                    acc += dot_nt(d, r_ref[g, cols[k], col])
                return acc

            out.append(jax.lax.fori_loop(0, NT, body, jnp.zeros_like(zeros[k])))
        return out

    def step(i, carry):
        dh_rec, dcarry = carry
        t = S - 1 - i
        tp = jnp.maximum(t - 1, 0)
        first = t == 0
        draw_mm = []  # [j][g], for the recurrent product with R on chip
        new_dcarry = [[] for _ in range(np_)]
        for j in range(NT):
            raw = tuple(raw_ref[:, t, g, cols[j]] for g in range(4))
            prev = tuple(
                jnp.where(first, s0[p][j], seq_refs[p][:, tp, cols[j]]) for p in range(np_)
            )
            dh = dy_ref[:, t, cols[j]] + dh_rec[j]
            draw, dcj = pointwise_bwd(raw, prev, dh, tuple(d[j] for d in dcarry), function)
            for g in range(4):
                draw_ref[:, t, g, cols[j]] = draw[g]
            if r_on_chip:
                draw_mm.append([d.astype(mm_dtype) for d in draw])
            for lst, v in zip(new_dcarry, dcj, strict=True):
                lst.append(v)
        return tuple(recurrent(t, draw_mm)), tuple(tuple(lst) for lst in new_dcarry)

    dh_rec, dcarry = jax.lax.fori_loop(0, S, step, init)
    for o_ref, tiles in zip(d0_refs, (dh_rec, *dcarry), strict=True):
        for j in range(NT):
            o_ref[:, cols[j]] = tiles[j]


def bwd_call(dy, raw, r, seqs, state0, dlast, function, interpret, bs):
    """Runs the backward kernel. Returns (draw fp32 (Bp, S, G, NH, DHp), initial-state grads)."""
    Bp, S, NH, DHp, T, NT, on_chip = geometry(raw, r, bs)
    bt = bs.batch_tile
    sp = specs(bt, S, DHp)
    sl = function == "slstm"
    np_ = 3 if sl else 1
    kernel = functools.partial(
        _slstm_bwd_kernel,
        function=function,
        S=S,
        NT=NT,
        T=T,
        r_on_chip=on_chip,
        interpret=interpret,
    )
    fin = jax.ShapeDtypeStruct((Bp, NH, DHp), F32)
    outs = call(
        kernel,
        name=f"{function}_bwd",
        grid=(Bp // bt, NH),
        in_specs=[sp["seq"], sp["gates"], sp["r"]] + [sp["seq"]] * np_ + [sp["state"]] * (2 * np_),
        out_specs=[sp["gates"]] + [sp["state"]] * (np_ + 1),
        out_shape=[jax.ShapeDtypeStruct(raw.shape, F32)] + [fin] * (np_ + 1),
        num_warps=bs.num_warps,
        num_stages=bs.num_stages,
        interpret=interpret,
    )(dy, raw, r, *seqs, *state0[1 : 1 + np_], *dlast)
    return outs[0], tuple(outs[1:])


def core_bwd(function, interpret, bs, res, cts):
    raw, r, b, y_seq, seqs, state0 = res
    dy_seq, (dy_last, dc_last, dn_last, dm_last) = cts
    sl = function == "slstm"
    dy = dy_seq.astype(F32).at[:, -1].add(dy_last.astype(F32))
    dlast = (dc_last, dn_last, dm_last) if sl else (dc_last,)
    draw, d0 = bwd_call(
        dy, raw, r, seqs, state0, tuple(d.astype(F32) for d in dlast), function, interpret, bs
    )
    # The LSTM's n and m pass through unchanged.
    dstate0 = d0 if sl else (*d0, dn_last.astype(F32), dm_last.astype(F32))
    # Weight gradients as two large XLA reductions over (b, t):
    # dR[h, g, k, j] = sum_{b,t} y_{t-1}[b, h, k] draw_t[b, g, h, j],  dbias = sum_{b,t} draw_t.
    mm = r.dtype
    y_prev = jnp.concatenate([state0[0][:, None], y_seq[:, :-1]], axis=1).astype(mm)
    dr = jnp.einsum(
        "bshk,bsghj->hgkj",
        y_prev,
        draw.astype(mm),
        precision=PRECISION,
        preferred_element_type=F32,
    ).astype(r.dtype)
    db = jnp.swapaxes(draw.sum(axis=(0, 1)), 0, 1).astype(b.dtype)
    dstate0 = tuple(d.astype(s.dtype) for d, s in zip(dstate0, state0, strict=True))
    return draw.astype(r.dtype), dr, db, dstate0  # r is in gates_x's dtype

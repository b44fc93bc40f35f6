"""Forward kernel of the sLSTM (Triton lowering) and its pallas_call wrapper; the design
and equations (1)-(4) are in ``pallas_kernels/slstm/triton_scan.py``.

Kernel layouts: gx/raw (B, S, G, NH, DH); R (NH, G, DH_in, DH_out); states (B, S, NH, DH).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels.slstm.block_sizes import BlockSizes
from pallas_kernels.slstm.triton_pointwise import pointwise_fwd, state_names
from pallas_kernels.triton import F32, barrier, call, dot


def r_on_chip_tiles(r_ref, NT, T):
    """All (T, T) tiles R[g, k, j] of one head, loaded once (they stay on chip)."""
    return {
        (g, k, j): r_ref[g, pl.ds(k * T, T), pl.ds(j * T, T)]
        for g in range(4)
        for k in range(NT)
        for j in range(NT)
    }


def _slstm_fwd_kernel(*refs, function, S, NT, T, r_on_chip, save_residuals, interpret):
    """Forward time loop of one (batch tile, head) program.

    Refs (head axis squeezed): gx (bt, S, G, DH), r (G, DH, DH), b (G, DH), initial states
    (bt, DH) each; outputs: y (bt, S, DH) fp32, then either the sequences c[, n, m]
    (bt, S, DH) and raw (bt, S, G, DH) fp32 (``save_residuals``), or the final c[, n, m].

    With R on chip, y_{t-1} is carried in registers (NT tiles) and the recurrent product is
    fully unrolled. With R streamed from L2 (large DH), the contraction over k is a loop that
    reads y_{t-1} back from this program's own output (a barrier closes each step): this keeps
    only 4 tiles of R live at a time, instead of letting the compiler hoist all 4 NT^2 loads.
    """
    names = state_names(function)
    ns = len(names)
    gx_ref, r_ref, b_ref = refs[:3]
    s0_refs = refs[3 : 3 + ns]
    y_ref = refs[3 + ns]
    st_refs = refs[4 + ns : 4 + 2 * ns - 1]  # c[, n, m]: sequences or final values
    raw_ref = refs[4 + 2 * ns - 1] if save_residuals else None
    mm_dtype = r_ref.dtype
    cols = [pl.ds(j * T, T) for j in range(NT)]
    bias = [[b_ref[g, cols[j]].astype(F32)[None, :] for j in range(NT)] for g in range(4)]
    init = [tuple(s_ref[:, cols[j]].astype(F32) for j in range(NT)) for s_ref in s0_refs]
    if r_on_chip:
        r_tiles = r_on_chip_tiles(r_ref, NT, T)
    else:
        init[0] = ()  # y_{t-1} is read back from y_ref instead of being carried

    def recurrent(t, y_mm, j):
        """[sum_k y_{t-1}[k] R[g, k, j] for g in (i, f, z, o)]: eq. (1), output tile j."""
        if r_on_chip:
            out = []
            for g in range(4):
                acc = dot(y_mm[0], r_tiles[g, 0, j])
                for k in range(1, NT):
                    acc += dot(y_mm[k], r_tiles[g, k, j])
                out.append(acc)
            return out
        tp = jnp.maximum(t - 1, 0)

        def body(k, acc):
            col = pl.ds(pl.multiple_of(k * T, T), T)
            y_k = jnp.where(t == 0, s0_refs[0][:, col].astype(F32), y_ref[:, tp, col])
            y_k = y_k.astype(mm_dtype)
            return tuple(a + dot(y_k, r_ref[g, col, cols[j]]) for g, a in enumerate(acc))

        zeros = tuple(jnp.zeros_like(init[1][0]) for _ in range(4))
        return list(jax.lax.fori_loop(0, NT, body, zeros))

    def step(t, state):
        y_mm = [y.astype(mm_dtype) for y in state[0]]
        new = [[] for _ in names]
        for j in range(NT):
            rec = recurrent(t, y_mm, j)
            raw = [gx_ref[:, t, g, cols[j]].astype(F32) + bias[g][j] + rec[g] for g in range(4)]
            prev = tuple(s[j] if s else None for s in state)
            tile = pointwise_fwd(raw, prev, function)
            for lst, v in zip(new, tile, strict=True):
                lst.append(v)
            y_ref[:, t, cols[j]] = tile[0]
            if save_residuals:
                for s_ref, v in zip(st_refs, tile[1:], strict=True):
                    s_ref[:, t, cols[j]] = v
                for g in range(4):
                    raw_ref[:, t, g, cols[j]] = raw[g]
        if not r_on_chip:
            barrier(interpret)  # y_t, stored above, is read by all threads at step t + 1
            new[0] = []
        return tuple(tuple(lst) for lst in new)

    last = jax.lax.fori_loop(0, S, step, tuple(init))
    if not save_residuals:
        for s_ref, tiles in zip(st_refs, last[1:], strict=True):
            for j in range(NT):
                s_ref[:, cols[j]] = tiles[j]


def geometry(gx, r, bs: BlockSizes):
    Bp, S, _, NH, DHp = gx.shape
    T = min(bs.dh_tile, DHp)
    r_on_chip = 4 * DHp * DHp * r.dtype.itemsize <= bs.r_on_chip_max_bytes
    return Bp, S, NH, DHp, T, DHp // T, r_on_chip


def specs(bt, S, DHp):
    """BlockSpecs of the kernel-layout arrays for program (b, h)."""
    return dict(
        gates=pl.BlockSpec((bt, S, 4, None, DHp), lambda b, h: (b, 0, 0, h, 0)),
        seq=pl.BlockSpec((bt, S, None, DHp), lambda b, h: (b, 0, h, 0)),
        state=pl.BlockSpec((bt, None, DHp), lambda b, h: (b, h, 0)),
        r=pl.BlockSpec((None, 4, DHp, DHp), lambda b, h: (h, 0, 0, 0)),
        bias=pl.BlockSpec((None, 4, DHp), lambda b, h: (h, 0, 0)),
    )


def fwd_call(gx, r, b, state0, function, interpret, bs, save_residuals):
    """Runs the forward kernel. Returns (y_seq fp32, c[, n, m] sequences or finals, raw|None)."""
    Bp, S, NH, DHp, T, NT, on_chip = geometry(gx, r, bs)
    bt = bs.batch_tile
    sp = specs(bt, S, DHp)
    ns = len(state_names(function))
    seq = jax.ShapeDtypeStruct((Bp, S, NH, DHp), F32)
    fin = jax.ShapeDtypeStruct((Bp, NH, DHp), F32)
    if save_residuals:
        out_shape = [seq] * ns + [jax.ShapeDtypeStruct((Bp, S, 4, NH, DHp), F32)]
        out_specs = [sp["seq"]] * ns + [sp["gates"]]
    else:
        out_shape = [seq] + [fin] * (ns - 1)
        out_specs = [sp["seq"]] + [sp["state"]] * (ns - 1)
    kernel = functools.partial(
        _slstm_fwd_kernel,
        function=function,
        S=S,
        NT=NT,
        T=T,
        r_on_chip=on_chip,
        save_residuals=save_residuals,
        interpret=interpret,
    )
    outs = call(
        kernel,
        name=f"{function}_fwd",
        grid=(Bp // bt, NH),
        in_specs=[sp["gates"], sp["r"], sp["bias"]] + [sp["state"]] * ns,
        out_specs=out_specs,
        out_shape=out_shape,
        num_warps=bs.num_warps,
        num_stages=bs.num_stages,
        interpret=interpret,
    )(gx, r, b, *state0[:ns])
    raw = outs[ns] if save_residuals else None
    return outs[0], tuple(outs[1:ns]), raw

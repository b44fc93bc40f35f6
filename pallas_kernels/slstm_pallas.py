"""sLSTM recurrence as Pallas GPU kernels (Triton lowering), forward and backward.

Implements the op specified by :func:`pallas_kernels.slstm.slstm` (read its docstring for
the equations). Importing this module registers the kernel in ``dispatch.PALLAS_OPS``, so
``pk.slstm(..., impl="pallas")`` runs it (and ``impl="auto"`` picks it on a CUDA GPU).

Design
------
Forward, grid (batch tiles, heads): one program owns ``batch_tile`` rows of one head and loops
over time with ``fori_loop``, carrying the state (y, c, n, m) in registers. Each step computes

  (1) raw_g = Wx_g,t + b_g + y_{t-1} R_g                  g in (i, f, z, o)
  (2) log f^ = m_{t-1} + log sigma(f~);  m_t = i~ where n_{t-1} == 0 else max(i~, log f^)
  (3) i' = min(e^{i~ - m_t}, 1),  f' = min(e^{log f^ - m_t}, 1)
  (4) c_t = f' c_{t-1} + i' tanh(z~),  n_t = f' n_{t-1} + i',  y_t = sigma(o~) c_t / n_t

The recurrent product (1) is tiled over DH: with T = ``dh_tile`` and NT = DH / T, gate g's
output tile j is ``sum_k dot(y_{t-1}[k], R[g, k, j])`` of (batch_tile, T) x (T, T) dots, in
the compute dtype (gates_x's dtype) with fp32 accumulation. The state stays in NT tiles, so
no in-register slicing or concatenation is needed. When one head's R is small (at most
``r_on_chip_max_bytes``, e.g. DH <= 64) its tiles are loaded once before the time loop and
stay on chip; otherwise (DH = 128, 256: R is 128 KiB / 512 KiB in bf16 per head, more than
one SM holds) the tiles are re-read every step from L2, where all heads' R stay resident.
In that streamed mode the contraction over k is an inner loop that reads y_{t-1} back from
the program's own output (a CTA barrier ends each step), so only 4 tiles of R are live at a
time; fully unrolled, the compiler hoists the 4 NT^2 tile loads and spills registers.

Backward, same grid, time loop in reverse. It needs only the forward's pre-activations raw_t
and the states at t-1, from which it recomputes m_t, f', i', c_t, n_t. With
dh_t = dL/dy_t (external + recurrent) and dc, dn, dm carried from step t+1:

  dc^ = dc + dh sigma(o~) / n_t            dn^ = dn - dh y_t / n_t
  do~ = dh (c_t / n_t) sigma'(o~)          dz~ = dc^ i' (1 - tanh^2 z~)
  g_f = (dc^ c_{t-1} + dn^ n_{t-1}) f'     (0 where the min in (3) clips)
  g_i = (dc^ tanh z~ + dn^) i'             dm^ = dm - g_f - g_i          (3)
  di~ = g_i + [m_t = i~] dm^               dlog f^ = g_f + [m_t != i~] dm^  (2)
  df~ = dlog f^ sigma(-f~),  dm_{t-1} = dlog f^,  dc_{t-1} = dc^ f',  dn_{t-1} = dn^ f'
  dh_{t-1} = dy_{t-1} + draw_t R^T

This differentiates the stabiliser m exactly, as autodiff of the reference does. Where the
state is consistent (c = 0 wherever n = 0, e.g. from zero states) the m terms cancel and the
result equals the "m as a constant" backward of the reference CUDA kernel (y is invariant to
m); but with an initial state that has c != 0 where n == 0 and a clipped f' (3), m_t = i~
carries real gradient, and a cotangent on the returned final m is honoured.

The weight gradients are one large matmul each, done by XLA after the kernel:
dR = sum_{b,t} y_{t-1}^T draw_t and dbias = sum_{b,t} draw_t, so no program accumulates
into shared memory and there is no cross-program reduction.

``function="lstm"`` runs through the same kernels (classic LSTM pointwise update,
c_t = sigma(f~) c + sigma(i~) tanh(z~), y_t = sigma(o~) tanh(c_t)); its n and m pass through.

Padding (done in the wrapper, differentiable): the batch to a multiple of ``batch_tile``
(>= 16, the dot's minimum rows) and DH to a power of two >= 16. A padded unit has zero
gates, bias, recurrent rows/columns and initial state, so its y stays exactly 0 (c stays 0,
n > 0) and the zero rows of R keep it from reaching the real units.

Shape legend: B batch, S sequence, NH heads, DH head dim, G = 4 gates (i, f, z, o).
  gates_x (B, S, G, NH, DH)  recurrent_kernel (NH, DH_in, G, DH_out)  bias (NH, G, DH)
  kernel layouts: R (NH, G, DH_in, DH_out); raw (B, S, G, NH, DH) fp32; states (B, S, NH, DH)
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from pallas_kernels.dispatch import PALLAS_OPS

F32 = jnp.float32
SUPPORTED_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tiling and launch parameters of the sLSTM kernels.

    Attributes:
      batch_tile: rows per program, a power of two >= 16 (the minimum rows of a Triton dot).
      dh_tile: tile T of the head dim for the recurrent dots (power of two >= 16); the head
        dim is processed as DH / T tiles.
      r_on_chip_max_bytes: keep one head's R on chip for the whole time loop when its size
        (4 * DH * DH * itemsize) is at most this; re-read it from L2 every step otherwise.
      num_warps, num_stages: Triton launch parameters.
    """

    batch_tile: int = 16
    dh_tile: int = 64
    r_on_chip_max_bytes: int = 64 * 1024
    # 8 warps: Triton 3.9 -> ptxas for sm_90 spills nothing at DH 64/128 (4 warps spills in
    # fp32) and ~50 B at DH 256. More stages make the pipeliner stage R in shared memory
    # (534 KB at DH 256, over the 228 KB an H100 SM has). benchmarks/results/slstm_kernel_cpu.md
    num_warps: int = 8
    num_stages: int = 1

    def validate(self) -> None:
        for name in ("batch_tile", "dh_tile"):
            v = getattr(self, name)
            if v < 16 or not _is_pow2(v):
                raise ValueError(f"BlockSizes.{name} must be a power of two >= 16; got {v}.")
        if self.num_warps < 1 or self.num_stages < 1:
            raise ValueError("BlockSizes.num_warps and num_stages must be >= 1.")


DEFAULT_BLOCK_SIZES = BlockSizes()


def _is_pow2(x: int) -> bool:
    return x > 0 and (x & (x - 1)) == 0


def _next_pow2(x: int) -> int:
    return 1 << (max(x, 1) - 1).bit_length()


def _state_names(function: str) -> tuple[str, ...]:
    """States the kernels carry: the LSTM's n and m pass through untouched."""
    return ("y", "c", "n", "m") if function == "slstm" else ("y", "c")


# fp32 operands: full-precision (IEEE) dots instead of Triton's TF32 default, to match the
# reference; 16-bit operands are unaffected (bf16/fp16 MMA with fp32 accumulation).
_PRECISION = jax.lax.Precision.HIGHEST


# ---------------------------------------------------------------------------------------------
# Pointwise math (shared by both kernels; fp32 tiles of shape (batch_tile, T)).
# ---------------------------------------------------------------------------------------------


def _log_sigmoid(x):
    """log sigma(x) = min(x, 0) - log1p(e^{-|x|}) (stable; lowers to Triton)."""
    return jnp.minimum(x, 0.0) - jnp.log1p(jnp.exp(-jnp.abs(x)))


def _slstm_gates(raw, c, n, m):
    """Eqs. (2)-(4) up to c_t, n_t. Returns (m_t, log f^ - m_t, f', i', tanh z~)."""
    i_raw, f_raw, z_raw, _ = raw
    log_f = m + _log_sigmoid(f_raw)  # (2) log f^
    m_new = jnp.where(n == 0.0, i_raw, jnp.maximum(i_raw, log_f))  # (2), per element
    a_f = log_f - m_new
    f_act = jnp.minimum(jnp.exp(a_f), 1.0)  # (3)
    i_act = jnp.minimum(jnp.exp(i_raw - m_new), 1.0)  # (3)
    return m_new, a_f, f_act, i_act, jnp.tanh(z_raw)


def _pointwise_fwd(raw, state, function):
    """One step's state update. raw: 4 gate tiles; state: tiles in _state_names order."""
    if function == "lstm":
        i_raw, f_raw, z_raw, o_raw = raw
        _, c = state
        c_new = jax.nn.sigmoid(f_raw) * c + jax.nn.sigmoid(i_raw) * jnp.tanh(z_raw)
        return (jax.nn.sigmoid(o_raw) * jnp.tanh(c_new), c_new)
    _, c, n, m = state
    m_new, _, f_act, i_act, z_act = _slstm_gates(raw, c, n, m)
    c_new = f_act * c + i_act * z_act  # (4)
    n_new = f_act * n + i_act  # (4)
    y_new = jax.nn.sigmoid(raw[3]) * c_new / n_new  # (4)
    return (y_new, c_new, n_new, m_new)


def _pointwise_bwd(raw, prev, dh, dcarry, function):
    """Backward of one step, stabiliser included (module docstring).

    Args:
      raw: the 4 gate pre-activations at t; prev: states at t-1 without y ((c,) or (c, n, m)).
      dh: dL/dy_t; dcarry: dL/dc_t (and dL/dn_t, dL/dm_t for sLSTM) from step t+1.
    Returns:
      (draw: 4 tiles, the carried cotangents for t-1).
    """
    i_raw, f_raw, z_raw, o_raw = raw
    s_o = jax.nn.sigmoid(o_raw)
    if function == "lstm":
        (c,) = prev
        (dc,) = dcarry
        s_i, s_f = jax.nn.sigmoid(i_raw), jax.nn.sigmoid(f_raw)
        z_act = jnp.tanh(z_raw)
        c_new = s_f * c + s_i * z_act
        tc = jnp.tanh(c_new)
        do = dh * tc * s_o * (1.0 - s_o)
        dc_hat = dc + dh * s_o * (1.0 - tc * tc)
        di = dc_hat * z_act * s_i * (1.0 - s_i)
        df = dc_hat * c * s_f * (1.0 - s_f)
        dz = dc_hat * s_i * (1.0 - z_act * z_act)
        return (di, df, dz, do), (dc_hat * s_f,)
    c, n, m = prev
    dc, dn, dm = dcarry
    m_new, a_f, f_act, i_act, z_act = _slstm_gates(raw, c, n, m)
    take_i = m_new == i_raw  # which branch of (2) set m_t
    c_new = f_act * c + i_act * z_act
    inv_n = 1.0 / (f_act * n + i_act)
    h = c_new * inv_n  # y_t / sigma(o~)
    do = dh * h * s_o * (1.0 - s_o)  # (4)
    dc_hat = dc + dh * s_o * inv_n  # dL/dc_t
    dn_hat = dn - dh * s_o * h * inv_n  # dL/dn_t
    dz = dc_hat * i_act * (1.0 - z_act * z_act)
    # (3): g_f = dL/d(log f^ - m_t) (zero where the min clips, only possible if n_{t-1} == 0),
    # g_i = dL/d(i~ - m_t) (i~ <= m_t, never clipped).
    g_f = jnp.where(a_f > 0.0, 0.0, (dc_hat * c + dn_hat * n) * f_act)
    g_i = (dc_hat * z_act + dn_hat) * i_act
    dm_hat = dm - g_f - g_i  # dL/dm_t: from step t+1 and from (3)
    # (2): m_t is i~ or log f^; it passes its cotangent to the branch it took.
    di = g_i + jnp.where(take_i, dm_hat, 0.0)
    dlog_f = g_f + jnp.where(take_i, 0.0, dm_hat)
    df = dlog_f * jax.nn.sigmoid(-f_raw)  # d log sigma(x)/dx = sigma(-x)
    # log f^ = m_{t-1} + log sigma(f~): dL/dm_{t-1} = dL/dlog f^.
    return (di, df, dz, do), (dc_hat * f_act, dn_hat * f_act, dlog_f)


# ---------------------------------------------------------------------------------------------
# Kernels.
# ---------------------------------------------------------------------------------------------


def _dot(a, b):
    """a @ b with fp32 accumulation."""
    return jnp.dot(a, b, precision=_PRECISION, preferred_element_type=F32)


def _dot_t(a, b):
    """a @ b^T with fp32 accumulation."""
    dims = (((1,), (1,)), ((), ()))
    return jax.lax.dot_general(a, b, dims, precision=_PRECISION, preferred_element_type=F32)


def _barrier(interpret: bool) -> None:
    """CTA barrier: this program's global stores become visible to all of its threads."""
    if not interpret:  # interpret mode runs sequentially
        pltriton.debug_barrier()


def _r_on_chip(r_ref, NT, T):
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
    names = _state_names(function)
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
        r_tiles = _r_on_chip(r_ref, NT, T)
    else:
        init[0] = ()  # y_{t-1} is read back from y_ref instead of being carried

    def recurrent(t, y_mm, j):
        """[sum_k y_{t-1}[k] R[g, k, j] for g in (i, f, z, o)]: eq. (1), output tile j."""
        if r_on_chip:
            out = []
            for g in range(4):
                acc = _dot(y_mm[0], r_tiles[g, 0, j])
                for k in range(1, NT):
                    acc += _dot(y_mm[k], r_tiles[g, k, j])
                out.append(acc)
            return out
        tp = jnp.maximum(t - 1, 0)

        def body(k, acc):
            col = pl.ds(pl.multiple_of(k * T, T), T)
            y_k = jnp.where(t == 0, s0_refs[0][:, col].astype(F32), y_ref[:, tp, col])
            y_k = y_k.astype(mm_dtype)
            return tuple(a + _dot(y_k, r_ref[g, col, cols[j]]) for g, a in enumerate(acc))

        zeros = tuple(jnp.zeros_like(init[1][0]) for _ in range(4))
        return list(jax.lax.fori_loop(0, NT, body, zeros))

    def step(t, state):
        y_mm = [y.astype(mm_dtype) for y in state[0]]
        new = [[] for _ in names]
        for j in range(NT):
            rec = recurrent(t, y_mm, j)
            raw = [gx_ref[:, t, g, cols[j]].astype(F32) + bias[g][j] + rec[g] for g in range(4)]
            prev = tuple(s[j] if s else None for s in state)
            tile = _pointwise_fwd(raw, prev, function)
            for lst, v in zip(new, tile, strict=True):
                lst.append(v)
            y_ref[:, t, cols[j]] = tile[0]
            if save_residuals:
                for s_ref, v in zip(st_refs, tile[1:], strict=True):
                    s_ref[:, t, cols[j]] = v
                for g in range(4):
                    raw_ref[:, t, g, cols[j]] = raw[g]
        if not r_on_chip:
            _barrier(interpret)  # y_t, stored above, is read by all threads at step t + 1
            new[0] = []
        return tuple(tuple(lst) for lst in new)

    last = jax.lax.fori_loop(0, S, step, tuple(init))
    if not save_residuals:
        for s_ref, tiles in zip(st_refs, last[1:], strict=True):
            for j in range(NT):
                s_ref[:, cols[j]] = tiles[j]


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
    r_tiles = _r_on_chip(r_ref, NT, T) if r_on_chip else None
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
                        acc += _dot_t(draw_mm[j][g], r_tiles[g, k, j])
                out.append(acc)
            return out
        _barrier(interpret)  # draw_t, stored by all threads, is read back below
        out = []
        for k in range(NT):

            def body(j, acc, k=k):
                col = pl.ds(pl.multiple_of(j * T, T), T)
                for g in range(4):
                    d = draw_ref[:, t, g, col].astype(mm_dtype)
                    acc += _dot_t(d, r_ref[g, cols[k], col])
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
            draw, dcj = _pointwise_bwd(raw, prev, dh, tuple(d[j] for d in dcarry), function)
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


# ---------------------------------------------------------------------------------------------
# pallas_call wrappers (padded, kernel-layout arrays).
# ---------------------------------------------------------------------------------------------


def _geometry(gx, r, bs: BlockSizes):
    Bp, S, _, NH, DHp = gx.shape
    T = min(bs.dh_tile, DHp)
    r_on_chip = 4 * DHp * DHp * r.dtype.itemsize <= bs.r_on_chip_max_bytes
    return Bp, S, NH, DHp, T, DHp // T, r_on_chip


def _call(kernel, name, grid, in_specs, out_specs, out_shape, bs, interpret):
    return pl.pallas_call(
        kernel,
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=pltriton.CompilerParams(num_warps=bs.num_warps, num_stages=bs.num_stages),
        interpret=interpret,
        name=name,
    )


def _specs(bt, S, DHp):
    """BlockSpecs of the kernel-layout arrays for program (b, h)."""
    return dict(
        gates=pl.BlockSpec((bt, S, 4, None, DHp), lambda b, h: (b, 0, 0, h, 0)),
        seq=pl.BlockSpec((bt, S, None, DHp), lambda b, h: (b, 0, h, 0)),
        state=pl.BlockSpec((bt, None, DHp), lambda b, h: (b, h, 0)),
        r=pl.BlockSpec((None, 4, DHp, DHp), lambda b, h: (h, 0, 0, 0)),
        bias=pl.BlockSpec((None, 4, DHp), lambda b, h: (h, 0, 0)),
    )


def _fwd_call(gx, r, b, state0, function, interpret, bs, save_residuals):
    """Runs the forward kernel. Returns (y_seq fp32, c[, n, m] sequences or finals, raw|None)."""
    Bp, S, NH, DHp, T, NT, on_chip = _geometry(gx, r, bs)
    bt = bs.batch_tile
    sp = _specs(bt, S, DHp)
    ns = len(_state_names(function))
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
    outs = _call(
        kernel,
        f"{function}_fwd",
        (Bp // bt, NH),
        [sp["gates"], sp["r"], sp["bias"]] + [sp["state"]] * ns,
        out_specs,
        out_shape,
        bs,
        interpret,
    )(gx, r, b, *state0[:ns])
    raw = outs[ns] if save_residuals else None
    return outs[0], tuple(outs[1:ns]), raw


def _bwd_call(dy, raw, r, seqs, state0, dlast, function, interpret, bs):
    """Runs the backward kernel. Returns (draw fp32 (Bp, S, G, NH, DHp), initial-state grads)."""
    Bp, S, NH, DHp, T, NT, on_chip = _geometry(raw, r, bs)
    bt = bs.batch_tile
    sp = _specs(bt, S, DHp)
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
    outs = _call(
        kernel,
        f"{function}_bwd",
        (Bp // bt, NH),
        [sp["seq"], sp["gates"], sp["r"]] + [sp["seq"]] * np_ + [sp["state"]] * (2 * np_),
        [sp["gates"]] + [sp["state"]] * (np_ + 1),
        [jax.ShapeDtypeStruct(raw.shape, F32)] + [fin] * (np_ + 1),
        bs,
        interpret,
    )(dy, raw, r, *seqs, *state0[1 : 1 + np_], *dlast)
    return outs[0], tuple(outs[1:])


# ---------------------------------------------------------------------------------------------
# custom_vjp core (padded, kernel-layout arrays) and the public entry.
# ---------------------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _slstm_core(gx, r, b, state0, function, interpret, bs):
    """(gx (Bp,S,G,NH,DHp), r (NH,G,DHp,DHp), b (NH,G,DHp), 4 x (Bp,NH,DHp)) -> (y_seq, last)."""
    y_seq, finals, _ = _fwd_call(gx, r, b, state0, function, interpret, bs, False)
    return y_seq, _last_state(y_seq[:, -1], finals, state0, function)


def _last_state(y_last, finals, state0, function):
    if function == "slstm":
        return (y_last, *finals)
    return (y_last, finals[0], state0[2], state0[3])  # the LSTM's n, m pass through


def _slstm_core_fwd(gx, r, b, state0, function, interpret, bs):
    y_seq, seqs, raw = _fwd_call(gx, r, b, state0, function, interpret, bs, True)
    last = _last_state(y_seq[:, -1], tuple(s[:, -1] for s in seqs), state0, function)
    return (y_seq, last), (raw, r, b, y_seq, seqs, state0)


def _slstm_core_bwd(function, interpret, bs, res, cts):
    raw, r, b, y_seq, seqs, state0 = res
    dy_seq, (dy_last, dc_last, dn_last, dm_last) = cts
    sl = function == "slstm"
    dy = dy_seq.astype(F32).at[:, -1].add(dy_last.astype(F32))
    dlast = (dc_last, dn_last, dm_last) if sl else (dc_last,)
    draw, d0 = _bwd_call(
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
        precision=_PRECISION,
        preferred_element_type=F32,
    ).astype(r.dtype)
    db = jnp.swapaxes(draw.sum(axis=(0, 1)), 0, 1).astype(b.dtype)
    dstate0 = tuple(d.astype(s.dtype) for d, s in zip(dstate0, state0, strict=True))
    return draw.astype(r.dtype), dr, db, dstate0  # r is in gates_x's dtype


_slstm_core.defvjp(_slstm_core_fwd, _slstm_core_bwd)


def slstm_pallas(
    gates_x: jax.Array,
    recurrent_kernel: jax.Array,
    bias: jax.Array,
    state0: tuple[jax.Array, jax.Array, jax.Array, jax.Array],
    function: str = "slstm",
    interpret: bool = False,
    block_sizes: BlockSizes | None = None,
):
    """The sLSTM (or LSTM) recurrence with the Pallas kernels; differentiable (custom_vjp).

    The entry registered as ``PALLAS_OPS["slstm"]``; inputs are checked by ``pk.slstm``.
    The recurrent matmul y_{t-1} R runs with operands in ``gates_x``'s dtype (bf16: bf16 MMA;
    fp32: full-precision fp32 dots) and fp32 accumulation; all gate and state math is fp32.

    Args:
      gates_x: (B, S, 4, NH, DH) gate inputs W x_t, order (i, f, z, o); bf16, fp16 or fp32.
      recurrent_kernel: (NH, DH_in, 4, DH_out).
      bias: (NH, 4, DH).
      state0: initial (y, c, n, m), each (B, NH, DH).
      function: "slstm" or "lstm".
      interpret: run the kernels in Pallas interpret mode (CPU testing).
      block_sizes: tiling and launch parameters; ``DEFAULT_BLOCK_SIZES`` if None.

    Returns:
      y (B, S, NH, DH) float32, and the final (y, c, n, m), each (B, NH, DH) float32.
    """
    bs = DEFAULT_BLOCK_SIZES if block_sizes is None else block_sizes
    bs.validate()
    if jnp.dtype(gates_x.dtype) not in SUPPORTED_DTYPES:
        raise ValueError(
            f"The Pallas sLSTM kernel supports gates_x in {[str(d) for d in SUPPORTED_DTYPES]}; "
            f"got {gates_x.dtype}. Use impl='xla'."
        )
    if function not in ("slstm", "lstm"):
        raise ValueError(f"`function` must be 'slstm' or 'lstm'; got {function!r}.")
    B, S, _, NH, DH = gates_x.shape
    Bp = -(-B // bs.batch_tile) * bs.batch_tile
    DHp = max(16, _next_pow2(DH))
    pb, pd = (0, Bp - B), (0, DHp - DH)
    gx = jnp.pad(gates_x, (pb, (0, 0), (0, 0), (0, 0), pd))
    r = jnp.transpose(recurrent_kernel, (0, 2, 1, 3)).astype(gates_x.dtype)  # (NH, G, DH, DH)
    r = jnp.pad(r, ((0, 0), (0, 0), pd, pd))
    b = jnp.pad(bias.astype(F32), ((0, 0), (0, 0), pd))
    s0 = tuple(jnp.pad(s.astype(F32), (pb, (0, 0), pd)) for s in state0)
    y_seq, last = _slstm_core(gx, r, b, s0, function, interpret, bs)
    return y_seq[:B, :, :, :DH], tuple(s[:B, :, :DH] for s in last)


def register() -> None:
    """Registers the kernel as the Pallas implementation of ``pk.slstm``."""
    PALLAS_OPS["slstm"] = slstm_pallas


register()

"""mLSTM as Pallas GPU kernels (Triton lowering): chunkwise forward and backward, decode step.

Implements the ops specified by :func:`pallas_kernels.mlstm.mlstm_chunkwise` (the two-phase
``_chunkwise_xla`` is the spec) and :func:`pallas_kernels.mlstm.mlstm_step` (``_step``).
Importing this module registers both in ``dispatch.PALLAS_OPS``.

Equations (xlstm-math.md, "Chunkwise"; q scaled by s = DHQK^-1/2, chunk length L, chunk k
holds steps t = kL .. kL+L-1, b_t the within-chunk cumsum of log f, g_k = b at the chunk's
last step, (C_{k-1}, n_{k-1}, m_{k-1}) the state at the start of chunk k):

  (1) a_j = g_k - b_j + i_j;  m_k = max(g_k + m_{k-1}, max_j a_j)
  (2) C_k = e^{g_k + m_{k-1} - m_k} C_{k-1} + sum_j e^{a_j - m_k} k_j v_j^T   (n_k likewise)
  (3) log D_ts = b_t - b_s + i_s (s <= t, else -inf);  l_t = b_t + m_{k-1}
      m_t = max(l_t, max_s log D_ts)
  (4) A_ts = s (q_t . k_s) e^{log D_ts - m_t};  e_t = e^{l_t - m_t}
      num_t = sum_s A_ts v_s + e_t s q_t^T C_{k-1};  den_t = sum_s A_ts + e_t s q_t . n_{k-1}
  (5) h_t = num_t / (max(|den_t|, e^{-m_t}) + eps)

Forward (TFLA-style, two kernels):
  kernel A ``mlstm_chunk_states``, grid (B*NH, DHQK tiles, DHV tiles): one program loops over
    the chunks (``fori_loop``) carrying its tile of (C, n, m) and stores every chunk-start state
    (1)-(2); the final state is the carry after the loop.
  kernel B ``mlstm_chunk_outputs``, grid (B*NH, chunks, DHV tiles): (3)-(5) for one chunk, plus
    the per-step m_t and den_t the backward needs.

Backward (states recomputed by kernel A, nothing of size S*D stored but the inputs and h).
With N_t = max(|den_t|, e^{-m_t}) + eps, dnum_t = dh_t / N_t and dN_t = -(dh_t . h_t) / N_t
(XLA, per step), dden_t = dN_t sign(den_t) on the |den| branch of the max, else dm_t gets
-dN_t e^{-m_t}:
  kernel C ``mlstm_state_grads``, grid as kernel A, chunks in reverse: the cotangent of each
    chunk-end state, G_k = dL/dC_k, through (2) and (4):
      G_{k-1} = e^{g_k + m_{k-1} - m_k} G_k + sum_t e_t s q_t dnum_t^T   (dn likewise, with dden)
    ending with the initial-state gradient dC_0 (and dn_0).
  kernel D ``mlstm_chunk_grads``, grid (B*NH, chunks), DHV in tiles inside: with
    dA_ts = dnum_t . v_s + dden_t,  dq = s (dA*P) k + e_t s (C_{k-1} dnum_t + dden_t n_{k-1}),
    dk = s (dA*P)^T q + w_s (G_k v_s + dn_k),  dv = A^T dnum + w_s G_k^T k_s   (w_s = e^{a_s-m_k})
    and the log-space gradients of the gate terms: dA*A on log D (plus the cotangent of m_t
    routed to its argmax, (3)), on l_t, on log w_s and on the decay of (2).
  The stabilisers are differentiated exactly (as autodiff of the reference does): the scalar
  recursion (1) for the cotangents of m_k runs backwards over chunks in XLA, and the gate
  gradients reach i and log f through b (the cumsum is XLA, outside the kernels).

Matmul operands are in the input dtype (fp32 inputs: full-precision fp32 dots; bf16/fp16: bf16
/fp16 MMA, states and score matrices cast to it) with fp32 accumulation; gates, stabilisers
and states are fp32. In interpret mode float64 inputs run in float64 throughout (the tests
use it to check the kernels' math against the reference to 1e-10).

Padding (wrapper, differentiable): S to a multiple of L with log f = 0 and i = -1e30 (the state
passes through unchanged, as the reference's -inf; finite so that no inf - inf appears in the
backward), head dims to powers of two >= 16 with zeros (q.k, k v^T, q.C and q.n unchanged).

Shape legend: B batch, NH heads, BH = B*NH, S sequence (Sp padded), L chunk, NC chunks,
DQ/DV head dims (DQp/DVp padded), TQ/TV tiles.
  kernel layouts: q, k (BH, Sp, DQp); v, h (BH, Sp, DVp); i, b (BH, Sp) fp32;
  chunk states C (BH, NC, DQp, DVp), n (BH, NC, DQp), m (BH, NC) fp32; m0/m_last (BH, 1).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from pallas_kernels import mlstm as _ref
from pallas_kernels.dispatch import PALLAS_OPS

F32 = jnp.float32
SUPPORTED_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
# Input gate of padded steps: e^{i - m} underflows to exactly 0, like the reference's -inf.
_PAD_I = -1e30
# fp32 operands: full-precision dots (not Triton's TF32 default), to match the reference.
_PRECISION = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tiling and launch parameters of the mLSTM kernels (untuned on a GPU so far).

    Attributes:
      state_tile_qk, state_tile_v: (DHQK, DHV) tile of the state that one program of the
        chunk-state kernels (A: forward, C: backward) carries over the chunks.
      out_tile_v: DHV tile of one program of the output kernel (B).
      bwd_tile_v: DHV tile of the inner loop of the gradient kernel (D).
      step_tile_v: DHV tile of one program of the decode-step kernel.
      num_warps_state, num_warps_chunk, num_warps_step: Triton warps of kernels A/C, B/D, step.
      num_stages: Triton pipeline stages.

    All tiles are powers of two >= 16; a tile larger than the (padded) head dim is clipped.
    """

    # Chosen from Triton 3.9 -> ptxas sm_90 resource counts at DHQK 128, DHV 256, bf16 (no GPU
    # run yet): 8 warps keep kernels A, B, C spill-free at L 64 and 128 (4 warps spill in B at
    # L 128); kernel D still spills (~0.4 KB/thread at L 64, ~1.9 KB at L 128) with
    # bwd_tile_v 32, less than with 64. benchmarks/results/mlstm_kernel_cpu.md
    state_tile_qk: int = 64
    state_tile_v: int = 64
    out_tile_v: int = 64
    bwd_tile_v: int = 32
    step_tile_v: int = 64
    num_warps_state: int = 8
    num_warps_chunk: int = 8
    num_warps_step: int = 4
    num_stages: int = 1

    def validate(self) -> None:
        for field in ("state_tile_qk", "state_tile_v", "out_tile_v", "bwd_tile_v", "step_tile_v"):
            val = getattr(self, field)
            if val < 16 or not _is_pow2(val):
                raise ValueError(f"BlockSizes.{field} must be a power of two >= 16; got {val}.")
        for field in ("num_warps_state", "num_warps_chunk", "num_warps_step", "num_stages"):
            if getattr(self, field) < 1:
                raise ValueError(f"BlockSizes.{field} must be >= 1.")


DEFAULT_BLOCK_SIZES = BlockSizes()


def _is_pow2(x: int) -> bool:
    return x > 0 and (x & (x - 1)) == 0


def _next_pow2(x: int) -> int:
    return 1 << (max(x, 1) - 1).bit_length()


def _pad_dim(d: int) -> int:
    return max(16, _next_pow2(d))


# ---------------------------------------------------------------------------------------------
# In-kernel helpers.
# ---------------------------------------------------------------------------------------------


def _dot(a, b, acc):
    """a @ b with accumulation in ``acc`` (fp32)."""
    return jnp.dot(a, b, precision=_PRECISION, preferred_element_type=acc)


def _dot_nt(a, b, acc):
    """a @ b^T with accumulation in ``acc`` (fp32)."""
    dims = (((1,), (1,)), ((), ()))
    return jax.lax.dot_general(a, b, dims, precision=_PRECISION, preferred_element_type=acc)


def _dot_tn(a, b, acc):
    """a^T @ b with accumulation in ``acc`` (fp32)."""
    dims = (((0,), (0,)), ((), ()))
    return jax.lax.dot_general(a, b, dims, precision=_PRECISION, preferred_element_type=acc)


def _intra(q, k, i, b, m_prev, scale):
    """Eqs. (3)-(4) inside one chunk: everything but the products with v and the state.

    Args:
      q, k: (L, DQp) in the matmul dtype; i, b: (L,) fp32; m_prev: scalar m_{k-1}.
    Returns:
      dict with mask (L, L), log_d (L, L) (-inf above the diagonal), row_max (L,) =
      max_s log D_ts, l (L,) = b_t + m_{k-1}, m (L,) = m_t, P (L, L) = e^{log D - m_t} (0 off
      the causal part), S (L, L) = s q.k^T, A = S * P, e (L,) = e^{l_t - m_t}.
    """
    L = q.shape[0]
    rows = jax.lax.broadcasted_iota(jnp.int32, (L, L), 0)
    cols = jax.lax.broadcasted_iota(jnp.int32, (L, L), 1)
    mask = cols <= rows
    log_d = jnp.where(mask, b[:, None] - b[None, :] + i[None, :], -jnp.inf)  # (3)
    row_max = jnp.max(log_d, axis=1)
    l_t = b + m_prev
    m_t = jnp.maximum(l_t, row_max)  # (3)
    P = jnp.where(mask, jnp.exp(log_d - m_t[:, None]), 0.0)
    S = _dot_nt(q, k, b.dtype) * scale
    return dict(
        mask=mask,
        log_d=log_d,
        row_max=row_max,
        l=l_t,
        m=m_t,
        P=P,
        S=S,
        A=S * P,  # (4)
        e=jnp.exp(l_t - m_t),  # (4)
    )


def _chunk_slice(c, L):
    return pl.ds(pl.multiple_of(c * L, L), L)


# ---------------------------------------------------------------------------------------------
# Kernels.
# ---------------------------------------------------------------------------------------------


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

        rows = _chunk_slice(c, L)
        kk = k_ref[rows, :]
        g = b_ref[c * L + L - 1]
        a = g - b_ref[rows] + i_ref[rows]  # (1)
        m_new = jnp.maximum(g + m, jnp.max(a))  # (1)
        decay = jnp.exp(g + m - m_new)
        w = jnp.exp(a - m_new)
        kw = kk.astype(acc) * w[:, None]
        C = decay * C + _dot_tn(kw.astype(mm), v_ref[rows, :], acc)  # (2)
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
):
    """Kernel B: eqs. (3)-(5) for one (BH, chunk, DHV tile).

    Refs: q, k (L, DQp), v (L, TV), i, b (L,), C_{k-1} (DQp, TV), n_{k-1} (DQp,), m (NC,);
    outputs h (L, TV) and, from the DHV-tile-0 program, m_t and den_t (L,) fp32.
    """
    mm, acc = q_ref.dtype, cs_ref.dtype
    q = q_ref[...]
    x = _intra(q, k_ref[...], i_ref[...], b_ref[...], ms_ref[pl.program_id(1)], scale)
    e = x["e"]
    num = _dot(x["A"].astype(mm), v_ref[...], acc)
    num += (e * scale)[:, None] * _dot(q, cs_ref[...].astype(mm), acc)  # (4)
    qn = jnp.sum(q.astype(acc) * ns_ref[...][None, :], axis=1)
    den = jnp.sum(x["A"], axis=1) + e * scale * qn  # (4)
    normaliser = jnp.maximum(jnp.abs(den), jnp.exp(-x["m"])) + eps  # (5)
    h_ref[...] = (num / normaliser[:, None]).astype(h_ref.dtype)

    @pl.when(pl.program_id(2) == 0)
    def _():
        mt_ref[...] = x["m"]
        den_ref[...] = den


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

        rows = _chunk_slice(c, L)
        qf = q_ref[rows, :].astype(acc) * scale
        decay = decay_ref[c]
        # dL/dC_{k-1} = decay dL/dC_k (2) + sum_t e_t s q_t dnum_t^T (4).
        G = decay * G + _dot_tn(
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
    TV,
    NV,
):
    """Kernel D: dq, dk, dv and the log-space gate gradients of one (BH, chunk).

    Refs: q, k (L, DQp), v, dh (L, DVp), i, b (L,), C_{k-1} (DQp, DVp), n_{k-1} (DQp,),
    m (NC,), G_k (DQp, DVp), dn_k (DQp,), 1/N_t, dden_t, dm_t (from N) and w_s (L,) fp32.
    Outputs dq, dk (L, DQp), dv (L, DVp) fp32; per step sum_s dlogD_ts, sum_t dlogD_ts,
    dL/dl_t and dL/dlog w_s (L,); dL/d(decay of chunk k) at [k] of a (NC,) row.
    """
    mm, acc = q_ref.dtype, cs_ref.dtype
    c = pl.program_id(1)
    q, k = q_ref[...], k_ref[...]
    x = _intra(q, k, i_ref[...], b_ref[...], ms_ref[c], scale)
    A, P, e = x["A"], x["P"], x["e"]
    A_mm = A.astype(mm)
    inv_n = inv_n_ref[...]
    w = w_ref[...]
    L, DQp = q.shape

    def body(j, carry):
        dA, qcd, dqi, kg, ddec = carry
        cols = pl.ds(pl.multiple_of(j * TV, TV), TV)
        v_j = v_ref[:, cols]
        dnum = dh_ref[:, cols].astype(acc) * inv_n[:, None]  # dL/dnum_t
        dnum_mm = dnum.astype(mm)
        c_j = cs_ref[:, cols]
        g_j = gs_ref[:, cols]
        dA += _dot_nt(dnum_mm, v_j, acc)  # dnum_t . v_s
        qcd += jnp.sum(_dot(q, c_j.astype(mm), acc) * dnum, axis=1)  # q_t^T C dnum_t
        dqi += _dot_nt(dnum_mm, c_j.astype(mm), acc)  # C dnum_t
        kg += _dot_nt(v_j, g_j.astype(mm), acc)  # G_k v_s
        ddec += jnp.sum(g_j * c_j)  # <G_k, C_{k-1}>
        # dv_s = sum_t A_ts dnum_t (4) + w_s G_k^T k_s (2).
        dv_ref[:, cols] = _dot_tn(A_mm, dnum_mm, acc) + w[:, None] * _dot(k, g_j.astype(mm), acc)
        return dA, qcd, dqi, kg, ddec

    zeros_ld = jnp.zeros((L, DQp), acc)
    init = (jnp.zeros((L, L), acc), jnp.zeros((L,), acc), zeros_ld, zeros_ld, jnp.zeros((), acc))
    dA, qcd, dqi, kg, ddec = jax.lax.fori_loop(0, NV, body, init)

    n_prev = ns_ref[...]
    dden = dden_ref[...]
    qn = jnp.sum(q.astype(acc) * n_prev[None, :], axis=1)
    de = scale * (qcd + dden * qn)  # dL/de_t
    dA += dden[:, None]
    dS = dA * P
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

    dS_mm = dS.astype(mm)
    dq = scale * (_dot(dS_mm, k, acc) + e[:, None] * (dqi + dden[:, None] * n_prev[None, :]))
    dq_ref[...] = dq
    dk_rec = w[:, None] * (kg + gns_ref[...][None, :])  # dL/dk_s through (2)
    dk_ref[...] = scale * _dot_tn(dS_mm, q, acc) + dk_rec
    dlw_ref[...] = jnp.sum(k.astype(acc) * dk_rec, axis=1)  # dL/dlog w_s
    ddecay_ref[c] = ddec + jnp.sum(gns_ref[...] * n_prev)


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
    """One decode step for one (BH, DHV tile), as ``mlstm._step``.

    Refs: q, k (DQp,), v (TV,), i, f (1,), C (DQp, TV), n (DQp,), m (1,); outputs h (TV,),
    the new C (DQp, TV), n (DQp,) and m (1,) (n, m from the DHV-tile-0 program).
    """
    acc = c_ref.dtype
    q = q_ref[...].astype(acc)
    k = k_ref[...].astype(acc)
    f = f_ref[0]
    logf = jnp.minimum(f, 0.0) - jnp.log1p(jnp.exp(-jnp.abs(f)))  # log sigma(f), stable
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


# ---------------------------------------------------------------------------------------------
# pallas_call wrappers (padded, kernel-layout arrays).
# ---------------------------------------------------------------------------------------------


def _call(kernel, name, grid, in_specs, out_specs, out_shape, num_warps, bs, interpret):
    return pl.pallas_call(
        kernel,
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=pltriton.CompilerParams(num_warps=num_warps, num_stages=bs.num_stages),
        interpret=interpret,
        name=name,
    )


def _chunk_states(k, v, i, b, state0, L, bs, interpret):
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
    cs, ns, ms, cl, nl, ml = _call(
        kernel,
        "mlstm_chunk_states",
        grid,
        [seq_q, seq_v, gate, gate, C, n, m],
        out_specs,
        out_shape,
        bs.num_warps_state,
        bs,
        interpret,
    )(k, v, i, b, *state0)
    return (cs, ns, ms), (cl, nl, ml)


def _chunk_outputs(q, k, v, i, b, starts, L, scale, eps, bs, interpret):
    """Kernel B. Returns h (BH, Sp, DVp) in v's dtype, m_t and den_t (BH, Sp) fp32."""
    BH, Sp, DQp = q.shape
    DVp = v.shape[-1]
    NC = Sp // L
    acc = b.dtype
    TV = min(bs.out_tile_v, DVp)
    kernel = functools.partial(_chunk_outputs_kernel, scale=scale, eps=eps)
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
    return _call(
        kernel,
        "mlstm_chunk_outputs",
        (BH, NC, DVp // TV),
        in_specs,
        [vt, gate, gate],
        out_shape,
        bs.num_warps_chunk,
        bs,
        interpret,
    )(q, k, v, i, b, *starts)


def _state_grads(q, dh, coef, coef_den, decay, dlast, L, scale, bs, interpret):
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
    return _call(
        kernel,
        "mlstm_state_grads",
        (BH, DQp // TQ, DVp // TV),
        in_specs,
        out_specs,
        out_shape,
        bs.num_warps_state,
        bs,
        interpret,
    )(q, dh, coef, coef_den, decay, *dlast)


def _chunk_grads(q, k, v, dh, i, b, starts, gstarts, vecs, L, scale, bs, interpret):
    """Kernel D. Returns dq, dk (BH, Sp, DQp), dv (BH, Sp, DVp) fp32, the per-step gate
    vectors (row sums, column sums of dlog D, dl, dlog w) (BH, Sp) and ddecay (BH, NC)."""
    BH, Sp, DQp = q.shape
    DVp = v.shape[-1]
    NC = Sp // L
    acc = b.dtype
    TV = min(bs.bwd_tile_v, DVp)
    kernel = functools.partial(_chunk_grads_kernel, scale=scale, TV=TV, NV=DVp // TV)
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
    return _call(
        kernel,
        "mlstm_chunk_grads",
        (BH, NC),
        in_specs,
        out_specs,
        out_shape,
        bs.num_warps_chunk,
        bs,
        interpret,
    )(q, k, v, dh, i, b, *starts, *gstarts, *vecs)


# ---------------------------------------------------------------------------------------------
# custom_vjp core (padded, kernel-layout arrays).
# ---------------------------------------------------------------------------------------------


def _forward(q, k, v, i, b, state0, L, scale, eps, bs, interpret):
    starts, last = _chunk_states(k, v, i, b, state0, L, bs, interpret)
    h, m_t, den = _chunk_outputs(q, k, v, i, b, starts, L, scale, eps, bs, interpret)
    return h, last, m_t, den


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9, 10))
def _mlstm_core(q, k, v, i, b, state0, L, scale, eps, bs, interpret):
    """(q, k (BH,Sp,DQp), v (BH,Sp,DVp), i, b (BH,Sp) fp32, (C0, n0, m0 (BH,1))) ->
    (h (BH,Sp,DVp), (C, n, m (BH,1)) final)."""
    h, last, _, _ = _forward(q, k, v, i, b, state0, L, scale, eps, bs, interpret)
    return h, last


def _mlstm_core_fwd(q, k, v, i, b, state0, L, scale, eps, bs, interpret):
    h, last, m_t, den = _forward(q, k, v, i, b, state0, L, scale, eps, bs, interpret)
    return (h, last), (q, k, v, i, b, state0, h, m_t, den)


def _mlstm_core_bwd(L, scale, eps, bs, interpret, res, cts):
    q, k, v, i, b, state0, h, m_t, den = res
    dh, (dc_last, dn_last, dm_last) = cts
    BH, Sp, _ = q.shape
    NC = Sp // L
    acc = b.dtype
    # Chunk-start states, recomputed (kernel A).
    starts, (_, _, m_last) = _chunk_states(k, v, i, b, state0, L, bs, interpret)
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
    gs, gns, dc0, dn0 = _state_grads(
        q, dh, e * inv_n, e * dden, decay, dlast, L, scale, bs, interpret
    )
    # Kernel D: dq, dk, dv and the gate vectors, per chunk.
    dq, dk, dv, drow, dcol, dl, dlw, ddecay = _chunk_grads(
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


_mlstm_core.defvjp(_mlstm_core_fwd, _mlstm_core_bwd)


# ---------------------------------------------------------------------------------------------
# Public entries (registered in PALLAS_OPS; inputs already checked by pk.mlstm_*).
# ---------------------------------------------------------------------------------------------


def _check_dtype(x, interpret: bool) -> jnp.dtype:
    """Returns the state/accumulation dtype: float32 (float64 for float64 inputs, which only
    interpret mode runs: the exact-arithmetic check of the kernels' math)."""
    if interpret and x.dtype == jnp.float64:
        return jnp.dtype(jnp.float64)
    if jnp.dtype(x.dtype) not in SUPPORTED_DTYPES:
        raise ValueError(
            f"The Pallas mLSTM kernels support q/k/v in {[str(d) for d in SUPPORTED_DTYPES]}; "
            f"got {x.dtype}. Use impl='xla'."
        )
    return jnp.dtype(F32)


def mlstm_chunkwise_pallas(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    i: jax.Array,
    f: jax.Array,
    chunk_size: int,
    state0: tuple[jax.Array, jax.Array, jax.Array],
    eps: float = 1e-6,
    interpret: bool = False,
    block_sizes: BlockSizes | None = None,
):
    """The chunkwise mLSTM with the Pallas kernels; differentiable (custom_vjp).

    The entry registered as ``PALLAS_OPS["mlstm_chunkwise"]``; inputs are checked by
    ``pk.mlstm_chunkwise``, which also casts the state to float32.

    Args:
      q, k: (B, NH, S, DHQK); v: (B, NH, S, DHV); bf16, fp16 or fp32, one dtype.
      i, f: (B, NH, S) gate pre-activations (any float dtype; used in float32).
      chunk_size: L, a power of two >= 16 (the minimum size of a Triton dot operand).
      state0: (C (B, NH, DHQK, DHV), n (B, NH, DHQK), m (B, NH)) float32.
      eps: normaliser epsilon.
      interpret: run the kernels in Pallas interpret mode (CPU testing).
      block_sizes: tiling and launch parameters; ``DEFAULT_BLOCK_SIZES`` if None.

    Returns:
      h (B, NH, S, DHV) in v's dtype, and the final (C, n, m) float32.
    """
    bs = DEFAULT_BLOCK_SIZES if block_sizes is None else block_sizes
    bs.validate()
    acc = _check_dtype(q, interpret)
    L = chunk_size
    if L < 16 or not _is_pow2(L):
        raise ValueError(
            f"The Pallas mLSTM kernel needs chunk_size to be a power of two >= 16; got {L}. "
            "Use impl='xla' for other chunk sizes."
        )
    B, NH, S, DQ = q.shape
    DV = v.shape[-1]
    BH, NC = B * NH, -(-S // L)
    Sp, DQp, DVp = NC * L, _pad_dim(DQ), _pad_dim(DV)
    ps, pq, pv = (0, Sp - S), (0, DQp - DQ), (0, DVp - DV)
    z = (0, 0)
    qp = jnp.pad(q, (z, z, ps, pq)).reshape(BH, Sp, DQp)
    kp = jnp.pad(k, (z, z, ps, pq)).reshape(BH, Sp, DQp)
    vp = jnp.pad(v, (z, z, ps, pv)).reshape(BH, Sp, DVp)
    # Padded steps keep the state: log f = 0, i = _PAD_I (the reference pads the same way).
    valid = jnp.arange(Sp) < S
    logf = jnp.where(valid, jax.nn.log_sigmoid(jnp.pad(f.astype(acc), (z, z, ps))), 0.0)
    ip = jnp.where(valid, jnp.pad(i.astype(acc), (z, z, ps)), _PAD_I).reshape(BH, Sp)
    b = jnp.cumsum(logf.reshape(BH, NC, L), axis=-1).reshape(BH, Sp)  # within-chunk cumsum
    C0, n0, m0 = (s.astype(acc) for s in state0)
    s0 = (
        jnp.pad(C0, (z, z, pq, pv)).reshape(BH, DQp, DVp),
        jnp.pad(n0, (z, z, pq)).reshape(BH, DQp),
        m0.reshape(BH, 1),
    )
    h, (C, n, m) = _mlstm_core(qp, kp, vp, ip, b, s0, L, DQ**-0.5, eps, bs, interpret)
    h = h.reshape(B, NH, Sp, DVp)[:, :, :S, :DV]
    last = (
        C.reshape(B, NH, DQp, DVp)[..., :DQ, :DV],
        n.reshape(B, NH, DQp)[..., :DQ],
        m.reshape(B, NH),
    )
    return h, last


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
    return _call(
        functools.partial(_step_kernel, eps=eps, scale=scale),
        "mlstm_step",
        (BH, DVp // TV),
        [vec_q, vec_q, vec_v, one, one, C, vec_q, one],
        [vec_v, C, vec_q, one],
        out_shape,
        bs.num_warps_step,
        bs,
        interpret,
    )(q, k, v, i, f, *state)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9))
def _step_core(q, k, v, i, f, state, eps, scale, bs, interpret):
    return _step_call(q, k, v, i, f, state, eps, scale, bs, interpret)


def _step_core_fwd(q, k, v, i, f, state, eps, scale, bs, interpret):
    return _step_call(q, k, v, i, f, state, eps, scale, bs, interpret), (q, k, v, i, f, state)


def _step_ref(q, k, v, i, f, state, eps, scale):
    """``mlstm._step`` on kernel-layout arrays (zero-padded q/k dims: scale passed in)."""
    C, n, m = state
    acc = C.dtype
    q, k, v = (x.astype(acc)[None] for x in (q, k, v))  # (1, BH, D): _step's (B, NH, D)
    h, (C, n, m) = _ref._step(
        q * (scale * q.shape[-1] ** 0.5), k, v, i.T, f.T, (C[None], n[None], m.T), eps
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
    eps: float = 1e-6,
    interpret: bool = False,
    block_sizes: BlockSizes | None = None,
):
    """One fused decode step (``PALLAS_OPS["mlstm_step"]``), the numerics of ``mlstm._step``.

    Args:
      q, k: (B, NH, DHQK); v: (B, NH, DHV) in bf16, fp16 or fp32; i, f: (B, NH);
      state: (C (B, NH, DHQK, DHV), n (B, NH, DHQK), m (B, NH)).
      eps, interpret, block_sizes: as ``mlstm_chunkwise_pallas``.

    Returns:
      (h (B, NH, DHV) in v's dtype, new (C, n, m) float32).
    """
    bs = DEFAULT_BLOCK_SIZES if block_sizes is None else block_sizes
    bs.validate()
    acc = _check_dtype(q, interpret)
    B, NH, DQ = q.shape
    DV = v.shape[-1]
    BH, DQp, DVp = B * NH, _pad_dim(DQ), _pad_dim(DV)
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


def register() -> None:
    """Registers the kernels as the Pallas implementations of ``pk.mlstm_chunkwise`` and
    ``pk.mlstm_step``."""
    PALLAS_OPS["mlstm_chunkwise"] = mlstm_chunkwise_pallas
    PALLAS_OPS["mlstm_step"] = mlstm_step_pallas


register()

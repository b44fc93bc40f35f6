"""The chunkwise mLSTM as Mosaic GPU kernels (Hopper: TMA, swizzled SMEM, wgmma).

The "mosaic" entry of ``mlstm_chunkwise`` in ``pallas_kernels.dispatch``: the op specified
by ``pallas_kernels.mlstm.reference.chunkwise``, beside the Triton kernels of
``triton_chunkwise.py`` (JAX deprecated the Pallas Triton lowering in 0.11). What the Mosaic
kernels share (the JAX gate, the tile, ``supports``) is in ``pallas_kernels/mosaic.py``.
Kernels are ``plgpu.kernel`` calls (``pl.pallas_call`` with Mosaic GPU compiler params has no
GPU lowering registered on JAX 0.11.2 / 0.12, and its interpreter takes no non-trivial block
specs), run compiled on sm_90+ or, for testing, in the Mosaic GPU interpreter on a CPU
(``interpret=True``).

Equations (numbers as in ``triton_chunkwise.py``; q scaled by s = DHQK^-1/2, chunk length L,
b_t the within-chunk cumsum of log f, g_k = b at the chunk's last step, (C, n, m)_{k-1}
the state at the start of chunk k):

  (1) a_j = g_k - b_j + i_j;  m_k = max(g_k + m_{k-1}, max_j a_j)
  (2) C_k = e^{g_k + m_{k-1} - m_k} C_{k-1} + sum_j e^{a_j - m_k} k_j v_j^T   (n_k likewise)
  (3) log D_ts = b_t - b_s + i_s (s <= t);  m_t = max(b_t + m_{k-1}, max_s log D_ts)
  (4) A_ts = s (q_t . k_s) e^{log D_ts - m_t};  e_t = e^{b_t + m_{k-1} - m_t}
      num_t = sum_s A_ts v_s + e_t s q_t^T C_{k-1};  den_t = sum_s A_ts + e_t s q_t . n_{k-1}
  (5) h_t = num_t / (max(|den_t|, e^{-m_t}) + eps)

Split of the work. Everything that is O(S) or O(S DHQK) (gates, the scalar stabiliser
recursion (1), the per-step m_t of (3) as b_t + a running max of i_s - b_s, the normaliser
vector n of (2) and q . n of (4)) runs in XLA; the O(S DHQK DHV) and O(S L D) matmuls run in
the two Mosaic kernels of ``mosaic_kernels.py``: kernel S carries the chunk states (2) over
the chunks, kernel O computes the outputs (4)-(5) per chunk (that module describes their
grids, tiles, SMEM budget and numerics).

Backward (``jax.custom_vjp``; nothing of size S*D is kept but the inputs). The chunk-start
states are recomputed by kernel S. With N_t = max(|den_t|, e^{-m_t}) + eps, dnum_t =
dh_t / N_t and dN_t = -(dh_t . h_t) / N_t (h_t recomputed in fp32), dden_t = dN_t sign(den_t)
on the |den| branch of the max, else m_t gets -dN_t e^{-m_t}:
  kernel S reversed ``mlstm_mosaic_state_grads`` (same grid and pipeline, chunks from last to
    first): the chunk-end state cotangents G_k = dL/dC_k through (2) and (4),
      G_{k-1} = e^{g_k + m_{k-1} - m_k} G_k + sum_t (e_t s / N_t) q_t dh_t^T,
    ending with the initial-state gradient dC_0;
  XLA, batched over all chunks at once (no sequential dependence): dn_k (a vector
    recursion), then with dA_ts = dnum_t . v_s + dden_t and P_ts = e^{log D_ts - m_t}:
      dq = s (dA*P) k + e_t s (C_{k-1} dnum_t + dden_t n_{k-1}),
      dk = s (dA*P)^T q + w_s (G_k v_s + dn_k),  dv = A^T dnum + w_s G_k^T k_s,
    and the log-space gradients of the gate terms. The stabilisers are differentiated
    exactly as autodiff of the reference does (m_t and m_k pass their cotangents to the
    branch of the max they took, ties split evenly); the scalar recursion (1) runs
    backwards over chunks in a ``lax.scan``; i and log f get theirs through b by autodiff
    of the padding and the cumsum, outside the custom_vjp.
  The intra-chunk terms are not a Mosaic kernel yet: they materialise (L, L) blocks per
  chunk in XLA.

Padding (wrapper): S to a multiple of L with log f = 0 and i = -1e30 (the state passes
through unchanged), head dims to multiples of 64 with zeros.

JAX versions: needs ``plgpu.kernel`` with ``interpret=plgpu.InterpretGPUParams()`` and
``plgpu.load(ref, layout=...)``; checked on JAX 0.11.2 and 0.12.0.1. Older JAX raises a
``RuntimeError`` naming the version (``pallas_kernels.mosaic.jax_reason``).

Shape legend: B batch, NH heads, BH = B*NH, S sequence (Sp padded), L chunk, NC chunks,
DQ/DV head dims (DQp/DVp padded), T = 64 the tile.
  kernel layouts: q, k (BH, Sp, DQp); v, h (BH, Sp, DVp); chunk states (BH, NC, DQp, DVp).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from pallas_kernels import mosaic
from pallas_kernels.mlstm.mosaic_kernels import chunk_outputs, chunk_states
from pallas_kernels.mosaic import TILE, pad_to

# Input gate of padded steps: e^{i - m} underflows to exactly 0, like the reference's -inf.
PAD_I = -1e30


def _gates(ip, b, m0, L):
    """The gate and stabiliser terms of (1)-(4) per chunk, all fp32 (BH, NC[, L]).

    ``m_t`` is ``b_t + max(m_{k-1}, max_{s<=t} (i_s - b_s))`` split as the kernels use it:
    ``row_max`` = b_t + the running max of i_s - b_s (``cm``), ``l`` = b_t + m_{k-1}.
    """
    BH, Sp = b.shape
    NC = Sp // L
    bc, ic = b.reshape(BH, NC, L), ip.reshape(BH, NC, L)
    g = bc[..., -1]
    a = g[..., None] - bc + ic  # (1)

    def stabiliser(m, xs):  # (1), a scalar per chunk
        g_k, amax_k = xs
        m_new = jnp.maximum(g_k + m, amax_k)
        return m_new, (m, m_new)

    m_last, (m_prev, m_end) = jax.lax.scan(stabiliser, m0.reshape(BH), (g.T, a.max(-1).T))
    m_prev, m_end = m_prev.T, m_end.T
    i_b = ic - bc
    cm = jax.lax.cummax(i_b, axis=2)
    l_t, row_max = bc + m_prev[..., None], bc + cm  # (3)
    m_t = jnp.maximum(l_t, row_max)
    return dict(
        b=bc,
        g=g,
        a=a,
        m_prev=m_prev,
        m_last=m_last,
        decay=jnp.exp(g + m_prev - m_end),  # (2)
        w=jnp.exp(a - m_end[..., None]),  # (2)
        i_b=i_b,
        cm=cm,
        l=l_t,
        row_max=row_max,
        m=m_t,
        e=jnp.exp(l_t - m_t),  # (4)
    )


def _normaliser_states(x, kp, n0):
    """(2) for n, a matrix-vector recursion in XLA: chunk-start n (BH, NC, DQp), final n."""
    BH, Sp, DQp = kp.shape
    NC = x["w"].shape[1]
    kw = jnp.einsum("bcl,bcld->bcd", x["w"], kp.reshape(BH, NC, -1, DQp).astype(n0.dtype))

    def step(n, xs):
        d_k, kw_k = xs
        return d_k[:, None] * n + kw_k, n

    n_last, starts = jax.lax.scan(step, n0, (x["decay"].T, jnp.moveaxis(kw, 1, 0)))
    return jnp.moveaxis(starts, 0, 1), n_last


def _core_forward(qp, kp, vp, ip, b, s0, L, scale, eps, interpret):
    """Kernel layouts in (see the legend), (h (BH, Sp, DVp), final (C, n, m (BH, 1))) out."""
    BH, Sp, DQp = qp.shape
    NC = Sp // L
    C0, n0, m0 = s0
    x = _gates(ip, b, m0, L)
    n_starts, n_last = _normaliser_states(x, kp, n0)
    C_starts, C_last = chunk_states(kp, vp, x["w"].reshape(BH, Sp), x["decay"], C0, L, interpret)
    qn = jnp.einsum("bcld,bcd->bcl", qp.reshape(BH, NC, L, DQp).astype(b.dtype), n_starts)
    es = x["e"] * scale
    vecs = jnp.stack([x["b"] - x["m"], x["i_b"], es, es * qn, jnp.exp(-x["m"])], axis=1)
    starts_mm = C_starts.astype(qp.dtype)
    h = chunk_outputs(qp, kp, vp, starts_mm, vecs.reshape(BH, 5, Sp), L, scale, eps, interpret)
    return h, (C_last, n_last, x["m_last"][:, None])


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9))
def _core(qp, kp, vp, ip, b, s0, L, scale, eps, interpret):
    """(q, k (BH,Sp,DQp), v (BH,Sp,DVp), i, b (BH,Sp) fp32, (C0, n0, m0 (BH,1))) ->
    (h (BH,Sp,DVp), (C, n, m (BH,1)) final)."""
    return _core_forward(qp, kp, vp, ip, b, s0, L, scale, eps, interpret)


def _core_fwd(qp, kp, vp, ip, b, s0, L, scale, eps, interpret):
    h, last = _core_forward(qp, kp, vp, ip, b, s0, L, scale, eps, interpret)
    return (h, last), (qp, kp, vp, ip, b, s0)


def _tie_weight(x, y):
    """d max(x, y) / dx as autodiff of ``jnp.maximum`` gives it: 1, 0.5 on a tie, else 0."""
    return jnp.where(x > y, 1.0, jnp.where(x == y, 0.5, 0.0))


def _core_bwd(L, scale, eps, interpret, res, cts):
    """The backward (see the module docstring): states recomputed by kernel S, the state
    cotangents G_k by kernel S reversed, the rest batched over chunks in XLA."""
    qp, kp, vp, ip, b, s0 = res
    dh, (dc_last, dn_last, dm_last) = cts
    f32 = b.dtype
    BH, Sp, DQp = qp.shape
    DVp = vp.shape[-1]
    NC = Sp // L
    C0, n0, m0 = s0
    x = _gates(ip, b, m0, L)
    n_starts, _ = _normaliser_states(x, kp, n0)
    C_starts, _ = chunk_states(kp, vp, x["w"].reshape(BH, Sp), x["decay"], C0, L, interpret)

    def chunked(a):
        return a.reshape(BH, NC, L, a.shape[-1]).astype(f32)

    qc, kc, vc, dhc = map(chunked, (qp, kp, vp, dh))
    e, w, decay = x["e"], x["w"], x["decay"]
    # (3)-(4) again, per chunk: P, A and den_t.
    t = jnp.arange(L)
    mask = t[None, :] <= t[:, None]  # [t, s]: s <= t
    P = jnp.where(mask, jnp.exp((x["b"] - x["m"])[..., :, None] + x["i_b"][..., None, :]), 0.0)
    A = jnp.einsum("bctd,bcsd->bcts", qc, kc) * scale * P
    qn = jnp.sum(qc * n_starts[:, :, None, :], axis=-1)
    den = A.sum(-1) + e * scale * qn
    qC = jnp.einsum("bctd,bcde->bcte", qc, C_starts)
    num = jnp.einsum("bcts,bcse->bcte", A, vc) + (e * scale)[..., None] * qC
    # (5), per step: N_t and the cotangents of num_t, den_t and (through the max) m_t.
    exp_neg_m = jnp.exp(-x["m"])
    w_den = _tie_weight(jnp.abs(den), exp_neg_m)
    norm = jnp.maximum(jnp.abs(den), exp_neg_m) + eps
    # h in fp32 (not the stored h, rounded to v's dtype): the m_t paths of (5) cancel
    # exactly in the reference (h does not depend on the stabiliser), and a rounded h
    # would leave that cancellation a residual of its rounding in dm_0.
    dnorm = -jnp.sum(dhc * num, axis=-1) / norm**2
    dden = dnorm * w_den * jnp.sign(den)
    dm_norm = -dnorm * (1.0 - w_den) * exp_neg_m
    dnum = dhc / norm[..., None]

    # G_k = dL/dC_k: G_{k-1} = decay_k G_k + sum_t (e_t s / N_t) q_t dh_t^T (kernel S, reversed).
    coef = (e * scale / norm).reshape(BH, Sp)
    G, dC0 = chunk_states(
        qp, dh.astype(qp.dtype), coef, decay, dc_last.astype(f32), L, interpret, reverse=True
    )
    # dn_k likewise, a vector recursion in XLA.
    qd = jnp.einsum("bcl,bcld->bcd", e * scale * dden, qc)

    def back_n(dn, xs):
        d_k, qd_k = xs
        return d_k[:, None] * dn + qd_k, dn

    dn0, gns = jax.lax.scan(
        back_n, dn_last.astype(f32), (decay.T, jnp.moveaxis(qd, 1, 0)), reverse=True
    )
    gns = jnp.moveaxis(gns, 0, 1)  # (BH, NC, DQp): dn_k

    # dq, dk, dv through (2) and (4).
    dA = jnp.einsum("bcte,bcse->bcts", dnum, vc) + dden[..., None]  # dnum_t . v_s + dden_t
    dS = dA * P
    dv = jnp.einsum("bcts,bcte->bcse", A, dnum)
    dv += w[..., None] * jnp.einsum("bcsd,bcde->bcse", kc, G)
    dq_inter = (
        jnp.einsum("bcte,bcde->bctd", dnum, C_starts) + dden[..., None] * n_starts[:, :, None, :]
    )
    dq = scale * (jnp.einsum("bcts,bcsd->bctd", dS, kc) + e[..., None] * dq_inter)
    dk_rec = w[..., None] * (jnp.einsum("bcse,bcde->bcsd", vc, G) + gns[:, :, None, :])
    dk = scale * jnp.einsum("bcts,bctd->bcsd", dS, qc) + dk_rec
    dlw = jnp.sum(kc * dk_rec, axis=-1)  # dL/dlog w_s
    ddecay = jnp.sum(G * C_starts, axis=(-2, -1)) + jnp.sum(gns * n_starts, axis=-1)

    # The log-space gate gradients of (3)-(4); m_t passes its cotangent to the branch of the
    # max it took (ties split evenly, as autodiff of jnp.maximum / jnp.max does).
    de = scale * (jnp.sum(qC * dnum, axis=-1) + dden * qn)  # dL/de_t
    R = dA * A  # dL/dlog D through P
    dm = dm_norm - R.sum(-1) - de * e
    w_l = _tie_weight(x["l"], x["row_max"])
    is_max = jnp.logical_and(mask, x["i_b"][..., None, :] == x["cm"][..., :, None]).astype(f32)
    to_max = (1.0 - w_l) * dm / is_max.sum(-1)
    dlog_d = R + is_max * to_max[..., None]
    dl = de * e + w_l * dm
    # log D_ts = b_t - b_s + i_s (3); l_t = b_t + m_{k-1} (3)-(4).
    db = dlog_d.sum(-1) - dlog_d.sum(-2) + dl
    di = dlog_d.sum(-2)
    # (1)-(2) backwards over chunks. With T_k = dL/dm_k (total), the cotangent reaching the
    # max in (1) is T_k - dlog decay_k - sum_j dlog w_j; it goes to g_k + m_{k-1} or argmax a.
    dlog_decay = ddecay * decay
    a, g = x["a"], x["g"]
    a_max = a.max(-1)
    w_g = _tie_weight(g + x["m_prev"], a_max)
    base = dlog_decay + w_g * (-dlog_decay - dlw.sum(-1))  # d(g + m_{k-1}) without T_k

    def chunk_back(t_k, xs):
        base_k, wg_k, dmo_k = xs
        return dmo_k + t_k * wg_k + base_k, t_k

    dm0, t_all = jax.lax.scan(
        chunk_back, dm_last[:, 0].astype(f32), (base.T, w_g.T, dl.sum(-1).T), reverse=True
    )
    t_all = t_all.T  # (BH, NC): T_k
    to_max_a = (1.0 - w_g) * (t_all - dlog_decay - dlw.sum(-1))
    is_max_a = (a == a_max[..., None]).astype(f32)
    da = dlw + is_max_a * (to_max_a / is_max_a.sum(-1))[..., None]  # dL/da_j
    dg = da.sum(-1) + t_all * w_g + base  # a_j and the g_k + m_{k-1} branch
    di = di + da
    db = (db - da).at[..., -1].add(dg)

    dstate0 = tuple(d.astype(s.dtype) for d, s in zip((dC0, dn0, dm0[:, None]), s0, strict=True))
    return (
        dq.reshape(BH, Sp, DQp).astype(qp.dtype),
        dk.reshape(BH, Sp, DQp).astype(kp.dtype),
        dv.reshape(BH, Sp, DVp).astype(vp.dtype),
        di.reshape(BH, Sp),
        db.reshape(BH, Sp),
        dstate0,
    )


_core.defvjp(_core_fwd, _core_bwd)


def _padded_call(q, k, v, i, f, state0, L, eps, interpret):
    """Padding (differentiable: autodiff carries the gradients of i, f through it) around
    the custom_vjp core. Returns (h (B, NH, S, DHV) in v's dtype, final (C, n, m) fp32)."""
    B, NH, S, DQ = q.shape
    DV = v.shape[-1]
    f32 = jnp.float32
    BH, NC = B * NH, -(-S // L)
    Sp, DQp, DVp = NC * L, pad_to(DQ, TILE), pad_to(DV, TILE)
    z, ps, pq, pv = (0, 0), (0, Sp - S), (0, DQp - DQ), (0, DVp - DV)
    qp = jnp.pad(q, (z, z, ps, pq)).reshape(BH, Sp, DQp)
    kp = jnp.pad(k, (z, z, ps, pq)).reshape(BH, Sp, DQp)
    vp = jnp.pad(v, (z, z, ps, pv)).reshape(BH, Sp, DVp)
    # Padded steps keep the state: log f = 0, i = PAD_I (the reference pads the same way).
    valid = jnp.arange(Sp) < S
    logf = jnp.where(valid, jax.nn.log_sigmoid(jnp.pad(f.astype(f32), (z, z, ps))), 0.0)
    ip = jnp.where(valid, jnp.pad(i.astype(f32), (z, z, ps)), PAD_I).reshape(BH, Sp)
    b = jnp.cumsum(logf.reshape(BH, NC, L), axis=-1).reshape(BH, Sp)  # within-chunk cumsum
    C0, n0, m0 = (s.astype(f32) for s in state0)
    s0 = (
        jnp.pad(C0, (z, z, pq, pv)).reshape(BH, DQp, DVp),
        jnp.pad(n0, (z, z, pq)).reshape(BH, DQp),
        m0.reshape(BH, 1),
    )
    h, (C, n, m) = _core(qp, kp, vp, ip, b, s0, L, DQ**-0.5, eps, interpret)
    h = h.reshape(B, NH, Sp, DVp)[:, :, :S, :DV]
    last = (
        C.reshape(B, NH, DQp, DVp)[..., :DQ, :DV],
        n.reshape(B, NH, DQp)[..., :DQ],
        m.reshape(B, NH),
    )
    return h, last


def mlstm_chunkwise_mosaic(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    i: jax.Array,
    f: jax.Array,
    state0: tuple[jax.Array, jax.Array, jax.Array],
    *,
    chunk_size: int,
    eps: float = 1e-6,
    interpret: bool = False,
):
    """The chunkwise mLSTM with the Mosaic GPU kernels; differentiable (custom_vjp: kernel S
    recomputes the states and, reversed, gives their cotangents; the rest of the backward
    is XLA, see the module docstring).

    Inputs are checked by ``pk.mlstm_chunkwise``, which also casts the state to float32.

    Args:
      q, k: (B, NH, S, DHQK); v: (B, NH, S, DHV); bf16 or fp16 (fp32 in interpret mode only),
        one dtype. DHQK and DHV are padded to multiples of 64.
      i, f: (B, NH, S) gate pre-activations (used in float32).
      state0: (C (B, NH, DHQK, DHV), n (B, NH, DHQK), m (B, NH)) float32.
      chunk_size: L, 64 or 128 (a multiple of the 64-row wgmma tile; 128 for DHQK <= 128).
      eps: normaliser epsilon.
      interpret: run the kernels in the Mosaic GPU interpreter (CPU testing).

    Returns:
      h (B, NH, S, DHV) in v's dtype, and the final (C, n, m) float32.

    Raises:
      RuntimeError: JAX older than 0.11.2 (see ``pallas_kernels.mosaic.jax_reason``).
      ValueError: an unsupported chunk size or dtype (``pallas_kernels.mosaic.supports``).
    """
    mosaic.plgpu()
    L = chunk_size
    reason = mosaic.supports(
        "mlstm_chunkwise",
        interpret=interpret,
        dtype=q.dtype,
        chunk_size=L,
        head_dim_qk=q.shape[-1],
    )
    if reason is not None:
        raise ValueError(reason)
    return _padded_call(q, k, v, i, f, tuple(state0), L, eps, interpret)

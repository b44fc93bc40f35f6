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
two Mosaic kernels:

  kernel S ``mlstm_mosaic_chunk_states``, grid (B*NH, DHQK/64, DHV/64): one CTA carries a
    64 x 64 fp32 tile of C in wgmma registers over the chunks (``plgpu.emit_pipeline``,
    two stages: the TMA of chunk k+1's k, v and weights overlaps chunk k's wgmma) and
    writes the tile of every chunk-start C_{k-1}; C_k = decay_k C_{k-1} + k^T (w * v) with
    k^T read transposed from swizzled SMEM and w * v staged in SMEM (w_j = e^{a_j - m_k}).
  kernel O ``mlstm_mosaic_chunk_outputs``, grid (B*NH, chunks, DHV/64): q, k (L, DHQK), a
    (L, 64) tile of v and the (DHQK, 64) tile of C_{k-1} arrive by TMA; q k^T (wgmma, fp32
    accumulator), the gate matrix e^{(b_t - m_t) + (i_s - b_s)} from a row and a column
    vector, the causal mask from iotas, then A v (A staged in SMEM as the wgmma A operand)
    and q C_{k-1} (wgmma) give num; den is a row sum of A plus the XLA term; h = num / N is
    stored by TMA. Each DHV tile recomputes q k^T (DHV/64 times per chunk): the price of
    one CTA per 64 columns of h instead of an (L, DHV) accumulator (512 columns at 7B).

Tiles: 64 is the wgmma M of one warpgroup and, for 16-bit operands, the 128-byte swizzle
width, so head dims are padded to multiples of 64 (zeros leave q.k, k v^T, q.C unchanged)
and L must be a multiple of 64 (64 or 128: the (L, L) fp32 score accumulator is 32 or 128
registers a thread). SMEM of kernel O at DHQK 256, L 64, bf16: q, k 32 KB each, v, h and A
8 KB each, the C tile 32 KB (~121 KB of the 227 KB); at L 128 the Mosaic lowering counts
234,536 B at DHQK 256 (over the limit: L 128 is accepted for DHQK <= 128 only). Kernel S:
two stages of (L, 64) k and v tiles plus the staged w * v and the output tile, under 64 KB.
DHV up to 512 is covered by the grid's DHV tiles (the state never has to fit on chip whole).

Numerics: matmul operands in the input dtype (bf16/fp16) with fp32 accumulation; C_{k-1} is
cast to it for q C_{k-1} as in the Triton kernels; gates, stabilisers and states are fp32.
fp32 inputs run only in the interpreter (a check of the kernels' math at fp32): wgmma
would multiply fp32 at TF32 precision on a GPU, so compiled fp32 raises. (float64 does not
run: the Mosaic GPU interpreter's callbacks return fp32 accumulators.)

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
from jax.experimental import pallas as pl

from pallas_kernels import mosaic
from pallas_kernels.mosaic import TILE, pad_to

# Input gate of padded steps: e^{i - m} underflows to exactly 0, like the reference's -inf.
PAD_I = -1e30


def _transforms(plgpu, dtype, width: int):
    """TMA tiling + swizzle of a row-major (rows, width) SMEM tile: 8-row tiles of one
    swizzle span, the widest swizzle the tile's row allows (128 B for 64 bf16)."""
    swizzle = plgpu.find_swizzle(width * jnp.dtype(dtype).itemsize * 8)
    span = swizzle // jnp.dtype(dtype).itemsize
    return (plgpu.TilingTransform((8, span)), plgpu.SwizzleTransform(swizzle))


def _interpret_params(plgpu, interpret: bool):
    # The interpreter simulates SMEM, barriers and TMA; race detection checks every
    # SMEM access of the simulated warpgroups against the pending async copies.
    return plgpu.InterpretGPUParams(detect_races=True) if interpret else None


def chunk_states(k, v, w, decay, C0, L, interpret, reverse=False):
    """Kernel S: S_k = decay_k S_{k-1} + k_k^T (w_k * v_k) over all chunks: eq. (2) for C
    (forward), or with ``reverse`` the backward's chunk-end state cotangents
    G_{k-1} = decay_k G_k + q_k^T (s e / N * dh)_k (chunks from last to first).

    Args:
      k: (BH, Sp, DQp), v: (BH, Sp, DVp), one matmul dtype; w (BH, Sp) fp32 the weight of
        each step (e^{a_j - m_k} in the forward); decay (BH, NC) fp32
        e^{g_k + m_{k-1} - m_k}; C0 (BH, DQp, DVp) fp32 the carry's start.
    Returns:
      the carry before each chunk (BH, NC, DQp, DVp) fp32 (chunk-start C; reversed: G_k,
      the cotangent of chunk k's end state) and the last carry (BH, DQp, DVp) fp32.
    """
    plgpu = mosaic.plgpu()
    BH, Sp, DQp = k.shape
    DVp = v.shape[-1]
    NC, T, mm, f32 = Sp // L, TILE, k.dtype, C0.dtype
    tr = _transforms(plgpu, mm, T)
    # One decay per state row of the tile: a (T,) row vector per chunk, so that no scalar
    # has to be read from SMEM (the decay is broadcast in the row layout of the tile).
    decay_rows = jnp.broadcast_to(decay[..., None], (BH, NC, T)).reshape(BH, NC * T)

    def order(j):  # pipeline step -> chunk
        return NC - 1 - j if reverse else j

    def kernel(k_ref, v_ref, w_ref, d_ref, c0_ref, cs_ref, cl_ref, wv_smem, c_smem, bar):
        bh, a, c = (jax.lax.axis_index(n) for n in ("bh", "tq", "tv"))
        tile = (pl.ds(a * T, T), pl.ds(c * T, T))
        plgpu.copy_gmem_to_smem(c0_ref.at[(bh, *tile)], c_smem, bar.at[0])
        plgpu.barrier_wait(bar.at[0])
        init = plgpu.load(c_smem, layout=plgpu.Layout.WGMMA)

        def body(idx, k_smem, v_smem, w_smem, d_smem, C):
            chunk = order(idx[0])
            # The chunk-start state goes out by TMA; the previous store must have read
            # c_smem before it is overwritten.
            plgpu.wait_smem_to_gmem(0)
            c_smem[...] = C
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(c_smem, cs_ref.at[(bh, chunk, *tile)])
            # Every plain read of this step's SMEM slots comes before the fence below: the
            # pipeline refills the slots by TMA right after the body returns.
            w = plgpu.load(w_smem, layout=plgpu.Layout.WGMMA.reduce(1))
            decay_k = plgpu.load(d_smem, layout=plgpu.Layout.WGMMA.reduce(1))
            vv = v_smem[...].astype(f32) * jax.lax.broadcast_in_dim(w, (L, T), [0])
            wv_smem[...] = vv.astype(mm)
            plgpu.commit_smem()  # the wgmma reads wv_smem through the async proxy

            def update(acc):
                plgpu.wgmma(acc, k_smem.T, wv_smem)  # k^T (w v): (T, L) @ (L, T)
                return acc[...]

            new = pl.run_scoped(update, plgpu.ACC((T, T), f32))
            return jax.lax.broadcast_in_dim(decay_k, (T, T), [0]) * C + new

        pipe = plgpu.emit_pipeline(
            body,
            grid=(NC,),
            in_specs=[
                plgpu.BlockSpec((L, T), lambda j: (order(j), a), transforms=tr),
                plgpu.BlockSpec((L, T), lambda j: (order(j), c), transforms=tr),
                plgpu.BlockSpec((L,), lambda j: (order(j),)),
                plgpu.BlockSpec((T,), lambda j: (order(j),)),
            ],
            max_concurrent_steps=2,
            init_carry=init,
        )
        C = pipe(k_ref.at[bh], v_ref.at[bh], w_ref.at[bh], d_ref.at[bh])
        plgpu.wait_smem_to_gmem(0)
        c_smem[...] = C
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(c_smem, cl_ref.at[(bh, *tile)])
        plgpu.wait_smem_to_gmem(0)

    run = plgpu.kernel(
        kernel,
        out_type=[
            jax.ShapeDtypeStruct((BH, NC, DQp, DVp), f32),
            jax.ShapeDtypeStruct((BH, DQp, DVp), f32),
        ],
        grid=(BH, DQp // T, DVp // T),
        grid_names=("bh", "tq", "tv"),
        scratch_types=[
            plgpu.SMEM((L, T), mm, transforms=tr),
            plgpu.SMEM((T, T), f32),
            plgpu.Barrier(num_barriers=1),
        ],
        compiler_params=plgpu.CompilerParams(),
        interpret=_interpret_params(plgpu, interpret),
        kernel_name="mlstm_mosaic_state_grads" if reverse else "mlstm_mosaic_chunk_states",
    )
    return run(k, v, w, decay_rows, C0)


def chunk_outputs(q, k, v, starts, vecs, L, scale, eps, interpret):
    """Kernel O: eqs. (3)-(5) for one chunk and DHV tile per CTA.

    Args:
      q, k: (BH, Sp, DQp), v: (BH, Sp, DVp) in the matmul dtype; starts: chunk-start C
        (BH, NC, DQp, DVp) in the matmul dtype; vecs (BH, 5, Sp) fp32, per step: b_t - m_t,
        i_t - b_t, e_t s, e_t s q_t . n_{k-1} and e^{-m_t}.
    Returns:
      h (BH, Sp, DVp) in v's dtype.
    """
    plgpu = mosaic.plgpu()
    BH, Sp, DQp = q.shape
    DVp = v.shape[-1]
    NC, T, mm, f32 = Sp // L, TILE, q.dtype, vecs.dtype
    tr_q, tr_v = _transforms(plgpu, mm, DQp), _transforms(plgpu, mm, T)
    row, col, wg = plgpu.Layout.WGMMA.reduce(1), plgpu.Layout.WGMMA.reduce(0), plgpu.Layout.WGMMA

    def kernel(
        q_ref, k_ref, v_ref, c_ref, vec_ref, h_ref, q_s, k_s, v_s, c_s, a_s, vec_s, h_s, bar
    ):
        bh, c, j = (jax.lax.axis_index(n) for n in ("bh", "chunk", "tv"))
        steps, cols = pl.ds(c * L, L), pl.ds(j * T, T)
        copies = (
            (q_ref.at[bh, steps], q_s),
            (k_ref.at[bh, steps], k_s),
            (v_ref.at[bh, steps, cols], v_s),
            (c_ref.at[bh, c, :, cols], c_s),
            (vec_ref.at[bh, :, steps], vec_s),
        )
        for n, (src, dst) in enumerate(copies):
            plgpu.copy_gmem_to_smem(src, dst, bar.at[n])
        for n in range(len(copies)):
            plgpu.barrier_wait(bar.at[n])

        def scores(acc):
            plgpu.wgmma(acc, q_s, k_s.T)  # q k^T: (L, DQp) @ (DQp, L)
            return acc[...]

        s_qk = pl.run_scoped(scores, plgpu.ACC((L, L), f32))
        b_m = plgpu.load(vec_s.at[0], layout=row)
        i_b = plgpu.load(vec_s.at[1], layout=col)
        es, es_qn, floor = (plgpu.load(vec_s.at[r], layout=row) for r in (2, 3, 4))
        t_idx = plgpu.broadcasted_iota(jnp.int32, (L, L), 0, layout=wg)
        s_idx = plgpu.broadcasted_iota(jnp.int32, (L, L), 1, layout=wg)
        # (3)-(4): log D_ts - m_t = (b_t - m_t) + (i_s - b_s), masked to s <= t.
        log_p = jax.lax.broadcast_in_dim(b_m, (L, L), [0]) + jax.lax.broadcast_in_dim(
            i_b, (L, L), [1]
        )
        A = jnp.where(s_idx <= t_idx, (s_qk * scale) * jnp.exp(log_p), 0.0)
        den = A.sum(axis=1) + es_qn  # (4)
        norm = jnp.maximum(jnp.abs(den), floor) + eps  # (5)

        # A goes to SMEM for the wgmma (the interpreter takes no register operand; on the
        # GPU the store is 8 KB at L 64 against the 2 L^2 T flops it feeds).
        a_s[...] = A.astype(mm)
        plgpu.commit_smem()

        def numerator(accs):
            acc_av, acc_qc = accs
            plgpu.wgmma(acc_av, a_s, v_s)  # A v: (L, L) @ (L, T)
            plgpu.wgmma(acc_qc, q_s, c_s)  # q C_{k-1}: (L, DQp) @ (DQp, T)
            return acc_av[...], acc_qc[...]

        av, qc = pl.run_scoped(numerator, (plgpu.ACC((L, T), f32), plgpu.ACC((L, T), f32)))
        num = av + jax.lax.broadcast_in_dim(es, (L, T), [0]) * qc  # (4)
        h_s[...] = (num / jax.lax.broadcast_in_dim(norm, (L, T), [0])).astype(h_s.dtype)
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(h_s, h_ref.at[bh, steps, cols])
        plgpu.wait_smem_to_gmem(0)

    run = plgpu.kernel(
        kernel,
        out_type=jax.ShapeDtypeStruct((BH, Sp, DVp), v.dtype),
        grid=(BH, NC, DVp // T),
        grid_names=("bh", "chunk", "tv"),
        scratch_types=[
            plgpu.SMEM((L, DQp), mm, transforms=tr_q),
            plgpu.SMEM((L, DQp), mm, transforms=tr_q),
            plgpu.SMEM((L, T), mm, transforms=tr_v),
            plgpu.SMEM((DQp, T), mm, transforms=tr_v),
            plgpu.SMEM((L, L), mm, transforms=_transforms(plgpu, mm, L)),
            plgpu.SMEM((5, L), f32),
            plgpu.SMEM((L, T), v.dtype, transforms=_transforms(plgpu, v.dtype, T)),
            plgpu.Barrier(num_barriers=5),
        ],
        compiler_params=plgpu.CompilerParams(),
        interpret=_interpret_params(plgpu, interpret),
        kernel_name="mlstm_mosaic_chunk_outputs",
    )
    return run(q, k, v, starts, vecs)


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

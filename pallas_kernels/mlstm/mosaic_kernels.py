"""The two Mosaic GPU kernels of the chunkwise mLSTM (``mosaic_chunkwise.py`` holds the op
they serve: its equations (1)-(5), the gates and stabilisers in XLA, the ``custom_vjp``, the
padding). Each is a ``plgpu.kernel`` call, compiled on sm_90+ or run in the Mosaic GPU
interpreter on a CPU (``interpret=True``).

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

Shape legend: BH = B*NH, Sp the padded sequence, L chunk, NC chunks, DQp/DVp the padded
head dims, T = 64 the tile.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels import mosaic
from pallas_kernels.mosaic import TILE

__all__ = ["chunk_outputs", "chunk_states"]


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

"""The chunkwise mLSTM as Pallas GPU kernels (Triton lowering): forward and backward.

Implements the op specified by ``pallas_kernels.mlstm.reference.chunkwise`` (``pk.mlstm_chunkwise``
with ``impl="pallas"``; the table in ``pallas_kernels.dispatch`` names it). This module holds
the design, the custom_vjp core and the public entry; the kernels are in ``triton_forward.py``
(A, B) and ``triton_backward.py`` (C, D), their tiles in ``block_sizes.py``.

Equations (the reference's chunkwise form; q scaled by s = DHQK^-1/2, chunk length L, chunk k
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
  kernel D ``mlstm_chunk_grads``, grid (B*NH, chunks), DHQK and DHV in tiles inside: with
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

import functools

import jax
import jax.numpy as jnp

from pallas_kernels.mlstm.block_sizes import DEFAULT_BLOCK_SIZES, BlockSizes
from pallas_kernels.mlstm.triton_backward import chunkwise_bwd
from pallas_kernels.mlstm.triton_forward import chunk_outputs, chunk_states
from pallas_kernels.triton import kernel_state_dtype, pad_dim, supports

# Input gate of padded steps: e^{i - m} underflows to exactly 0, like the reference's -inf.
PAD_I = -1e30


def _forward(q, k, v, i, b, state0, L, scale, eps, bs, interpret):
    starts, last = chunk_states(k, v, i, b, state0, L, bs, interpret)
    h, m_t, den = chunk_outputs(q, k, v, i, b, starts, L, scale, eps, bs, interpret)
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


_mlstm_core.defvjp(_mlstm_core_fwd, chunkwise_bwd)


def mlstm_chunkwise_pallas(
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
    block_sizes: BlockSizes | None = None,
):
    """The chunkwise mLSTM with the Pallas kernels; differentiable (custom_vjp).

    The "pallas" entry of ``mlstm_chunkwise`` in ``pallas_kernels.dispatch``; inputs are
    checked by ``pk.mlstm_chunkwise``, which also casts the state to float32.

    Args:
      q, k: (B, NH, S, DHQK); v: (B, NH, S, DHV); bf16, fp16 or fp32, one dtype.
      i, f: (B, NH, S) gate pre-activations (any float dtype; used in float32).
      state0: (C (B, NH, DHQK, DHV), n (B, NH, DHQK), m (B, NH)) float32.
      chunk_size: L, a power of two >= 16 (the minimum size of a Triton dot operand).
      eps: normaliser epsilon.
      interpret: run the kernels in Pallas interpret mode (CPU testing).
      block_sizes: tiling and launch parameters; ``DEFAULT_BLOCK_SIZES`` if None.

    Returns:
      h (B, NH, S, DHV) in v's dtype, and the final (C, n, m) float32.
    """
    bs = DEFAULT_BLOCK_SIZES if block_sizes is None else block_sizes
    bs.validate()
    acc = kernel_state_dtype("mLSTM", q.dtype, interpret)
    L = chunk_size
    reason = supports("mlstm_chunkwise", chunk_size=L)
    if reason is not None:
        raise ValueError(reason)
    B, NH, S, DQ = q.shape
    DV = v.shape[-1]
    BH, NC = B * NH, -(-S // L)
    Sp, DQp, DVp = NC * L, pad_dim(DQ), pad_dim(DV)
    ps, pq, pv = (0, Sp - S), (0, DQp - DQ), (0, DVp - DV)
    z = (0, 0)
    qp = jnp.pad(q, (z, z, ps, pq)).reshape(BH, Sp, DQp)
    kp = jnp.pad(k, (z, z, ps, pq)).reshape(BH, Sp, DQp)
    vp = jnp.pad(v, (z, z, ps, pv)).reshape(BH, Sp, DVp)
    # Padded steps keep the state: log f = 0, i = PAD_I (the reference pads the same way).
    valid = jnp.arange(Sp) < S
    logf = jnp.where(valid, jax.nn.log_sigmoid(jnp.pad(f.astype(acc), (z, z, ps))), 0.0)
    ip = jnp.where(valid, jnp.pad(i.astype(acc), (z, z, ps)), PAD_I).reshape(BH, Sp)
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

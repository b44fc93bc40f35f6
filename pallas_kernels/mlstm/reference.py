"""mLSTM cell in its three equivalent forms (pure JAX): the specification for the kernels.

These functions are the XLA implementations behind ``pk.mlstm_*`` (``pallas_kernels.mlstm.api``
checks the inputs and dispatches); the Pallas kernels are tested against them.

Conventions (those of the GPU kernels): ``q`` is scaled by ``DHQK**-0.5`` inside the op,
gates are pre-activations (``log i = i``, ``log f = log_sigmoid(f)``) and every piece of
gate, stabiliser and state arithmetic runs in float32 (float64 for float64 inputs).
The state ``(C, n, m)`` therefore holds ``sum k v^T`` with *unscaled* keys; the paper
cell scales k instead, which gives identical outputs and states larger by ``sqrt(DHQK)``.

Shape legend: B batch, NH heads, S sequence, L chunk length, NC number of chunks,
DHQK query/key head dim, DHV value head dim.
  q, k: (B, NH, S, DHQK)   v: (B, NH, S, DHV)   i, f: (B, NH, S)
  C: (B, NH, DHQK, DHV)    n: (B, NH, DHQK)     m: (B, NH)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class MLSTMState(NamedTuple):
    """The mLSTM cell state: matrix memory C (B, NH, DHQK, DHV), normaliser n (B, NH, DHQK)
    and stabiliser m (B, NH), in float32 (float64 for float64 inputs)."""

    C: jax.Array
    n: jax.Array
    m: jax.Array


def zero_state(B: int, NH: int, DHQK: int, DHV: int, dtype=jnp.float32) -> MLSTMState:
    """The reference's initial state: C = 0, n = 0 and **m = 0** (not -inf)."""
    return MLSTMState(
        jnp.zeros((B, NH, DHQK, DHV), dtype),
        jnp.zeros((B, NH, DHQK), dtype),
        jnp.zeros((B, NH), dtype),
    )


def parallel(q, k, v, i, f, *, eps: float) -> jax.Array:
    """Stabilised parallel (quadratic) form, as the paper's ``parallel_stabilized_simple``.

    ``log D_ts = sum_{r=s+1..t} log f_r + i_s`` for s <= t; each row is stabilised by its
    own maximum ``m_t`` and the normaliser is ``max(|sum_s C_ts|, exp(-m_t)) + eps``.
    Returns h (B, NH, S, DHV) in the state dtype.
    """
    acc = jnp.promote_types(q.dtype, jnp.float32)
    S, DHQK = q.shape[-2], q.shape[-1]
    qf, kf, vf = (x.astype(acc) for x in (q, k, v))
    logf = jax.nn.log_sigmoid(f.astype(acc))
    b = jnp.cumsum(logf, axis=-1)  # b_t = sum_{r<=t} log f_r
    log_d = b[..., :, None] - b[..., None, :] + i.astype(acc)[..., None, :]
    causal = jnp.tril(jnp.ones((S, S), dtype=bool))
    log_d = jnp.where(causal, log_d, -jnp.inf)
    m = jnp.max(log_d, axis=-1, keepdims=True)  # (B, NH, S, 1), finite: diagonal is unmasked
    scores = jnp.einsum("bhtd,bhsd->bhts", qf * DHQK**-0.5, kf) * jnp.exp(log_d - m)
    normaliser = jnp.maximum(jnp.abs(scores.sum(-1, keepdims=True)), jnp.exp(-m))
    return jnp.einsum("bhts,bhsd->bhtd", scores / (normaliser + eps), vf)


def recurrent_step(q, k, v, i, f, state: MLSTMState, eps: float) -> tuple[jax.Array, MLSTMState]:
    """One recurrent step, all in the state dtype. q, k: (B, NH, DHQK), i, f: (B, NH).

    ``m' = max(log f + m, i)``, ``C' = e^{log f + m - m'} C + e^{i - m'} k v^T``,
    ``n'`` likewise, ``h = (q^T C') / (max(|q^T n'|, e^{-m'}) + eps)`` with q scaled.
    """
    C, n, m = state
    logf = jax.nn.log_sigmoid(f)
    m_new = jnp.maximum(logf + m, i)
    fa = jnp.exp(logf + m - m_new)
    ia = jnp.exp(i - m_new)
    C_new = fa[..., None, None] * C + ia[..., None, None] * (k[..., :, None] * v[..., None, :])
    n_new = fa[..., None] * n + ia[..., None] * k
    qs = q * q.shape[-1] ** -0.5
    num = jnp.einsum("bhd,bhde->bhe", qs, C_new)
    den = jnp.maximum(jnp.abs(jnp.sum(qs * n_new, -1)), jnp.exp(-m_new)) + eps
    return num / den[..., None], MLSTMState(C_new, n_new, m_new)


def step(q, k, v, i, f, state: MLSTMState, *, eps: float) -> tuple[jax.Array, MLSTMState]:
    """``recurrent_step`` on inputs of any float dtype (cast to the state dtype)."""
    acc = state.C.dtype
    return recurrent_step(*(x.astype(acc) for x in (q, k, v, i, f)), state, eps)


def recurrent(q, k, v, i, f, state0: MLSTMState, *, eps: float) -> tuple[jax.Array, MLSTMState]:
    """Recurrent form: a ``lax.scan`` of ``recurrent_step`` over the sequence.

    Returns (h (B, NH, S, DHV) in the state dtype, final state).
    """
    acc = state0.C.dtype
    seq_major = [jnp.moveaxis(x.astype(acc), 2, 0) for x in (q, k, v, i, f)]

    def body(state, xs):
        h, state = recurrent_step(*xs, state, eps)
        return state, h

    last, h = jax.lax.scan(body, state0, seq_major)
    return jnp.moveaxis(h, 0, 2), last


def chunkwise(
    q, k, v, i, f, state0: MLSTMState, *, chunk_size: int, eps: float
) -> tuple[jax.Array, MLSTMState]:
    """Chunkwise form in two phases: a scan over chunks for the chunk-start states, then
    all chunks' outputs at once (intra-chunk attention-like term + inter-chunk term).

    Any S: the sequence is padded to a multiple of ``chunk_size`` with steps that keep the
    state (log f = 0, i = -inf) and the padding is cut from the output.
    Returns (h (B, NH, S, DHV) in the state dtype, final state).
    """
    B, NH, S, DHQK = q.shape
    DHV = v.shape[-1]
    acc = state0.C.dtype
    L = chunk_size
    NC = -(-S // L)
    pad = NC * L - S
    valid = jnp.arange(NC * L) < S
    qf, kf, vf = (jnp.pad(x.astype(acc), ((0, 0), (0, 0), (0, pad), (0, 0))) for x in (q, k, v))
    # Padding keeps the state exactly: log f = 0 (forget nothing), i = -inf (add nothing).
    logf = jnp.where(
        valid, jax.nn.log_sigmoid(jnp.pad(f.astype(acc), ((0, 0), (0, 0), (0, pad)))), 0.0
    )
    ig = jnp.where(valid, jnp.pad(i.astype(acc), ((0, 0), (0, 0), (0, pad))), -jnp.inf)

    qc = qf.reshape(B, NH, NC, L, DHQK) * DHQK**-0.5
    kc = kf.reshape(B, NH, NC, L, DHQK)
    vc = vf.reshape(B, NH, NC, L, DHV)
    igc = ig.reshape(B, NH, NC, L)
    b = jnp.cumsum(logf.reshape(B, NH, NC, L), axis=-1)  # within-chunk cumsum of log f
    g = b[..., -1]  # (B, NH, NC): total log decay of each chunk
    a = g[..., None] - b + igc  # (B, NH, NC, L): log weight of step j in the chunk-end state

    # Phase 1: C_k = e^{g_k + m_{k-1} - m_k} C_{k-1} + sum_j e^{a_kj - m_k} k_j v_j^T.
    def chunk_state(carry, xs):
        C, n, m = carry
        k_j, v_j, a_j, g_j = xs
        m_new = jnp.maximum(g_j + m, jnp.max(a_j, axis=-1))
        decay = jnp.exp(g_j + m - m_new)
        w = jnp.exp(a_j - m_new[..., None])  # (B, NH, L)
        C_new = decay[..., None, None] * C + jnp.einsum("bhl,bhld,bhle->bhde", w, k_j, v_j)
        n_new = decay[..., None] * n + jnp.einsum("bhl,bhld->bhd", w, k_j)
        return MLSTMState(C_new, n_new, m_new), (C, n, m)

    chunk_major = [jnp.moveaxis(x, 2, 0) for x in (kc, vc, a, g)]
    last, starts = jax.lax.scan(chunk_state, MLSTMState(*state0), chunk_major)
    C0, n0, m0 = (jnp.moveaxis(x, 0, 2) for x in starts)  # (B, NH, NC, ...)

    # Phase 2: per position t in chunk k, stabiliser m_t = max(b_t + m_{k-1}, max_s log D_ts).
    log_d = b[..., :, None] - b[..., None, :] + igc[..., None, :]
    causal = jnp.tril(jnp.ones((L, L), dtype=bool))
    log_d = jnp.where(causal, log_d, -jnp.inf)
    log_inter = b + m0[..., None]  # (B, NH, NC, L)
    m_t = jnp.maximum(log_inter, jnp.max(log_d, axis=-1))
    scores = jnp.einsum("bhctd,bhcsd->bhcts", qc, kc) * jnp.exp(log_d - m_t[..., None])
    inter = jnp.exp(log_inter - m_t)
    num = jnp.einsum("bhcts,bhcse->bhcte", scores, vc) + inter[..., None] * jnp.einsum(
        "bhctd,bhcde->bhcte", qc, C0
    )
    den = scores.sum(-1) + inter * jnp.einsum("bhctd,bhcd->bhct", qc, n0)
    h = num / (jnp.maximum(jnp.abs(den), jnp.exp(-m_t)) + eps)[..., None]
    return h.reshape(B, NH, NC * L, DHV)[:, :, :S], last

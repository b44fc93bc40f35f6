"""mLSTM cell in its three equivalent forms (pure JAX): the specification for the kernels.

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

import jax
import jax.numpy as jnp

from pallas_kernels._checks import (
    check_float,
    check_rank,
    check_same_dtype,
    check_shape,
    state_dtype,
)
from pallas_kernels.dispatch import resolve_impl

MLSTMState = tuple[jax.Array, jax.Array, jax.Array]


def _check_qkvif(q, k, v, i, f, *, seq_axis: bool = True) -> None:
    lay = "(B, NH, S, D)" if seq_axis else "(B, NH, D)"
    rank = 4 if seq_axis else 3
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_rank(name, x, rank, lay)
        check_float(name, x)
    check_shape("k", k, q.shape, lay.replace("D)", "DHQK) like q"))
    check_shape("v", v, q.shape[:-1] + v.shape[-1:], lay.replace("D)", "DHV) with q's B, NH, S"))
    check_same_dtype(("q", "k", "v"), (q, k, v))
    gate_shape = q.shape[:-1]
    gate_lay = "(B, NH, S)" if seq_axis else "(B, NH)"
    for name, x in (("i", i), ("f", f)):
        check_rank(name, x, rank - 1, gate_lay)
        check_float(name, x)
        check_shape(name, x, gate_shape, gate_lay)


def _check_state(state, q, v, name: str = "initial_state") -> None:
    if not (isinstance(state, (tuple, list)) and len(state) == 3):
        raise ValueError(f"`{name}` must be a tuple (C, n, m); got {type(state).__name__}.")
    B, NH, DHQK, DHV = q.shape[0], q.shape[1], q.shape[-1], v.shape[-1]
    check_shape(f"{name}[0] (C)", state[0], (B, NH, DHQK, DHV), "(B, NH, DHQK, DHV)")
    check_shape(f"{name}[1] (n)", state[1], (B, NH, DHQK), "(B, NH, DHQK)")
    check_shape(f"{name}[2] (m)", state[2], (B, NH), "(B, NH)")


def zero_state(B: int, NH: int, DHQK: int, DHV: int, dtype=jnp.float32) -> MLSTMState:
    """The reference's initial state: C = 0, n = 0 and **m = 0** (not -inf)."""
    return (
        jnp.zeros((B, NH, DHQK, DHV), dtype),
        jnp.zeros((B, NH, DHQK), dtype),
        jnp.zeros((B, NH), dtype),
    )


def _initial_state(initial_state, q, v):
    """(accumulation dtype, the state in it): zeros for None, else checked against q and v."""
    acc = state_dtype(q.dtype)
    if initial_state is None:
        B, NH, _, DHQK = q.shape
        return acc, zero_state(B, NH, DHQK, v.shape[-1], acc)
    _check_state(initial_state, q, v)
    return acc, tuple(s.astype(acc) for s in initial_state)


def mlstm_parallel(q, k, v, i, f, *, eps: float = 1e-6) -> jax.Array:
    """Stabilised parallel (quadratic) form, as the paper's ``parallel_stabilized_simple``.

    ``log D_ts = sum_{r=s+1..t} log f_r + i_s`` for s <= t; each row is stabilised by its
    own maximum ``m_t`` and the normaliser is ``max(|sum_s C_ts|, exp(-m_t)) + eps``.

    Args:
      q, k: (B, NH, S, DHQK). v: (B, NH, S, DHV). i, f: (B, NH, S) gate pre-activations.
      eps: added to the normaliser (outside the max), as in the reference.

    Returns:
      h: (B, NH, S, DHV) in the dtype of ``v``.
    """
    _check_qkvif(q, k, v, i, f)
    acc = state_dtype(q.dtype)
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
    h = jnp.einsum("bhts,bhsd->bhtd", scores / (normaliser + eps), vf)
    return h.astype(v.dtype)


def _step(q, k, v, i, f, state: MLSTMState, eps: float):
    """One recurrent step in the state dtype. q, k: (B, NH, DHQK), i, f: (B, NH)."""
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
    return num / den[..., None], (C_new, n_new, m_new)


def mlstm_step(
    q,
    k,
    v,
    i,
    f,
    state: MLSTMState,
    *,
    eps: float = 1e-6,
    impl: str = "auto",
    interpret: bool = False,
):
    """One recurrent step (decoding).

    ``m' = max(log f + m, i)``, ``C' = e^{log f + m - m'} C + e^{i - m'} k v^T``,
    ``n'`` likewise, ``h = (q^T C') / (max(|q^T n'|, e^{-m'}) + eps)`` with q scaled.

    Args:
      q, k: (B, NH, DHQK). v: (B, NH, DHV). i, f: (B, NH). state: (C, n, m) as in the
        module docstring (``zero_state`` for a fresh sequence).
      impl: "auto" | "xla" | "pallas" (see ``pallas_kernels.dispatch``).
      interpret: run a Pallas kernel in interpret mode (CPU testing).

    Returns:
      (h (B, NH, DHV) in v's dtype, new state in float32).
    """
    _check_qkvif(q, k, v, i, f, seq_axis=False)
    _check_state(state, q, v, name="state")
    if resolve_impl("mlstm_step", impl, interpret) == "pallas":
        from pallas_kernels.dispatch import PALLAS_OPS

        return PALLAS_OPS["mlstm_step"](q, k, v, i, f, state, eps, interpret)
    acc = state_dtype(q.dtype)
    args = (x.astype(acc) for x in (q, k, v, i, f))
    h, new = _step(*args, tuple(s.astype(acc) for s in state), eps)
    return h.astype(v.dtype), new


def mlstm_recurrent(
    q,
    k,
    v,
    i,
    f,
    *,
    initial_state: MLSTMState | None = None,
    return_last_state: bool = False,
    eps: float = 1e-6,
):
    """Recurrent form: a ``lax.scan`` of ``mlstm_step`` over the sequence.

    Args/Returns as ``mlstm_chunkwise``.
    """
    _check_qkvif(q, k, v, i, f)
    acc, state0 = _initial_state(initial_state, q, v)
    seq_major = [jnp.moveaxis(x.astype(acc), 2, 0) for x in (q, k, v, i, f)]

    def body(state, xs):
        h, state = _step(*xs, state, eps)
        return state, h

    last, h = jax.lax.scan(body, state0, seq_major)
    h = jnp.moveaxis(h, 0, 2).astype(v.dtype)
    return (h, last) if return_last_state else h


def _chunkwise_xla(q, k, v, i, f, chunk_size: int, state0: MLSTMState, eps: float):
    """Chunkwise form in two phases: a scan over chunks for the chunk-start states, then
    all chunks' outputs at once (intra-chunk attention-like term + inter-chunk term)."""
    B, NH, S, DHQK = q.shape
    DHV = v.shape[-1]
    acc = state0[0].dtype
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
        return (C_new, n_new, m_new), (C, n, m)

    chunk_major = [jnp.moveaxis(x, 2, 0) for x in (kc, vc, a, g)]
    last, starts = jax.lax.scan(chunk_state, state0, chunk_major)
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
    h = h.reshape(B, NH, NC * L, DHV)[:, :, :S]
    return h, last


def mlstm_chunkwise(
    q,
    k,
    v,
    i,
    f,
    *,
    chunk_size: int = 64,
    initial_state: MLSTMState | None = None,
    return_last_state: bool = False,
    impl: str = "auto",
    interpret: bool = False,
    eps: float = 1e-6,
):
    """Chunkwise-parallel form (linear in S): a ``lax.scan`` over chunks.

    Any S works: the sequence is padded to a multiple of ``chunk_size`` with steps that
    leave the state unchanged, and the padding is cut from the output.

    Args:
      q, k: (B, NH, S, DHQK). v: (B, NH, S, DHV). i, f: (B, NH, S) gate pre-activations.
      chunk_size: chunk length L >= 1.
      initial_state: optional (C, n, m); default zeros (m = 0, as the reference).
      return_last_state: also return the final (C, n, m) in float32.
      impl: "auto" | "xla" | "pallas" (see ``pallas_kernels.dispatch``).
      interpret: run a Pallas kernel in interpret mode (CPU testing).
      eps: normaliser epsilon.

    Returns:
      h (B, NH, S, DHV) in v's dtype, or ``(h, (C, n, m))``.
    """
    _check_qkvif(q, k, v, i, f)
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be an integer >= 1; got {chunk_size!r}.")
    _, state0 = _initial_state(initial_state, q, v)
    path = resolve_impl("mlstm_chunkwise", impl, interpret)
    if path == "pallas":  # pragma: no cover - kernels register themselves in PALLAS_OPS
        from pallas_kernels.dispatch import PALLAS_OPS

        h, last = PALLAS_OPS["mlstm_chunkwise"](q, k, v, i, f, chunk_size, state0, eps, interpret)
    else:
        h, last = _chunkwise_xla(q, k, v, i, f, chunk_size, state0, eps)
    h = h.astype(v.dtype)
    return (h, last) if return_last_state else h

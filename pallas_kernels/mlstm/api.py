"""The public mLSTM ops: input checks, then the implementation the dispatch selects.

``pk.mlstm_parallel``, ``pk.mlstm_chunkwise``, ``pk.mlstm_recurrent`` and ``pk.mlstm_step``;
the math is in ``pallas_kernels.mlstm.reference`` (read its docstring for the conventions).

Shape legend: B batch, NH heads, S sequence, DHQK query/key head dim, DHV value head dim.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels import dispatch
from pallas_kernels._checks import (
    check_float,
    check_rank,
    check_same_dtype,
    check_shape,
    state_dtype,
)
from pallas_kernels.mlstm.reference import MLSTMState, zero_state
from pallas_kernels.selfcheck import Probe


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
        raise ValueError(f"`{name}` must be an MLSTMState (C, n, m); got {type(state).__name__}.")
    B, NH, DHQK, DHV = q.shape[0], q.shape[1], q.shape[-1], v.shape[-1]
    check_shape(f"{name}.C", state[0], (B, NH, DHQK, DHV), "(B, NH, DHQK, DHV)")
    check_shape(f"{name}.n", state[1], (B, NH, DHQK), "(B, NH, DHQK)")
    check_shape(f"{name}.m", state[2], (B, NH), "(B, NH)")


def _initial_state(initial_state, q, v) -> MLSTMState:
    """The state in the accumulation dtype: zeros for None, else checked against q and v."""
    acc = state_dtype(q.dtype)
    if initial_state is None:
        B, NH, _, DHQK = q.shape
        return zero_state(B, NH, DHQK, v.shape[-1], acc)
    _check_state(initial_state, q, v)
    return MLSTMState(*(s.astype(acc) for s in initial_state))


def _random_inputs(B, S, DQ, DV, dtype, seed=0):
    """Small random q, k, v, i, f (forget gates mostly open) and a random state (n >= 0)."""
    ks = jax.random.split(jax.random.key(seed), 8)
    shape = (B, 1) if S is None else (B, 1, S)
    q, k = (jax.random.normal(kk, (*shape, DQ)).astype(dtype) for kk in ks[:2])
    v = jax.random.normal(ks[2], (*shape, DV)).astype(dtype)
    i = jax.random.normal(ks[3], shape)
    f = jax.random.normal(ks[4], shape) + 2.0
    state = MLSTMState(
        jax.random.normal(ks[5], (B, 1, DQ, DV)),
        jnp.abs(jax.random.normal(ks[6], (B, 1, DQ))),
        jax.random.normal(ks[7], (B, 1)),
    )
    return q, k, v, i, f, state


def _probe(q, v, dtype, chunk_size: int | None, eps: float) -> Probe:
    """The configuration of a chunkwise call (``chunk_size``) or a step (None), with a
    small input of it: one sequence and head, two chunks and a partial one."""
    DQ, DV, name = q.shape[-1], v.shape[-1], jnp.dtype(dtype).name
    key = (name, f"DHQK {DQ}", f"DHV {DV}", "default block sizes")
    kwargs = {"eps": eps}
    if chunk_size is not None:
        key += (f"chunk {chunk_size}",)
        kwargs["chunk_size"] = chunk_size
    S = None if chunk_size is None else 2 * chunk_size + 3
    return Probe(key, lambda: _random_inputs(1, S, DQ, DV, dtype), kwargs, name)


def mlstm_parallel(q, k, v, i, f, *, eps: float = 1e-6, impl: str = "auto") -> jax.Array:
    """Stabilised parallel (quadratic) form, as the paper's ``parallel_stabilized_simple``.

    Args:
      q, k: (B, NH, S, DHQK). v: (B, NH, S, DHV). i, f: (B, NH, S) gate pre-activations.
      eps: added to the normaliser (outside the max), as in the reference.
      impl: "auto" | "xla" (this form has no kernel: "pallas" and "mosaic" raise).

    Returns:
      h: (B, NH, S, DHV) in the dtype of ``v``.
    """
    _check_qkvif(q, k, v, i, f)
    fn = dispatch.select("mlstm_parallel", impl, interpret=False)
    return fn(q, k, v, i, f, eps=eps).astype(v.dtype)


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
) -> tuple[jax.Array, MLSTMState]:
    """One recurrent step (decoding); see ``reference.recurrent_step`` for the update.

    Args:
      q, k: (B, NH, DHQK). v: (B, NH, DHV). i, f: (B, NH). state: an ``MLSTMState``
        (``pk.mlstm_zero_state`` for a fresh sequence).
      impl: "auto" | "xla" | "pallas" (see ``pallas_kernels.dispatch``; no Mosaic kernel:
        "mosaic" raises).
      interpret: run a Pallas kernel in interpret mode (CPU testing).

    Returns:
      (h (B, NH, DHV) in v's dtype, the new state in float32).
    """
    _check_qkvif(q, k, v, i, f, seq_axis=False)
    _check_state(state, q, v, name="state")
    fn = dispatch.select("mlstm_step", impl, interpret, _probe(q, v, q.dtype, None, eps))
    acc = state_dtype(q.dtype)
    h, new = fn(q, k, v, i, f, MLSTMState(*(s.astype(acc) for s in state)), eps=eps)
    return h.astype(v.dtype), MLSTMState(*new)


def _finish(h, last, v, return_last_state: bool):
    h = h.astype(v.dtype)
    return (h, MLSTMState(*last)) if return_last_state else h


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
    impl: str = "auto",
):
    """Recurrent form: a ``lax.scan`` of the step over the sequence.

    Args/Returns as ``mlstm_chunkwise``; this form has no Pallas kernel (``impl="pallas"``
    raises).
    """
    _check_qkvif(q, k, v, i, f)
    state0 = _initial_state(initial_state, q, v)
    fn = dispatch.select("mlstm_recurrent", impl, interpret=False)
    h, last = fn(q, k, v, i, f, state0, eps=eps)
    return _finish(h, last, v, return_last_state)


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
      chunk_size: chunk length L >= 1 (the Pallas kernel needs a power of two >= 16, the
        Mosaic kernel 64 or 128).
      initial_state: optional ``MLSTMState``; default zeros (m = 0, as the reference).
      return_last_state: also return the final state in float32.
      impl: "auto" | "xla" | "pallas" (Triton) | "mosaic" (Mosaic GPU, sm_90+, JAX >= 0.11.2,
        bf16/fp16; see ``pallas_kernels.dispatch`` and ``pallas_kernels.mlstm.mosaic_chunkwise``).
      interpret: run a Pallas kernel in interpret mode (CPU testing).
      eps: normaliser epsilon.

    Returns:
      h (B, NH, S, DHV) in v's dtype, or ``(h, MLSTMState)``.
    """
    _check_qkvif(q, k, v, i, f)
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be an integer >= 1; got {chunk_size!r}.")
    state0 = _initial_state(initial_state, q, v)
    probe = _probe(q, v, q.dtype, chunk_size, eps)
    fn = dispatch.select("mlstm_chunkwise", impl, interpret, probe)
    h, last = fn(q, k, v, i, f, state0, chunk_size=chunk_size, eps=eps)
    return _finish(h, last, v, return_last_state)

"""The public sLSTM ops: input checks, then the implementation the dispatch selects.

``pk.slstm`` (the recurrence over a sequence) and ``pk.slstm_step`` (one step); the math is
in ``pallas_kernels.slstm.reference`` (read its docstring for the equations and shapes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels import dispatch
from pallas_kernels._checks import check_float, check_rank, check_shape, state_dtype
from pallas_kernels.selfcheck import Probe
from pallas_kernels.slstm import reference
from pallas_kernels.slstm.reference import FUNCTIONS, SLSTMState, zero_state


def _check_slstm(gates_x, recurrent_kernel, bias, initial_state, function):
    check_rank("gates_x", gates_x, 5, "(B, S, 4, NH, DH)")
    check_float("gates_x", gates_x)
    B, _, G, NH, DH = gates_x.shape
    if G != 4:
        raise ValueError(
            f"`gates_x` must have 4 gates (i, f, z, o) on axis 2 of (B, S, 4, NH, DH); got {G}."
        )
    check_shape("recurrent_kernel", recurrent_kernel, (NH, DH, 4, DH), "(NH, DH_in, 4, DH_out)")
    check_float("recurrent_kernel", recurrent_kernel)
    check_shape("bias", bias, (NH, 4, DH), "(NH, 4, DH)")
    check_float("bias", bias)
    if function not in FUNCTIONS:
        raise ValueError(f"`function` must be one of {FUNCTIONS}; got {function!r}.")
    if initial_state is not None:
        if not (isinstance(initial_state, (tuple, list)) and len(initial_state) == 4):
            raise ValueError(
                "`initial_state` must be an SLSTMState (y, c, n, m) of (B, NH, DH) arrays."
            )
        for name, s in zip("ycnm", initial_state, strict=True):
            check_shape(f"initial_state.{name}", s, (B, NH, DH), "(B, NH, DH)")


def _probe(DH: int, dtype, function: str) -> Probe:
    """The configuration of an sLSTM call with a small input of it: two sequences of five
    steps, one head, a random state whose n mixes zeros and positive values."""
    name = jnp.dtype(dtype).name

    def inputs():
        ks = jax.random.split(jax.random.key(0), 8)
        gx = jax.random.normal(ks[0], (2, 5, 4, 1, DH)).astype(dtype)
        R = (jax.random.normal(ks[1], (1, DH, 4, DH)) / DH**0.5).astype(dtype)
        bias = jax.random.normal(ks[2], (1, 4, DH)).astype(dtype)
        n = jnp.abs(jax.random.normal(ks[5], (2, 1, DH))) + 0.1
        n = jnp.where(jax.random.bernoulli(ks[6], 0.5, n.shape), 0.0, n)
        y, c, m = (jax.random.normal(k, (2, 1, DH)) for k in (ks[3], ks[4], ks[7]))
        return gx, R, bias, SLSTMState(y, c, n, m)

    key = (name, f"DH {DH}", function, "default block sizes")
    return Probe(key, inputs, {"function": function}, name)


def slstm_step(
    gates_x_t, recurrent_kernel, bias, state: SLSTMState, *, function: str = "slstm"
) -> tuple[jax.Array, SLSTMState]:
    """One time step (pure JAX). gates_x_t: (B, G, NH, DH); returns (y_t (B, NH, DH), new
    state in the state's dtype)."""
    return reference.step(gates_x_t, recurrent_kernel, bias, SLSTMState(*state), function=function)


def slstm(
    gates_x,
    recurrent_kernel,
    bias,
    *,
    initial_state: SLSTMState | None = None,
    return_last_state: bool = False,
    function: str = "slstm",
    impl: str = "auto",
    interpret: bool = False,
):
    """The sLSTM (or LSTM) recurrence over a sequence.

    Args:
      gates_x: (B, S, 4, NH, DH) input contributions W x_t to the gates (i, f, z, o).
      recurrent_kernel: (NH, DH_in, 4, DH_out) per-head recurrent matrices R.
      bias: (NH, 4, DH).
      initial_state: optional ``SLSTMState``, each field (B, NH, DH); default zeros.
      return_last_state: also return the final state in float32.
      function: "slstm" (exponential gating with stabiliser) or "lstm".
      impl: "auto" | "xla" | "pallas". interpret: Pallas interpret mode (CPU testing).

    Returns:
      y (B, S, NH, DH) in gates_x's dtype, or ``(y, SLSTMState)``.
    """
    _check_slstm(gates_x, recurrent_kernel, bias, initial_state, function)
    B, _, _, NH, DH = gates_x.shape
    acc = state_dtype(gates_x.dtype)
    state0 = (
        zero_state(B, NH, DH, acc)
        if initial_state is None
        else SLSTMState(*(s.astype(acc) for s in initial_state))
    )
    fn = dispatch.select("slstm", impl, interpret, _probe(DH, gates_x.dtype, function))
    ys, last = fn(gates_x, recurrent_kernel, bias, state0, function=function)
    ys = ys.astype(gates_x.dtype)
    return (ys, SLSTMState(*last)) if return_last_state else ys

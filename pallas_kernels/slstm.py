"""sLSTM recurrence (pure JAX ``lax.scan``): the specification for the sLSTM kernel.

Per head, with a block-diagonal recurrent matrix R mixing the previous output y into all
four gates (memory mixing):

  raw_g = Wx_g,t + y_{t-1} R_g + b_g                      for g in (i, f, z, o)
  log f^ = m_{t-1} + log_sigmoid(f~)
  m_t = i~ where n_{t-1} == 0 (per element) else max(i~, log f^)
  i' = min(e^{i~ - m_t}, 1),  f' = min(e^{log f^ - m_t}, 1)
  c_t = f' c + i' tanh(z~),   n_t = f' n + i',   y_t = sigmoid(o~) c_t / n_t

``function="lstm"`` is the classic LSTM cell: c_t = sigmoid(f~) c + sigmoid(i~) tanh(z~),
y_t = sigmoid(o~) tanh(c_t); its n and m states are carried through unchanged.

Shape legend: B batch, S sequence, NH heads, DH head dim, G = 4 gates in order (i, f, z, o).
  gates_x: (B, S, G, NH, DH)   recurrent_kernel: (NH, DH_in, G, DH_out)   bias: (NH, G, DH)
  y: (B, S, NH, DH)            state (y, c, n, m): each (B, NH, DH)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels._checks import check_float, check_rank, check_shape, state_dtype
from pallas_kernels.dispatch import resolve_impl

SLSTMState = tuple[jax.Array, jax.Array, jax.Array, jax.Array]
FUNCTIONS = ("slstm", "lstm")


def zero_state(B: int, NH: int, DH: int, dtype=jnp.float32) -> SLSTMState:
    """All-zero (y, c, n, m), the reference's initial state."""
    z = jnp.zeros((B, NH, DH), dtype)
    return (z, z, z, z)


def _pointwise(raw, state, function: str):
    """The gating update for one step. raw: (B, G, NH, DH); state: 4 x (B, NH, DH)."""
    y, c, n, m = state
    i_raw, f_raw, z_raw, o_raw = (raw[:, g] for g in range(4))
    if function == "lstm":
        c_new = jax.nn.sigmoid(f_raw) * c + jax.nn.sigmoid(i_raw) * jnp.tanh(z_raw)
        return (jax.nn.sigmoid(o_raw) * jnp.tanh(c_new), c_new, n, m)
    log_f_plus_m = m + jax.nn.log_sigmoid(f_raw)
    # Per element: a unit whose normaliser is still zero starts its stabiliser at i~.
    m_new = jnp.where(n == 0.0, i_raw, jnp.maximum(i_raw, log_f_plus_m))
    i_act = jnp.minimum(jnp.exp(i_raw - m_new), 1.0)
    f_act = jnp.minimum(jnp.exp(log_f_plus_m - m_new), 1.0)
    c_new = f_act * c + i_act * jnp.tanh(z_raw)
    n_new = f_act * n + i_act
    y_new = jax.nn.sigmoid(o_raw) * c_new / n_new
    return (y_new, c_new, n_new, m_new)


def slstm_step(gates_x_t, recurrent_kernel, bias, state: SLSTMState, *, function: str = "slstm"):
    """One time step. gates_x_t: (B, G, NH, DH); returns (y_t (B, NH, DH), new state)."""
    acc = state[0].dtype
    raw = (
        gates_x_t.astype(acc)
        + jnp.einsum("bhd,hdgo->bgho", state[0], recurrent_kernel.astype(acc))
        + jnp.swapaxes(bias.astype(acc), 0, 1)[None]
    )
    new = _pointwise(raw, state, function)
    return new[0], new


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
            raise ValueError("`initial_state` must be a tuple (y, c, n, m) of (B, NH, DH) arrays.")
        for name, s in zip("ycnm", initial_state, strict=True):
            check_shape(f"initial_state ({name})", s, (B, NH, DH), "(B, NH, DH)")


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
      initial_state: optional (y, c, n, m), each (B, NH, DH); default zeros.
      return_last_state: also return the final (y, c, n, m) in float32.
      function: "slstm" (exponential gating with stabiliser) or "lstm".
      impl: "auto" | "xla" | "pallas". interpret: Pallas interpret mode (CPU testing).

    Returns:
      y (B, S, NH, DH) in gates_x's dtype, or ``(y, (y, c, n, m))``.
    """
    _check_slstm(gates_x, recurrent_kernel, bias, initial_state, function)
    B, _, _, NH, DH = gates_x.shape
    acc = state_dtype(gates_x.dtype)
    state0 = (
        zero_state(B, NH, DH, acc)
        if initial_state is None
        else tuple(s.astype(acc) for s in initial_state)
    )
    path = resolve_impl("slstm", impl, interpret)
    if path == "pallas":  # pragma: no cover - kernels register themselves in PALLAS_OPS
        from pallas_kernels.dispatch import PALLAS_OPS

        ys, last = PALLAS_OPS["slstm"](gates_x, recurrent_kernel, bias, state0, function, interpret)
    else:
        R = recurrent_kernel.astype(acc)

        def body(state, gx_t):
            y_t, new = slstm_step(gx_t, R, bias, state, function=function)
            return new, y_t

        last, ys = jax.lax.scan(body, state0, jnp.moveaxis(gates_x, 1, 0))
        ys = jnp.moveaxis(ys, 0, 1)
    ys = ys.astype(gates_x.dtype)
    return (ys, last) if return_last_state else ys

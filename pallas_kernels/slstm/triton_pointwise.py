"""Per-step sLSTM math shared by the forward and backward kernels (fp32 tiles of shape
(batch_tile, T)); equations (2)-(4) and the backward are in ``slstm/triton_scan.py``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.triton import log_sigmoid


def state_names(function: str) -> tuple[str, ...]:
    """States the kernels carry: the LSTM's n and m pass through untouched."""
    return ("y", "c", "n", "m") if function == "slstm" else ("y", "c")


def slstm_gates(raw, c, n, m):
    """Eqs. (2)-(4) up to c_t, n_t. Returns (m_t, log f^ - m_t, f', i', tanh z~)."""
    i_raw, f_raw, z_raw, _ = raw
    log_f = m + log_sigmoid(f_raw)  # (2) log f^
    m_new = jnp.where(n == 0.0, i_raw, jnp.maximum(i_raw, log_f))  # (2), per element
    a_f = log_f - m_new
    f_act = jnp.minimum(jnp.exp(a_f), 1.0)  # (3)
    i_act = jnp.minimum(jnp.exp(i_raw - m_new), 1.0)  # (3)
    return m_new, a_f, f_act, i_act, jnp.tanh(z_raw)


def pointwise_fwd(raw, state, function):
    """One step's state update. raw: 4 gate tiles; state: tiles in _state_names order."""
    if function == "lstm":
        i_raw, f_raw, z_raw, o_raw = raw
        _, c = state
        c_new = jax.nn.sigmoid(f_raw) * c + jax.nn.sigmoid(i_raw) * jnp.tanh(z_raw)
        return (jax.nn.sigmoid(o_raw) * jnp.tanh(c_new), c_new)
    _, c, n, m = state
    m_new, _, f_act, i_act, z_act = slstm_gates(raw, c, n, m)
    c_new = f_act * c + i_act * z_act  # (4)
    n_new = f_act * n + i_act  # (4)
    y_new = jax.nn.sigmoid(raw[3]) * c_new / n_new  # (4)
    return (y_new, c_new, n_new, m_new)


def pointwise_bwd(raw, prev, dh, dcarry, function):
    """Backward of one step, stabiliser included (module docstring).

    Args:
      raw: the 4 gate pre-activations at t; prev: states at t-1 without y ((c,) or (c, n, m)).
      dh: dL/dy_t; dcarry: dL/dc_t (and dL/dn_t, dL/dm_t for sLSTM) from step t+1.
    Returns:
      (draw: 4 tiles, the carried cotangents for t-1).
    """
    i_raw, f_raw, z_raw, o_raw = raw
    s_o = jax.nn.sigmoid(o_raw)
    if function == "lstm":
        (c,) = prev
        (dc,) = dcarry
        s_i, s_f = jax.nn.sigmoid(i_raw), jax.nn.sigmoid(f_raw)
        z_act = jnp.tanh(z_raw)
        c_new = s_f * c + s_i * z_act
        tc = jnp.tanh(c_new)
        do = dh * tc * s_o * (1.0 - s_o)
        dc_hat = dc + dh * s_o * (1.0 - tc * tc)
        di = dc_hat * z_act * s_i * (1.0 - s_i)
        df = dc_hat * c * s_f * (1.0 - s_f)
        dz = dc_hat * s_i * (1.0 - z_act * z_act)
        return (di, df, dz, do), (dc_hat * s_f,)
    c, n, m = prev
    dc, dn, dm = dcarry
    m_new, a_f, f_act, i_act, z_act = slstm_gates(raw, c, n, m)
    take_i = m_new == i_raw  # which branch of (2) set m_t
    c_new = f_act * c + i_act * z_act
    inv_n = 1.0 / (f_act * n + i_act)
    h = c_new * inv_n  # y_t / sigma(o~)
    do = dh * h * s_o * (1.0 - s_o)  # (4)
    dc_hat = dc + dh * s_o * inv_n  # dL/dc_t
    dn_hat = dn - dh * s_o * h * inv_n  # dL/dn_t
    dz = dc_hat * i_act * (1.0 - z_act * z_act)
    # (3): g_f = dL/d(log f^ - m_t) (zero where the min clips, only possible if n_{t-1} == 0),
    # g_i = dL/d(i~ - m_t) (i~ <= m_t, never clipped).
    g_f = jnp.where(a_f > 0.0, 0.0, (dc_hat * c + dn_hat * n) * f_act)
    g_i = (dc_hat * z_act + dn_hat) * i_act
    dm_hat = dm - g_f - g_i  # dL/dm_t: from step t+1 and from (3)
    # (2): m_t is i~ or log f^; it passes its cotangent to the branch it took.
    di = g_i + jnp.where(take_i, dm_hat, 0.0)
    dlog_f = g_f + jnp.where(take_i, 0.0, dm_hat)
    df = dlog_f * jax.nn.sigmoid(-f_raw)  # d log sigma(x)/dx = sigma(-x)
    # log f^ = m_{t-1} + log sigma(f~): dL/dm_{t-1} = dL/dlog f^.
    return (di, df, dz, do), (dc_hat * f_act, dn_hat * f_act, dlog_f)

"""Streaming recurrent forecasters over patches: one state per patch alignment phase, and the
checks of a stream's input (``xlstm_jax.streaming.ForecastStream`` and the families' stream
parts use them; no model is known here).

A one-pass forecast aligns patches to the *end* of the history (the first patch left-padded
with NaN), so new values whose count is not a multiple of the patch size P move every patch
boundary. ``PhasedRows`` keeps, per row, P states: phase ``φ`` is the history left-padded
with ``φ`` NaN and cut into patches from its start, its state the one after its complete
patches (and the last output kept); the phase ``(-T) % P`` of a history of T steps is the
one whose patches end with it, exactly the one-pass alignment. The phases run as P times
the rows of one batch, one jitted call per patch position.

Shape legend: rows the streamed rows, P the patch size, Q quantile levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from xlstm_jax.layers.config import ForecastError

__all__ = ["PhasedRows", "check_rows", "check_scaled", "keep_rows"]

_F32 = np.float32


def keep_rows(valid: jax.Array, new, old):
    """The state tree ``new`` where ``valid`` (rows,) else ``old``."""

    def pick(n, o):
        return jnp.where(valid.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)

    return jax.tree.map(pick, new, old)


class PhasedRows:
    """The P alignment phases of ``rows`` causal rows (see the module docstring).

    Args:
      advance: ``(state, patch (P * rows, P), valid (P * rows,)) -> (state, out (P * rows,
        Q, P))``, one patch position of the model (scaled values, NaN = missing), the state
        kept where not ``valid``; row ``φ * rows + r`` is row r in phase φ.
      state: the zero state of ``P * rows`` rows (a pytree, rows first).
      rows, P, Q: the streamed rows, the patch size, the quantile levels.

    ``lengths`` (rows,) holds each row's history length T; ``push`` appends values,
    ``forecast`` reads the next patches. Each row may grow by its own number of steps.
    """

    def __init__(self, advance, state, rows: int, P: int, Q: int):
        self.advance, self.state, self.rows, self.P = advance, state, rows, P
        self.lengths = np.zeros(rows, np.int64)
        self.tails = [np.zeros(0, _F32) for _ in range(rows)]  # the last < P values
        self.last_out = np.full((P * rows, Q, P), np.nan, _F32)

    def _pending(self, phase: int, r: int) -> np.ndarray:
        """Row r's values in phase ``phase`` after its last complete patch."""
        T, P = int(self.lengths[r]), self.P
        if phase + T < P:  # no patch yet: the phase's NaN padding, then every value
            tail = self.tails[r][len(self.tails[r]) - T :]
            return np.concatenate([np.full(phase, np.nan, _F32), tail])
        n = (phase + T) % P
        return self.tails[r][len(self.tails[r]) - n :] if n else np.zeros(0, _F32)

    def push(self, new: Sequence[np.ndarray]) -> None:
        """Appends ``new[r]`` (scaled values, any length, NaN = missing) to every row."""
        P, rows = self.P, self.rows
        seqs = []
        for phase in range(P):
            for r in range(rows):
                s = np.concatenate([self._pending(phase, r), new[r]])
                seqs.append(s[: len(s) // P * P].reshape(-1, P))
        steps = max(len(s) for s in seqs)
        for k in range(steps):
            valid = np.array([len(s) > k for s in seqs])
            patch = np.stack([s[k] if len(s) > k else np.zeros(P, _F32) for s in seqs])
            self.state, out = self.advance(self.state, jnp.asarray(patch), jnp.asarray(valid))
            self.last_out[valid] = np.asarray(out)[valid]
        for r in range(rows):
            self.lengths[r] += len(new[r])
            tail = np.concatenate([self.tails[r], new[r]])
            self.tails[r] = tail[max(0, len(tail) - (P - 1)) :]

    def forecast(self, steps: int) -> np.ndarray:
        """(rows, Q, steps * P) scaled: each row's next ``steps`` patches, from the phase
        whose patches end with its history, then ``steps - 1`` NaN patches."""
        P, rows = self.P, self.rows
        idx = ((-self.lengths) % P) * rows + np.arange(rows)
        outs = [self.last_out[idx]]
        state = self.state
        nan = jnp.full((P * rows, P), jnp.nan, jnp.float32)
        every = jnp.ones(P * rows, bool)
        for _ in range(steps - 1):
            state, out = self.advance(state, nan, every)
            outs.append(np.asarray(out)[idx])
        return np.concatenate(outs, axis=-1)


def check_rows(a, name: str, i: int, rows: int | None, steps: int | None, at_least: bool = False):
    """``a`` as float32 (V, u) checked: 2-D (a 1-D target is one row), ``rows`` variates,
    ``steps`` steps (or at least that many), no inf."""
    try:
        a = np.asarray(a, _F32)
    except (TypeError, ValueError) as e:
        raise ForecastError(f"series {i}: {name} is not numeric: {e}") from None
    if a.ndim == 1 and name == "target":
        a = a[None]
    if a.ndim != 2:
        raise ForecastError(f"series {i}: {name} must be (variates, time); got shape {a.shape}.")
    if rows is not None and a.shape[0] != rows:
        raise ForecastError(
            f"series {i}: {name} has {a.shape[0]} variates; the stream's series has {rows}: "
            "give every variate's new steps, NaN where missing."
        )
    if steps is not None and (a.shape[1] < steps if at_least else a.shape[1] != steps):
        need = f"at least {steps}" if at_least else f"{steps}"
        raise ForecastError(
            f"series {i}: {name} has {a.shape[1]} steps; it needs {need} (as many as the "
            "target" + (" plus the horizon H)." if at_least else ").")
        )
    if np.isinf(a).any():
        raise ForecastError(f"series {i}: {name} holds inf; replace it with NaN (missing).")
    return a


def check_scaled(x: np.ndarray, i: int) -> None:
    """Refuses scaled values x that overflowed (series i)."""
    if not np.isfinite(x[~np.isnan(x)]).all():
        raise ForecastError(
            f"series {i}: a new value is so far from the stream's frozen scaling (set by its "
            "first history) that it overflows float32 once scaled; start a new stream on the "
            "recent history."
        )

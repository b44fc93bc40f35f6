"""TiRex's part of ``xlstm_jax.streaming.ForecastStream``: every target row streams on its
own with the scaling frozen at the start (``instance_scale`` of the window ``forecast``
reads) and one state per patch phase (``xlstm_jax.layers.phases``); the reference it equals
is ``forecast.forecast_history``.

Shape legend: rows the target rows of all series, V_t those of one, P the patch size, Q
quantile levels, H the horizon.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from xlstm_jax.layers.config import ForecastError
from xlstm_jax.layers.phases import PhasedRows, check_rows, check_scaled, keep_rows
from xlstm_jax.layers.series import Series
from xlstm_jax.models.tirex.forecast import context_windows, instance_scale
from xlstm_jax.models.tirex.model import TiRex

__all__ = ["TiRexStream"]

_F32 = np.float32


@nnx.jit
def _tirex_advance(model: TiRex, state, patch, valid):
    """One patch position: patch (rows, P) scaled, valid (rows,) -> (state, (rows, Q, P))."""
    out, new = model.step(patch[:, None], state)
    return keep_rows(valid, new, state), out[:, 0]


class TiRexStream:
    """TiRex's stream of ``series`` (1-D targets or ``Series`` without covariates) for the
    horizon H: every target row streams on its own (TiRex is univariate), scaled with the
    ``instance_scale`` of its first history's last ``train_ctx_len`` values. ``update``
    takes per series None or its new target steps (1-D, or (V_t, u)); ``quantiles`` gives
    per series (V_t, Q, H), all the model's levels.

    Raises:
      ForecastError: covariates, a bad target (empty, all NaN, not 1-D or 2-D, inf, too
        large to scale: ``context_windows``).
    """

    def __init__(self, model: TiRex, series: Sequence, H: int):
        c = self.config = model.config
        self.H, self.P = H, c.patch_size
        self.shapes, rows = [], []
        for i, s in enumerate(series):
            s = s if isinstance(s, Series) else Series(s)
            if s.past_covariates is not None or s.future_covariates is not None:
                raise ForecastError(
                    f"series {i} has covariates, but TiRex forecasts univariate targets "
                    "only: drop them, or stream a TiRex-2 model."
                )
            t = check_rows(s.target, "target", i, None, None)
            if t.shape[1] == 0:
                raise ForecastError(f"series {i}: the target is empty.")
            self.shapes.append(len(t))
            rows += list(t)
        try:
            windows = context_windows(rows, c.train_ctx_len)
        except ForecastError as e:
            raise ForecastError(f"a target row of the initial history: {e}") from None
        _, st = instance_scale(jnp.asarray(windows))
        self.loc, self.scale = np.asarray(st.loc), np.asarray(st.scale)
        n = len(rows)
        advance = nnx.cached_partial(_tirex_advance, model)
        Q = len(c.quantiles)
        self.phases = PhasedRows(advance, model.init_state(self.P * n), n, self.P, Q)
        self.phases.push(self._scaled(rows))

    def _scaled(self, rows) -> list[np.ndarray]:
        with np.errstate(over="ignore"):  # an overflow is refused by ``check_scaled``
            return [(np.asarray(x, _F32) - self.loc[r]) / self.scale[r] for r, x in enumerate(rows)]

    def update(self, new: Sequence) -> None:
        """Appends each series' new steps (None: nothing new); refuses a bad one, unchanged."""
        rows = []
        for i, (v, s) in enumerate(zip(new, self.shapes, strict=True)):
            if v is None:
                rows += [np.zeros(0, _F32)] * s
                continue
            v = v if isinstance(v, Series) else Series(v)
            if v.past_covariates is not None or v.future_covariates is not None:
                raise ForecastError(f"series {i}: TiRex takes no covariates; give the target.")
            rows += list(check_rows(v.target, "target", i, s, None))
        scaled = self._scaled(rows)
        for r, x in enumerate(scaled):
            check_scaled(x, int(np.searchsorted(np.cumsum(self.shapes), r, side="right")))
        self.phases.push(scaled)

    def quantiles(self) -> list[np.ndarray]:
        """Per series (V_t, Q, H) on the series' scale, all the model's levels."""
        steps = -(-self.H // self.P)
        q = self.phases.forecast(steps) * self.scale[:, :, None] + self.loc[:, :, None]
        q = q[..., : self.H]
        ends = np.cumsum(self.shapes)
        return [q[e - s : e] for s, e in zip(self.shapes, ends, strict=True)]

"""Streaming forecasts: ``ForecastStream`` keeps a forecaster's recurrent state across updates.

    stream = ForecastStream(model, [history], prediction_length=24)   # TiRex or TiRex-2
    out = stream.update([new_values])       # the forecast after the new steps: list[SeriesForecast]
    out = stream.forecast()                 # the current forecast, without new steps

An update processes only the new patches. What the stream holds, and the contract its tests
prove: after any sequence of updates, its forecast equals the one-pass forecast of the whole
history with the stream's frozen scaling (``tirex.forecast.forecast_history``,
``tirex2.history.predict_history``), up to float32 rounding.

**Frozen scaling.** The scaling is fixed at construction, from the initial history: TiRex
``instance_scale`` of the window ``forecast`` reads (the last ``train_ctx_len`` values);
TiRex-2 per row the scaler of ``predict`` (the last ``context_len`` steps plus, for future
covariates, the first horizon; ``history_scale``), with the trend-differencing decision
(``tta_diff``) taken once too and the binary-row flag kept. New values are scaled with it, so
the model sees the same numbers whatever the split into updates. (A forecast of the grown
history by ``xlstm_jax.forecast`` rescales and cuts the context, so it differs.)

**Alignment phases.** The whole-history forecast aligns patches to the *end* of the history
(the first patch left-padded with NaN): an update of ``u`` steps with ``u % P != 0`` moves
every patch boundary. The stream therefore keeps one state per alignment phase: phase ``φ``
(0..P-1) is the history left-padded with ``φ`` NaN, cut into patches from its start, the
state after its complete patches and their last output held; at a forecast the phase
``(-T) % P`` is the one whose patches end with the history, exactly the whole-history pass.
The phases run as P times the rows of one batch, one jitted call (one patch, one program for
the stream's shape) per new patch position. Cost: P times the rows of a single stream
(TiRex-2: each phase's rows are series of their own for the variate attention); an update of
u steps runs at most ``ceil(u / P)`` patch steps (a phase without a new complete patch keeps
its state); the rollout of H steps runs ``ceil(H / P) - 1`` patch steps of NaN (TiRex's
missing patches, TiRex-2's future window) from the held state, without changing it. The
initial history costs ``ceil(T / P)`` steps. Memory: the P states and the last P - 1 values
per row.

**Known-future covariates (TiRex-2).** A series with ``future_covariates`` has rows that run
the same cell time-reversed over the whole row; the variate mixer passes their output to the
targets at every patch index, so from the first block's variate mixer on every hidden state
of the series depends on the future: nothing is causal to carry. Such a series keeps its
whole raw history and is recomputed, exactly, with one full pass (``predict_history``, the
frozen scaling) after each update that gives it new steps: ``2 * num_blocks`` cell passes
(forward and reversed) over ``ceil((T + W) / P)`` patches of its rows (T the history, W the
future window), growing with the history, plus a compile per new history length under jit
(series of one length share a pass; the pass is kept until the series changes). Series
without future covariates (targets and past covariates, whose window is NaN) are causal and
stream. A series' future covariates in an update cover its new steps and the new horizon,
``(V_f, >= u + H)``, and replace the values given before for those steps.

**Sign flip (TiRex-2 ``tta_sign_flip``).** A second stream runs on the negated series
(scaling and trend decision frozen on the negated history), and its forecast, negated with
the levels mirrored, is averaged in, as ``predict`` does: twice the cost.

TiRex forecasts univariate targets: each target row of a ``Series`` streams on its own and
covariates are refused, as in ``xlstm_jax.forecast``.

Shape legend: V_t target variates of a series, V_p past and V_f future covariates, T the
history length, u the steps of an update, H the horizon, P the patch size, Q quantile levels,
R rows (variates of all series), W TiRex-2's future window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xlstm_jax.layers.config import ForecastError
from xlstm_jax.layers.series import Series, SeriesForecast, pick_levels
from xlstm_jax.models.tirex.forecast import MAX_PREDICTION_LENGTH
from xlstm_jax.models.tirex.model import TiRex
from xlstm_jax.models.tirex.stream import TiRexStream
from xlstm_jax.models.tirex2.forecast import _mirror
from xlstm_jax.models.tirex2.model import TiRex2
from xlstm_jax.models.tirex2.stream import TiRex2Stream

__all__ = ["ForecastStream"]

_F32 = np.float32


def _negated(s):
    if s is None:
        return None
    s = s if isinstance(s, Series) else Series(s)
    return Series(*(None if a is None else -np.asarray(a, _F32) for a in s))


class ForecastStream:
    """A forecast kept current as new observations arrive (module docstring).

    Args:
      model: a ``TiRex`` or ``TiRex2``.
      series: a list whose items are 1-D arrays (one target, T steps; ragged lengths, NaN
        = missing) or ``Series`` (targets (V_t, T), past covariates (V_p, T), future
        covariates (V_f, >= T + H); TiRex takes no covariates).
      prediction_length: H >= 1.
      quantile_levels: a subset of the model's levels (None: all of them).
      tta_sign_flip, tta_diff: TiRex-2's post-processor options (None: the config's);
        frozen with the scaling.

    Raises:
      ForecastError: a model of another family, H < 1 or beyond ``MAX_PREDICTION_LENGTH``,
        a level the model does not predict, a bad series (empty, inf, wrong shapes, a
        target row with no observed value; covariates for TiRex).
    """

    def __init__(
        self,
        model: TiRex | TiRex2,
        series: Sequence,
        prediction_length: int,
        quantile_levels: Sequence[float] | None = None,
        *,
        tta_sign_flip: bool | None = None,
        tta_diff: bool | None = None,
    ):
        if not isinstance(model, TiRex | TiRex2):
            raise ForecastError(
                f"ForecastStream streams TiRex and TiRex-2 models; got {type(model).__name__}."
            )
        H = prediction_length
        if isinstance(H, bool) or not isinstance(H, int | np.integer) or H < 1:
            raise ForecastError(f"prediction_length must be an int >= 1; got {H!r}.")
        if H > MAX_PREDICTION_LENGTH:
            raise ForecastError(
                f"prediction_length {H} is beyond the limit of {MAX_PREDICTION_LENGTH:,} "
                "steps; ask for a shorter horizon."
            )
        if isinstance(series, np.ndarray | Series) or not isinstance(series, Sequence):
            series = None
        if not series:
            raise ForecastError("series must be a non-empty list of Series or arrays.")
        c = model.config
        self.levels, self._idx = pick_levels(c.quantiles, quantile_levels)
        self._median = c.median_index
        self.prediction_length, self.n_series = int(H), len(series)
        self._twin, self._cache = None, None
        if isinstance(model, TiRex):
            if tta_sign_flip or tta_diff:
                raise ForecastError(
                    "tta_sign_flip and tta_diff are TiRex-2's post-processor options; TiRex "
                    "has neither: leave them None."
                )
            self._stream = TiRexStream(model, series, int(H))
            return
        diff = c.tta_diff if tta_diff is None else tta_diff
        self._stream = TiRex2Stream(model, series, int(H), diff)
        if c.tta_sign_flip if tta_sign_flip is None else tta_sign_flip:
            self._mirror = _mirror(c.quantiles)
            self._twin = TiRex2Stream(model, [_negated(s) for s in series], int(H), diff)

    def update(self, new_values: Sequence) -> list[SeriesForecast]:
        """Appends each series' new steps and returns the forecast from the new end.

        Args:
          new_values: per series (in the stream's order) None (nothing new), a 1-D or
            (V_t, u) array (the targets' new steps, u >= 1, NaN = missing) or a ``Series``
            with target (V_t, u), past_covariates (V_p, u) and future_covariates
            (V_f, >= u + H) exactly when the stream's series has them (the future ones
            from the first new step through the new horizon, replacing earlier values).
            Series may grow by different u.

        Returns:
          ``forecast()`` after the update.

        Raises:
          ForecastError: a list of another length, shapes or lengths that do not match,
            inf, or a value that overflows once scaled; the stream is left unchanged
            only when the error comes before any series is processed.
        """
        if isinstance(new_values, np.ndarray | Series) or not isinstance(new_values, Sequence):
            raise ForecastError("new_values must be a list with one entry per series.")
        if len(new_values) != self.n_series:
            raise ForecastError(
                f"new_values has {len(new_values)} entries; the stream has {self.n_series} "
                "series: give one per series (None for a series with nothing new)."
            )
        self._cache = None
        self._stream.update(new_values)
        if self._twin is not None:
            self._twin.update([_negated(v) for v in new_values])
        return self.forecast()

    def forecast(self) -> list[SeriesForecast]:
        """The current forecast: per series a ``SeriesForecast`` with quantiles (V_t, Q, H)
        and mean (V_t, H) (the median), float32, for the levels asked."""
        if self._cache is None:
            qs = self._stream.quantiles()
            if self._twin is not None:
                flipped = self._twin.quantiles()
                qs = [(a + -b[:, self._mirror]) / 2 for a, b in zip(qs, flipped, strict=True)]
            self._cache = [SeriesForecast.of(q, self._idx, self._median, self.levels) for q in qs]
        return self._cache

"""Streaming forecasts: ``ForecastStream`` keeps a forecaster's recurrent state across updates.

    stream = ForecastStream(model, [history], prediction_length=24)   # TiRex or TiRex-2
    out = stream.update([new_values])       # the forecast after the new steps: list[SeriesForecast]
    out = stream.forecast()                 # the current forecast, without new steps

An update processes only the new patches. What the stream holds, and the contract its tests
prove: after any sequence of updates, its forecast equals the one-pass forecast of the whole
history with the stream's frozen scaling (``tirex.forecast.forecast_history``,
``tirex2.forecast.predict_history``), up to float32 rounding.

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
The phases run as P times the rows of one batch, one jitted call per new patch position.
Cost: P times the rows of a single stream (TiRex-2: its variate attention stays within a
phase's rows); an update of u steps runs ``ceil(u / P)`` or ``ceil(u / P) + 1`` patch steps;
the rollout of H steps runs ``ceil(H / P) - 1`` patch steps of NaN (TiRex's missing patches,
TiRex-2's future window) from the held state, without changing it. Memory: the P states and
the last P - 1 values per row.

**Known-future covariates (TiRex-2).** A series with ``future_covariates`` has rows that run
the same cell time-reversed over the whole row; the variate mixer passes their output to the
targets at every patch index, so from the first block's variate mixer on every hidden state
of the series depends on the future: nothing is causal to carry. Such a series keeps its
whole (scaled-as-given) history and is recomputed with one full pass per forecast:
``2 * num_blocks`` cell passes over ``(T + W) / P`` patches of its rows (T the history, W the
future window), growing with the history. Series without future covariates (targets and
past covariates, whose window is NaN) are causal and stream. A series' future covariates
in an update cover its new steps and the new horizon, ``(V_f, >= u + H)``, and replace the
values given before for those steps.

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

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xlstm_jax.forecasting import Series, SeriesForecast
from xlstm_jax.layers.config import ForecastError
from xlstm_jax.models.tirex.forecast import instance_scale
from xlstm_jax.models.tirex.model import TiRex
from xlstm_jax.models.tirex2 import forecast as t2f
from xlstm_jax.models.tirex2.model import RowScale, TiRex2, unscale_rows

__all__ = ["ForecastStream"]

_F32 = np.float32


def _keep(valid: jax.Array, new, old):
    """The state tree ``new`` where ``valid`` (rows,) else ``old``."""

    def pick(n, o):
        return jnp.where(valid.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)

    return jax.tree.map(pick, new, old)


@nnx.jit
def _tirex_advance(model: TiRex, state, patch, valid):
    """One patch position: patch (rows, P) scaled, valid (rows,) -> (state, (rows, Q, P))."""
    out, new = model.step(patch[:, None], state)
    return _keep(valid, new, state), out[:, 0]


@nnx.jit
def _tirex2_advance(model: TiRex2, state, patch, valid, target_mask, group):
    """As ``_tirex_advance`` for TiRex-2's causal rows (their series ids in ``group``)."""
    c = model.config
    out, new = model.step(patch[:, None], target_mask, group, state)
    Q = len(c.quantiles)
    return _keep(valid, new, state), out[:, 0].reshape(patch.shape[0], Q, c.patch_size)


def _apply_scale(x: np.ndarray, st: RowScale, c) -> np.ndarray:
    """``apply_scale`` in NumPy (float32): the values of an update, without a program per
    update shape."""
    loc, scale, binary = (np.asarray(a) for a in st)
    with np.errstate(over="ignore", invalid="ignore"):
        y = (x.astype(_F32) - loc) / scale
        return np.where(binary, y, np.arcsinh(y)) if c.use_arcsinh else y


# The end of a forecast, one program (not op by op).


@jax.jit(static_argnums=(4, 5))
def _finish(q, scale: RowScale, is_diff, last, H: int, c):
    """Scaled quantiles (R, Q, S) -> the post-processed forecast on the rows' scale."""
    return t2f.postprocess(unscale_rows(q, scale, c), is_diff, last, c.median_index, H)


class _Phases:
    """The P alignment phases of ``rows`` causal rows (module docstring).

    ``advance(state, patch (P * rows, P), valid (P * rows,)) -> (state, out (P * rows, Q,
    P))`` runs one patch position; row ``φ * rows + r`` is row r in phase φ. ``lengths``
    (rows,) holds each row's history length T.
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


def _array(a, name: str, i: int, rows: int | None, steps: int | None, at_least: bool = False):
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
            f"series {i}: {name} has {a.shape[1]} steps; it needs {need} (the target's new "
            "steps" + (" plus the horizon H)." if at_least else ").")
        )
    if np.isinf(a).any():
        raise ForecastError(f"series {i}: {name} holds inf; replace it with NaN (missing).")
    return a


def _as_series(s) -> Series:
    return s if isinstance(s, Series) else Series(s)


def _check_scaled(x: np.ndarray, i: int) -> None:
    if not np.isfinite(x[~np.isnan(x)]).all():
        raise ForecastError(
            f"series {i}: a new value is so far from the stream's frozen scaling (set by its "
            "first history) that it overflows float32 once scaled; start a new stream on the "
            "recent history."
        )


class _TiRexStream:
    """Every target row of every series streams on its own (TiRex is univariate)."""

    def __init__(self, model: TiRex, series: Sequence, H: int):
        from xlstm_jax.models.tirex.forecast import context_windows

        c = self.config = model.config
        self.H, self.P = H, c.patch_size
        self.shapes, rows = [], []
        for i, s in enumerate(series):
            s = _as_series(s)
            if s.past_covariates is not None or s.future_covariates is not None:
                raise ForecastError(
                    f"series {i} has covariates, but TiRex forecasts univariate targets "
                    "only: drop them, or stream a TiRex-2 model."
                )
            t = _array(s.target, "target", i, None, None)
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
        self.phases = _Phases(advance, model.init_state(self.P * n), n, self.P, Q)
        self.phases.push(self._scaled(rows))

    def _scaled(self, rows) -> list[np.ndarray]:
        with np.errstate(over="ignore"):  # an overflow is refused by ``_check_scaled``
            return [(np.asarray(x, _F32) - self.loc[r]) / self.scale[r] for r, x in enumerate(rows)]

    def update(self, new: Sequence) -> None:
        rows = []
        for i, (v, s) in enumerate(zip(new, self.shapes, strict=True)):
            if v is None:
                rows += [np.zeros(0, _F32)] * s
                continue
            v = _as_series(v)
            if v.past_covariates is not None or v.future_covariates is not None:
                raise ForecastError(f"series {i}: TiRex takes no covariates; give the target.")
            rows += list(_array(v.target, "target", i, s, None))
        scaled = self._scaled(rows)
        for r, x in enumerate(scaled):
            _check_scaled(x, int(np.searchsorted(np.cumsum(self.shapes), r, side="right")))
        self.phases.push(scaled)

    def quantiles(self) -> list[np.ndarray]:
        """Per series (V_t, Q, H) on the series' scale, all the model's levels."""
        steps = -(-self.H // self.P)
        q = self.phases.forecast(steps) * self.scale[:, :, None] + self.loc[:, :, None]
        q = q[..., : self.H]
        ends = np.cumsum(self.shapes)
        return [q[e - s : e] for s, e in zip(self.shapes, ends, strict=True)]


_KEYS = ("target", "past", "future")


class _TiRex2Stream:
    """TiRex-2: the series without future covariates stream together (one row per target
    and past covariate, in P phases); those with future covariates are recomputed."""

    def __init__(self, model: TiRex2, series: Sequence, H: int, tta_diff: bool):
        self.model, c = model, model.config
        self.H, self.P = H, c.patch_size
        self.items = []  # per series a dict of what it keeps
        rows, scales, tmask, group, is_diff, causal = [], [], [], [], [], 0
        for i, s in enumerate(series):
            s = _as_series(s)
            t = _array(s.target, "target", i, None, None)
            if t.shape[1] == 0:
                raise ForecastError(f"series {i}: the target is empty.")
            T = t.shape[1]
            pc, fc = s.past_covariates, s.future_covariates
            pc = None if pc is None else _array(pc, "past_covariates", i, None, T)
            fc = None if fc is None else _array(fc, "future_covariates", i, None, T + H, True)
            fc = None if fc is None else fc[:, : T + H]
            empty = np.nonzero(np.isnan(t).all(1))[0]
            if len(empty):
                raise ForecastError(
                    f"series {i}: target row {int(empty[0])} has no observed value (all NaN): "
                    "drop it or fill it."
                )
            diff = None if tta_diff else [False] * len(t)
            hr = t2f.history_rows(model, Series(t, pc, fc), H, diff)
            st = t2f.history_scale(model, hr)
            item = dict(V_t=len(t), diff=hr.is_diff[: len(t)], scale=st)
            if fc is not None:  # recomputed: keeps the whole history
                item.update(target=t, past=pc, future=fc)
            else:
                R = len(hr.x)
                item.update(rows=slice(len(rows), len(rows) + R), prev=t[:, -1].copy())
                item.update(last=hr.last[: len(t)].copy(), V_p=0 if pc is None else len(pc))
                x = _apply_scale(hr.x[:, :T], st, c)
                rows += list(x)
                scales.append(st)
                tmask += list(hr.target_mask)
                group += [causal] * R
                is_diff += list(hr.is_diff)
                causal += 1
            self.items.append(item)
        self.phases = None
        if rows:
            n = len(rows)
            self.scale = RowScale(*(np.concatenate(a) for a in zip(*scales, strict=True)))
            self.is_diff = jnp.asarray(is_diff)
            g = np.asarray(group, np.int32)
            # Phase φ's rows form series ids of their own: attention stays within a phase.
            group_all = np.concatenate([g + phase * causal for phase in range(self.P)])
            tmask_all = np.tile(np.asarray(tmask), self.P)
            advance = nnx.cached_partial(_tirex2_advance, model)

            def step(state, patch, valid):
                return advance(state, patch, valid, jnp.asarray(tmask_all), jnp.asarray(group_all))

            Q = len(c.quantiles)
            self.phases = _Phases(step, model.init_state(self.P * n), n, self.P, Q)
            self.phases.push(rows)

    def _checked(self, i: int, v, it: dict):
        """Series i's update ``v``, checked: (target (V_t, u), past (V_p, u) or None,
        future (V_f, u + H) or None)."""
        H = self.H
        v = _as_series(v)
        t = _array(v.target, "target", i, it["V_t"], None)
        u = t.shape[1]
        if u == 0:
            raise ForecastError(
                f"series {i}: the update has no new step; give None for a series with nothing new."
            )
        V_p = it["V_p"] if "V_p" in it else (0 if it["past"] is None else len(it["past"]))
        if (v.past_covariates is not None) != (V_p > 0):
            raise ForecastError(
                f"series {i}: the stream's series {'has' if V_p else 'has no'} past "
                "covariates; an update gives their new steps exactly when it has them."
            )
        has_future = "future" in it
        if (v.future_covariates is not None) != has_future:
            raise ForecastError(
                f"series {i}: the stream's series {'has' if has_future else 'has no'} "
                "future covariates; an update gives them (its new steps and the new "
                f"horizon, >= u + H = {u + H} steps) exactly when it has them."
            )
        pc = None if not V_p else _array(v.past_covariates, "past_covariates", i, V_p, u)
        fc = None
        if has_future:
            V_f = len(it["future"])
            fc = _array(v.future_covariates, "future_covariates", i, V_f, u + H, True)
            fc = fc[:, : u + H]
        return t, pc, fc

    def update(self, new: Sequence) -> None:
        c = self.model.config
        # Every series is checked (and its scaled rows made) before any state changes, so
        # a bad update leaves the stream as it was.
        checked = [
            None if v is None else self._checked(i, v, it)
            for i, (v, it) in enumerate(zip(new, self.items, strict=True))
        ]
        push = [np.zeros(0, _F32)] * (0 if self.phases is None else self.phases.rows)
        commits = []
        for i, (parts, it) in enumerate(zip(checked, self.items, strict=True)):
            if parts is None or "future" in it:
                continue
            t, pc, _ = parts
            # Differencing continues from the last raw value (NaN next to a missing one).
            prev = np.concatenate([it["prev"][:, None], t[:, :-1]], axis=1)
            t_in = np.where(it["diff"][:, None], t - prev, t)
            x = t_in if pc is None else np.concatenate([t_in, pc])
            x = _apply_scale(x, RowScale(*(a[it["rows"]] for a in self.scale)), c)
            _check_scaled(x, i)
            push[it["rows"]] = list(x)
            commits.append((it, t))
        for it, t in commits:
            observed = ~np.isnan(t)
            last_idx = t.shape[1] - 1 - np.argmax(observed[:, ::-1], axis=1)
            it["last"] = np.where(observed.any(1), t[np.arange(len(t)), last_idx], it["last"])
            it["prev"] = t[:, -1].copy()
        for parts, it in zip(checked, self.items, strict=True):
            if parts is None or "future" not in it:
                continue
            t, pc, fc = parts
            T = it["target"].shape[1]
            it["target"] = np.concatenate([it["target"], t], axis=1)
            if pc is not None:
                it["past"] = np.concatenate([it["past"], pc], axis=1)
            # The covariates' given future replaces what an earlier call gave.
            it["future"] = np.concatenate([it["future"][:, :T], fc], axis=1)
            it["result"] = None
        if self.phases is not None:
            self.phases.push(push)

    def quantiles(self) -> list[np.ndarray]:
        """Per series (V_t, Q, H) post-processed, all the model's levels."""
        c, H = self.model.config, self.H
        out = [None] * len(self.items)
        if self.phases is not None:
            steps = -(-H // self.P)
            last = np.zeros(self.phases.rows, _F32)
            for it in self.items:
                if "rows" in it:
                    last[it["rows"].start : it["rows"].start + it["V_t"]] = it["last"]
            q = self.phases.forecast(steps)
            q = np.asarray(_finish(q, self.scale, self.is_diff, last, H, c))[..., :H]
            for i, it in enumerate(self.items):
                if "rows" in it:
                    out[i] = q[it["rows"].start : it["rows"].start + it["V_t"]]
        # Series with future covariates: one pass per history length over them all.
        by_length: dict[int, list[int]] = {}
        for i, it in enumerate(self.items):
            if "future" in it and it.get("result") is None:
                by_length.setdefault(it["target"].shape[1], []).append(i)
        for idx in by_length.values():
            rows = [
                t2f.history_rows(self.model, Series(*(self.items[i][k] for k in _KEYS)), H, d)
                for i, d in ((i, self.items[i]["diff"]) for i in idx)
            ]
            qs = t2f.predict_history(self.model, rows, H, [self.items[i]["scale"] for i in idx])
            for i, q in zip(idx, qs, strict=True):
                self.items[i]["result"] = q
        for i, it in enumerate(self.items):
            if "future" in it:
                out[i] = it["result"]
        return out


def _negated(s):
    if s is None:
        return None
    s = _as_series(s)
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
        from xlstm_jax.models.tirex.forecast import MAX_PREDICTION_LENGTH

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
        levels = c.quantiles if quantile_levels is None else tuple(map(float, quantile_levels))
        if not levels or any(q not in c.quantiles for q in levels):
            raise ForecastError(
                f"quantile_levels {list(levels)}: the model predicts the levels "
                f"{list(c.quantiles)}; pick from those."
            )
        self.levels, self._idx = levels, [c.quantiles.index(q) for q in levels]
        self.prediction_length, self.n_series = int(H), len(series)
        self._twin, self._cache = None, None
        if isinstance(model, TiRex):
            if tta_sign_flip or tta_diff:
                raise ForecastError(
                    "tta_sign_flip and tta_diff are TiRex-2's post-processor options; TiRex "
                    "has neither: leave them None."
                )
            self._median = c.quantiles.index(0.5)
            self._stream = _TiRexStream(model, series, int(H))
            return
        self._median = c.median_index
        diff = c.tta_diff if tta_diff is None else tta_diff
        self._stream = _TiRex2Stream(model, series, int(H), diff)
        if c.tta_sign_flip if tta_sign_flip is None else tta_sign_flip:
            self._mirror = t2f._mirror(c.quantiles)
            self._twin = _TiRex2Stream(model, [_negated(s) for s in series], int(H), diff)

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
            self._cache = [
                SeriesForecast(
                    np.ascontiguousarray(q[:, self._idx], _F32),
                    np.ascontiguousarray(q[:, self._median], _F32),
                    self.levels,
                )
                for q in qs
            ]
        return self._cache

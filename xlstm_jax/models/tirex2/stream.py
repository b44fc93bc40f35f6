"""TiRex-2's part of ``xlstm_jax.streaming.ForecastStream``: the series without future
covariates stream together (one row per target and past covariate, one state per patch
phase, ``xlstm_jax.layers.phases``); a series with future covariates is recomputed with one
pass (their reverse pass is not causal). The scaling and the trend decision are frozen at
the start; the reference it equals is ``history.predict_history``.

Shape legend: R rows, V_t targets and V_p past, V_f future covariates of a series, u the
steps of an update, P the patch size, Q quantile levels, H the horizon.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xlstm_jax.layers.config import ForecastError
from xlstm_jax.layers.phases import PhasedRows, check_rows, check_scaled, keep_rows
from xlstm_jax.layers.series import Series
from xlstm_jax.models.tirex2.forecast import postprocess
from xlstm_jax.models.tirex2.history import history_rows, history_scale, predict_history
from xlstm_jax.models.tirex2.model import RowScale, TiRex2, unscale_rows

__all__ = ["TiRex2Stream"]

_F32 = np.float32


@nnx.jit
def _tirex2_advance(model: TiRex2, state, patch, valid, target_mask, group):
    """One patch position of TiRex-2's causal rows (their series ids in ``group``)."""
    c = model.config
    out, new = model.step(patch[:, None], target_mask, group, state)
    Q = len(c.quantiles)
    return keep_rows(valid, new, state), out[:, 0].reshape(patch.shape[0], Q, c.patch_size)


def _apply_scale(x: np.ndarray, st: RowScale, c) -> np.ndarray:
    """``apply_scale`` in NumPy (float32): the values of an update, without a program per
    update shape."""
    loc, scale, binary = (np.asarray(a) for a in st)
    with np.errstate(over="ignore", invalid="ignore"):
        y = (x.astype(_F32) - loc) / scale
        return np.where(binary, y, np.arcsinh(y)) if c.use_arcsinh else y


# The end of a forecast in one program (op by op, each op would compile on its own).
@jax.jit(static_argnums=(4, 5))
def _finish(q, scale: RowScale, is_diff, last, H: int, c):
    """Scaled quantiles (R, Q, S) -> the post-processed forecast on the rows' scale."""
    return postprocess(unscale_rows(q, scale, c), is_diff, last, c.median_index, H)


_KEYS = ("target", "past", "future")


class TiRex2Stream:
    """TiRex-2's stream of ``series`` (1-D targets or ``Series``) for the horizon H: the
    series without future covariates stream together (one row per target and past
    covariate, in P phases); those with future covariates are recomputed (module
    docstring). ``tta_diff``: whether trending targets are differenced (decided once, on
    the first history). ``update`` takes per series None or its new steps (checked, as
    ``xlstm_jax.streaming.ForecastStream.update``); ``quantiles`` gives per series
    (V_t, Q, H), all the model's levels.

    Raises:
      ForecastError: a bad series (empty, inf, wrong shapes or lengths, a target row with
        no observed value).
    """

    def __init__(self, model: TiRex2, series: Sequence, H: int, tta_diff: bool):
        self.model, c = model, model.config
        self.H, self.P = H, c.patch_size
        self.items = []  # per series a dict of what it keeps
        rows, scales, tmask, group, is_diff, causal = [], [], [], [], [], 0
        for i, s in enumerate(series):
            s = s if isinstance(s, Series) else Series(s)
            t = check_rows(s.target, "target", i, None, None)
            if t.shape[1] == 0:
                raise ForecastError(f"series {i}: the target is empty.")
            T = t.shape[1]
            pc, fc = s.past_covariates, s.future_covariates
            pc = None if pc is None else check_rows(pc, "past_covariates", i, None, T)
            fc = None if fc is None else check_rows(fc, "future_covariates", i, None, T + H, True)
            fc = None if fc is None else fc[:, : T + H]
            empty = np.nonzero(np.isnan(t).all(1))[0]
            if len(empty):
                raise ForecastError(
                    f"series {i}: target row {int(empty[0])} has no observed value (all NaN): "
                    "drop it or fill it."
                )
            diff = None if tta_diff else [False] * len(t)
            hr = history_rows(model, Series(t, pc, fc), H, diff)
            st = history_scale(model, hr)
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
            self.phases = PhasedRows(step, model.init_state(self.P * n), n, self.P, Q)
            self.phases.push(rows)

    def _checked(self, i: int, v, it: dict):
        """Series i's update ``v``, checked: (target (V_t, u), past (V_p, u) or None,
        future (V_f, u + H) or None)."""
        H = self.H
        v = v if isinstance(v, Series) else Series(v)
        t = check_rows(v.target, "target", i, it["V_t"], None)
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
        pc = None if not V_p else check_rows(v.past_covariates, "past_covariates", i, V_p, u)
        fc = None
        if has_future:
            V_f = len(it["future"])
            fc = check_rows(v.future_covariates, "future_covariates", i, V_f, u + H, True)
            fc = fc[:, : u + H]
        return t, pc, fc

    def update(self, new: Sequence) -> None:
        """Appends each series' new steps (None: nothing new); refuses a bad one, unchanged."""
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
            check_scaled(x, i)
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
            items = [self.items[i] for i in idx]
            rows = [
                history_rows(self.model, Series(*map(it.get, _KEYS)), H, it["diff"]) for it in items
            ]
            qs = predict_history(self.model, rows, H, [it["scale"] for it in items])
            for i, q in zip(idx, qs, strict=True):
                self.items[i]["result"] = q
        for i, it in enumerate(self.items):
            if "future" in it:
                out[i] = it["result"]
        return out

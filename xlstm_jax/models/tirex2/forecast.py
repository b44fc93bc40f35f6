"""TiRex-2's forecast: packing series into rows, one pass of the model, and the reference's
post-processor (``tirex2.TiRex2.predict`` of ``tirex-2`` 0.4.0, step for step).

``predict(model, series, H)`` for a list of ``Series`` (targets (V_t, T), optional past
covariates (V_p, T) and future covariates (V_f, >= T + H); a 1-D array is one target):

1. Trend differencing (``tta_diff``, ``postprocessor.py:242``): a target row whose
   z-scored values (the observed ones, float64) fit a line with ``|slope| * T >= 1.5`` and
   ``R^2 >= 0.87`` (``np.polyfit``; fewer than 4 values: no) is replaced by its first
   difference (``x_t - x_{t-1}``, the first step 0, NaN next to a missing value) and
   integrated back after the model from its last observed value.
2. Packing (``postprocessor.py:63``): per series the target rows, then the past
   covariates, then the future covariates; targets and past covariates right-padded with
   NaN for the H future steps; all left-padded with NaN to the batch's longest T; then
   right-padded by ``future_len - H`` and cut or left-padded (``pad_context``) to
   ``context_len + future_len`` (``tirex2.py:408``). Each row carries its series id and
   whether it is a target.
3. One model pass (``TiRex2.__call__``); the forecast is the last ``future_len`` positions
   before the final patch, cut to H (``tirex2.py:482``).
4. Post-processing (``postprocessor.py:178``), per target row with ``m`` the level at index
   ``Q // 2`` and ``t = 1..H``: a row not differenced becomes ``m + sqrt(0.90) * t^0.02 *
   (q - m)``; a differenced row ``last + cumsum(m) + sqrt(1.68) * sign(sum_t (q - m)) *
   sqrt(cumsum((q - m)^2)) * t^0.01``.
5. Sign-flip averaging (``tta_sign_flip``, ``tirex2.py:343``): the forecast of the negated
   series, negated, its levels mirrored (``q -> 1 - q``), averaged with the first.

Reference behaviour kept for parity (not "fixed"): quantiles can cross after step 4 (the
band terms are not monotone in q) and nothing sorts them; the "median" of step 4 is the
level at ``Q // 2`` whatever it is; a differenced row with a missing first value gets a
first difference of 0 there.

Horizons beyond ``future_len`` (the reference truncates them to it with a warning): the
future window of missing patches is extended to H rounded up to a patch, and the same single
pass forecasts it. That is TiRex's rollout over missing patches (each position predicts the
next patch from everything before it, the missing ones included) without its re-scaled,
shifted windows: the context stays ``context_len``, the scaling is the rows' own, and for
H <= ``future_len`` nothing changes. Beyond ``future_len`` the model forecasts further across
missing patches than it was trained to (the released model: 320 steps), so expect wider,
less reliable bands there; a differenced row's band sign sums the whole horizon, so its
first ``future_len`` steps can differ from a shorter forecast's.

Shape legend: R rows (all series' variates), V_t targets of a series, T its length, H the
horizon, Q quantile levels, L = context_len + future_len.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xlstm_jax.layers.config import ForecastError
from xlstm_jax.layers.series import Series
from xlstm_jax.models.tirex2.model import TiRex2

__all__ = [
    "MAX_HORIZON",
    "PostProcessorConfig",
    "Series",
    "detect_trends",
    "differenced",
    "pack",
    "postprocess",
    "predict",
    "window",
]

_F32 = np.float32
# The longest horizon ``predict`` accepts: each one costs a pass over context + H values, so
# this only keeps an absurd request from becoming an XLA shape that exhausts memory.
MAX_HORIZON = 100_000


@dataclass(frozen=True)
class PostProcessorConfig:
    """The reference's post-processor constants (``postprocessor.py:17``), which its
    checkpoints cannot change (``postprocessor_cfg`` is dropped)."""

    trend_min_r2: float = 0.87
    trend_threshold: float = 1.5
    trend_window: float = 1.0
    diff_band_exponent: float = 0.51
    diff_band_scale: float = 1.68
    raw_band_exponent: float = 0.52
    raw_band_scale: float = 0.90


POST = PostProcessorConfig()


class Packed(NamedTuple):
    """The model's input rows and what the post-processor needs: ``x`` (R, L) float32,
    ``target_mask`` (R,) bool, ``group`` (R,) int32 series ids, ``is_diff`` (R,) bool,
    ``last`` (R,) float32 last observed levels, ``targets`` each series' (first row,
    V_t)."""

    x: np.ndarray
    target_mask: np.ndarray
    group: np.ndarray
    is_diff: np.ndarray
    last: np.ndarray
    targets: list[tuple[int, int]]


def _ols_score(idx: np.ndarray, vals: np.ndarray, length: int) -> tuple[float, float]:
    """(|slope| * length, R^2) of a line fit to the z-scored ``vals`` at ``idx``."""
    std = float(np.std(vals, ddof=1))
    if std < 1e-12:
        return 0.0, 0.0
    z = (vals - np.mean(vals)) / std
    coeffs = np.polyfit(idx, z, 1)
    ss_res = float(np.sum((z - (coeffs[0] * idx + coeffs[1])) ** 2))
    ss_tot = float(np.sum((z - np.mean(z)) ** 2))
    return abs(float(coeffs[0])) * length, (1.0 - ss_res / ss_tot if ss_tot > 1e-12 else 0.0)


def detect_trends(t: np.ndarray, post: PostProcessorConfig = POST) -> list[bool]:
    """Per target row of t (V_t, T): whether it is differenced (module docstring, step 1)."""
    out = []
    for row in t:
        row = row[-max(1, round(post.trend_window * row.shape[-1])) :]
        observed = ~np.isnan(row)
        idx = np.nonzero(observed)[0].astype(np.float64)
        vals = row[observed].astype(np.float64)
        if len(vals) < 4:
            out.append(False)
            continue
        score, r2 = _ols_score(idx, vals, len(row))
        out.append(score >= post.trend_threshold and r2 >= post.trend_min_r2)
    return out


def _last_observed(t: np.ndarray) -> np.ndarray:
    """(V,) the last non-NaN value of each row of t (V, T); 0 for a row with none."""
    observed = ~np.isnan(t)
    last = t.shape[1] - 1 - np.argmax(observed[:, ::-1], axis=1)
    return np.where(observed.any(1), t[np.arange(len(t)), last], 0.0).astype(_F32)


def differenced(t: np.ndarray, diff: np.ndarray) -> np.ndarray:
    """t (V, T) with the rows where ``diff`` (V,) bool replaced by their first difference
    (module docstring, step 1)."""
    if not diff.any():
        return t
    d = np.concatenate([np.zeros_like(t[:, :1]), t[:, 1:] - t[:, :-1]], axis=1)
    return np.where(diff[:, None], d, t)


def _rows(a, name: str, i: int, length: int | None = None, at_least: bool = False):
    """``a`` as float32 (V, T) with the length checked."""
    try:
        a = np.asarray(a, np.float32)
    except (TypeError, ValueError) as e:
        raise ForecastError(f"series {i}: {name} is not numeric: {e}") from None
    if a.ndim == 1 and name == "target":
        a = a[None]
    if a.ndim != 2 or (name == "target" and a.shape[0] < 1):
        raise ForecastError(f"series {i}: {name} must be (variates, time); got shape {a.shape}.")
    if np.isinf(a).any():
        raise ForecastError(f"series {i}: {name} holds inf; replace it with NaN (missing).")
    if length is not None and (a.shape[1] < length if at_least else a.shape[1] != length):
        need = f"at least {length}" if at_least else f"{length}"
        raise ForecastError(
            f"series {i}: {name} has {a.shape[1]} steps; it needs {need} (the target's T"
            + (" plus the horizon H)." if at_least else ").")
        )
    return a


def pack(
    model: TiRex2, series: Sequence, H: int, *, tta_diff: bool, pad_context: bool = True
) -> Packed:
    """The rows of ``series`` for ``model`` and horizon ``H`` (module docstring, steps 1-2).

    Raises:
      ForecastError: no series, a target that is not (V_t, T) or (T,), empty, holding inf
        or a row with no observed value; covariates of another length than T (past) or
        shorter than T + H (future).
    """
    c = model.config
    if isinstance(series, np.ndarray | Series) or not len(series):
        raise ForecastError("series must be a non-empty list of Series or arrays.")
    items = []
    for i, s in enumerate(series):
        s = s if isinstance(s, Series) else Series(s)
        t = _rows(s.target, "target", i)
        if t.shape[1] == 0:
            raise ForecastError(f"series {i}: the target is empty.")
        empty = np.nonzero(np.isnan(t).all(1))[0]
        if len(empty):
            raise ForecastError(
                f"series {i}: target row {int(empty[0])} has no observed value (all NaN): "
                "drop it or fill it."
            )
        T = t.shape[1]
        pc = (
            None if s.past_covariates is None else _rows(s.past_covariates, "past_covariates", i, T)
        )
        fc = s.future_covariates
        fc = None if fc is None else _rows(fc, "future_covariates", i, T + H, True)[:, : T + H]
        diff = np.asarray(detect_trends(t) if tta_diff else [False] * len(t), bool)
        items.append((differenced(t, diff), pc, fc, diff, _last_observed(t)))
    longest = max(it[0].shape[1] for it in items)
    rows, tmask, group, is_diff, last, targets = [], [], [], [], [], []
    for g, (t_in, pc, fc, diff, lv) in enumerate(items):
        left = longest - t_in.shape[1]
        targets.append((len(tmask), len(t_in)))
        for block, right in ((t_in, H), (pc, H), (fc, 0)):
            if block is not None:
                rows.append(np.pad(block, ((0, 0), (left, right)), constant_values=np.nan))
        n_cov = sum(len(b) for b in (pc, fc) if b is not None)
        tmask += [True] * len(t_in) + [False] * n_cov
        group += [g] * (len(t_in) + n_cov)
        is_diff += list(diff) + [False] * n_cov
        last += list(lv) + [0.0] * n_cov
    x = np.concatenate(rows).astype(_F32)
    W = window(c, H)
    x = np.pad(x, ((0, 0), (0, W - H)), constant_values=np.nan)
    L = c.context_len + W
    if x.shape[1] < L and pad_context:
        x = np.pad(x, ((0, 0), (L - x.shape[1], 0)), constant_values=np.nan)
    x = x[:, -L:]
    return Packed(
        x,
        np.asarray(tmask),
        np.asarray(group, np.int32),
        np.asarray(is_diff),
        np.asarray(last, _F32),
        targets,
    )


def window(c, H: int) -> int:
    """The future window for horizon H: ``future_len`` (the reference's) up to it, beyond
    it H rounded up to a whole patch (the long-horizon extension, module docstring)."""
    return max(c.future_len, -(-H // c.patch_size) * c.patch_size)


def postprocess(
    q: jax.Array,
    is_diff: jax.Array,
    last: jax.Array,
    median_index: int,
    horizon: int | jax.Array | None = None,
    post: PostProcessorConfig = POST,
) -> jax.Array:
    """q (R, Q, W) -> (R, Q, W): the band calibration of plain rows and the integration of
    differenced ones (module docstring, step 4) for the horizon ``horizon`` <= W (None:
    W), whose steps are the first ``horizon`` of the window; the steps after it are
    garbage to cut. Each step depends on the steps before it only, except a differenced
    band's sign, which sums the whole horizon: so one program serves every horizon.
    Differentiable: the square root of a zero band (the median's) has a zero gradient."""
    m = q[:, median_index : median_index + 1]
    off = q - m
    t = jnp.arange(1, q.shape[-1] + 1, dtype=q.dtype)
    plain = m + (post.raw_band_scale**0.5 * t ** (post.raw_band_exponent - 0.5)) * off
    in_horizon = off if horizon is None else jnp.where(t <= horizon, off, 0.0)
    sign = jnp.sign(in_horizon.sum(-1, keepdims=True))
    ss = jnp.cumsum(off * off, axis=-1)
    rss = jnp.where(ss > 0, jnp.sqrt(jnp.maximum(ss, jnp.finfo(q.dtype).tiny)), 0.0)
    band = sign * rss * t ** (post.diff_band_exponent - 0.5)
    diffed = jnp.cumsum(m, axis=-1) + post.diff_band_scale**0.5 * band + last[:, None, None]
    return jnp.where(is_diff[:, None, None], diffed, plain)


def _forecast_rows(
    model: TiRex2, x, target_mask, group, is_diff, last, horizon, reverse: bool, W: int, scale=None
):
    """The packed rows -> (R, Q, W) post-processed quantiles (steps 3-4) over the future
    window W, of which the first ``horizon`` steps are the forecast; ``scale``: the rows'
    ``RowScale`` to use instead of their own (a stream's frozen scaling)."""
    c = model.config
    q = model(x, target_mask, group, reverse_pass=reverse, scale=scale)
    q = q[..., : -c.patch_size][..., -W:]
    return postprocess(q, is_diff, last, c.median_index, horizon)


# One program per batch shape and window, whatever the horizon within it (traced).
_forecast_rows_jit = nnx.jit(_forecast_rows, static_argnums=(7, 8))


def _once(model: TiRex2, series, H: int, tta_diff: bool, pad_context: bool) -> list[np.ndarray]:
    p = pack(model, series, H, tta_diff=tta_diff, pad_context=pad_context)
    R = len(p.x)
    pad = -R % 8  # rows padded to a multiple of 8, so few batch shapes compile
    x = np.pad(p.x, ((0, pad), (0, 0)), constant_values=np.nan)
    # Padding rows: no target, a series of their own (the variate mixer skips them).
    group = np.concatenate([p.group, -1 - np.arange(pad, dtype=np.int32)])
    tmask = np.pad(p.target_mask, (0, pad))
    F = model.config.future_len
    known = ~np.isnan(p.x[:, -F:]).all(1) & ~p.target_mask if p.x.shape[1] >= F else ~p.target_mask
    W = window(model.config, H)
    q = _forecast_rows_jit(
        model,
        jnp.asarray(x),
        jnp.asarray(tmask),
        jnp.asarray(group),
        jnp.asarray(np.pad(p.is_diff, (0, pad))),
        jnp.asarray(np.pad(p.last, (0, pad))),
        jnp.asarray(H, jnp.int32),
        bool(known.any()),
        W,
    )
    q = np.asarray(q)[..., :H]
    return [q[start : start + n] for start, n in p.targets]


def _mirror(levels: Sequence[float], tol: float = 1e-6) -> np.ndarray:
    """Index of each level's complement ``1 - q`` (sign-flip averaging).

    Raises:
      ForecastError: a level without a complement within ``tol``.
    """
    q = np.asarray(levels, np.float32)
    out = []
    for v in q:
        dist = np.abs(q - (1.0 - v))
        j = int(np.argmin(dist))
        if dist[j] > tol:
            raise ForecastError(
                f"tta_sign_flip needs symmetric quantile levels: {float(v):.4f} has no "
                f"1 - q among {list(map(float, q))}."
            )
        out.append(j)
    return np.asarray(out)


def _negated(s) -> Series:
    s = s if isinstance(s, Series) else Series(s)
    return Series(*(None if a is None else -np.asarray(a, np.float32) for a in s))


def predict(
    model: TiRex2,
    series: Sequence,
    prediction_length: int,
    *,
    tta_sign_flip: bool | None = None,
    tta_diff: bool | None = None,
    pad_context: bool = True,
) -> list[np.ndarray]:
    """Quantile forecasts of each series' targets, as the reference's ``TiRex2.predict``.

    Args:
      model: a ``TiRex2``.
      series: a list of ``Series`` (or arrays: the targets alone, (T,) or (V_t, T)); a
        context longer than ``context_len`` keeps its last values.
      prediction_length: H, 1 <= H <= ``MAX_HORIZON``; beyond ``future_len`` the future
        window is extended (module docstring).
      tta_sign_flip, tta_diff: the post-processor's options (module docstring); None: the
        config's.
      pad_context: left-pad short contexts to ``context_len`` (the reference's default);
        False pads only to the batch's longest series.

    Returns:
      Per series a float32 array (V_t, Q, H).

    Raises:
      ForecastError: H out of range, a bad series (``pack``), levels without complements
        for the sign flip.
    """
    c = model.config
    H = prediction_length
    if isinstance(H, bool) or not isinstance(H, int | np.integer) or not 1 <= H <= MAX_HORIZON:
        raise ForecastError(
            f"prediction_length must be an int in [1, {MAX_HORIZON:,}]; got {H!r}. (Beyond "
            f"future_len={c.future_len} the window of missing future patches is extended: "
            "see the module docstring.)"
        )
    H = int(H)
    diff = c.tta_diff if tta_diff is None else tta_diff
    flip = c.tta_sign_flip if tta_sign_flip is None else tta_sign_flip
    out = _once(model, series, H, diff, pad_context)
    if not flip:
        return out
    mirror = _mirror(c.quantiles)
    flipped = _once(model, [_negated(s) for s in series], H, diff, pad_context)
    return [(a + -b[:, mirror]) / 2 for a, b in zip(out, flipped, strict=True)]

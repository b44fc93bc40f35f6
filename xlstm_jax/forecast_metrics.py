"""Point and probabilistic forecast metrics of the M-competitions, GluonTS and fev (numpy only).

Shapes: ``H`` the forecast horizon, ``T`` the length of a series' training part, ``K`` the
number of quantile levels. Every per-series function scores ONE series and returns a float:

* ``smape(y, yhat)``: symmetric MAPE in percent, the M3 convention;
* ``mase(y, yhat, y_train, season)``: MAE scaled by the in-sample seasonal-naive MAE;
* ``pinball_loss(y, q, level)`` and ``crps_from_quantiles(y, quantiles, levels)``: the
  quantile (pinball) loss and the CRPS approximated by it.

``score_series`` computes all of them for one forecast; ``summarize`` averages lists of
those per subset (and over all subsets: every forecast point counts once, the convention
of the published M3 averages), and adds the scaled CRPS, the weighted quantile loss (WQL)
of GluonTS and fev: the CRPS summed over series and time divided by the summed ``|y|``.

Input policy, the same everywhere: arrays are converted to float64; NaN or infinity in any
input raises ``ValueError`` (the competition data has no missing values, so a non-finite
value is a forecaster's failure, which must be seen rather than averaged away); so do
shapes that do not match and empty arrays, with a message naming the argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "QUANTILE_LEVELS",
    "SeriesScores",
    "crps_from_quantiles",
    "mase",
    "mase_scale",
    "pinball_loss",
    "pool",
    "score_series",
    "smape",
    "summarize",
]

# The nine deciles every forecaster of the benchmark reports (TiRex's and GIFT-Eval's set).
QUANTILE_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _array(x, name: str) -> np.ndarray:
    """``x`` as a non-empty, finite float64 array (``ValueError`` naming ``name`` otherwise)."""
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape}); a metric needs at least one value")
    bad = ~np.isfinite(a)
    if bad.any():
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite value(s) (NaN or inf) of {a.size}; the "
            "metrics do not skip them: fix the forecaster or drop the series first"
        )
    return a


def _same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape, got {a.shape} and {b.shape}")


def smape(y, yhat) -> float:
    """Symmetric mean absolute percentage error in percent (M3; Makridakis and Hibon 2000).

    ``200 / H * sum_t |y_t - yhat_t| / (|y_t| + |yhat_t|)``, between 0 and 200. A point
    with ``y_t == yhat_t == 0`` (a 0/0 term) counts as 0: the forecast is exact there.

    Args:
        y: the actual values, shape (H,) (any shape works; the mean is over all elements).
        yhat: the point forecast, the same shape as ``y``.

    Returns:
        The sMAPE of the series, a float in [0, 200].
    """
    y, yhat = _array(y, "y"), _array(yhat, "yhat")
    _same_shape(y, yhat, "y and yhat")
    num = np.abs(y - yhat)
    den = np.abs(y) + np.abs(yhat)
    # den == 0 only where y == yhat == 0, so num is 0 there too: the term is 0.
    terms = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return float(200.0 * terms.mean())


def mase_scale(y_train, season: int) -> float:
    """The in-sample MAE of the seasonal-naive forecast: MASE's denominator.

    ``mean_{t > m} |y_t - y_{t-m}|`` over the training part, with lag ``m = season``; when
    the training part is too short for one seasonal difference (``T < season + 1``) the lag
    is 1 instead (the naive forecast), the usual fallback (M4, GluonTS).

    Args:
        y_train: the training part of the series, shape (T,), T >= 2.
        season: the seasonal period (1 for yearly or non-seasonal data, 4 quarterly, ...).

    Returns:
        The scale, >= 0 (0 for a training part that repeats exactly with that lag).
    """
    y_train = _array(y_train, "y_train")
    if y_train.ndim != 1:
        raise ValueError(f"y_train must be one series, shape (T,), got {y_train.shape}")
    if int(season) != season or season < 1:
        raise ValueError(f"season must be a positive integer, got {season!r}")
    lag = int(season) if y_train.size >= season + 1 else 1
    if y_train.size < lag + 1:
        raise ValueError(
            f"y_train has {y_train.size} value(s); the naive in-sample error needs at least 2"
        )
    return float(np.mean(np.abs(y_train[lag:] - y_train[:-lag])))


def mase(
    y,
    yhat,
    y_train,
    season: int,
    *,
    zero_scale: Literal["raise", "nan"] = "raise",
) -> float:
    """Mean absolute scaled error (Hyndman and Koehler 2006), as in M4.

    ``mean_t |y_t - yhat_t| / mase_scale(y_train, season)``: the forecast's MAE over the
    in-sample MAE of the seasonal-naive forecast with lag ``season`` (lag 1 when the
    training part is shorter than ``season + 1``; see ``mase_scale``).

    A zero scale (the training part repeats exactly) would give inf or 0/0. It raises
    ``ValueError`` by default; ``zero_scale="nan"`` returns NaN instead, which ``summarize``
    leaves out of the MASE average (its ``mase_points`` counts the rest). No series of M1,
    M3 or Tourism has a zero scale.

    Args:
        y: the actual values, shape (H,).
        yhat: the point forecast, the same shape as ``y``.
        y_train: the training part of the series, shape (T,).
        season: the seasonal period (1 yearly or non-seasonal, 4 quarterly, 12 monthly).
        zero_scale: ``"raise"`` or ``"nan"``: what a zero denominator gives.

    Returns:
        The MASE of the series (1.0 = as good in MAE as the in-sample seasonal naive).
    """
    y, yhat = _array(y, "y"), _array(yhat, "yhat")
    _same_shape(y, yhat, "y and yhat")
    if zero_scale not in ("raise", "nan"):
        raise ValueError(f"zero_scale must be 'raise' or 'nan', got {zero_scale!r}")
    scale = mase_scale(y_train, season)
    if scale == 0.0:
        if zero_scale == "nan":
            return float("nan")
        raise ValueError(
            f"MASE is undefined: the in-sample seasonal-naive MAE (lag {season}) of y_train is "
            "0, the training part repeats exactly; pass zero_scale='nan' to score it as NaN"
        )
    return float(np.mean(np.abs(y - yhat)) / scale)


def _level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"a quantile level must lie strictly between 0 and 1, got {level}")
    return level


def pinball_loss(y, q, level: float) -> float:
    """The pinball (quantile) loss of the ``level`` quantile forecast ``q``, averaged.

    ``mean_t max(level * (y_t - q_t), (level - 1) * (y_t - q_t))``: under-forecasts cost
    ``level`` per unit, over-forecasts ``1 - level``. At ``level = 0.5`` it is half the MAE.

    Args:
        y: the actual values, shape (H,) (any shape; the mean is over all elements).
        q: the ``level`` quantile forecast, the same shape as ``y``.
        level: the quantile level, in (0, 1).

    Returns:
        The mean pinball loss, >= 0, in the units of ``y``.
    """
    y, q = _array(y, "y"), _array(q, "q")
    _same_shape(y, q, "y and q")
    level = _level(level)
    diff = y - q
    return float(np.mean(np.maximum(level * diff, (level - 1.0) * diff)))


def _levels(levels) -> np.ndarray:
    levels = _array(levels, "levels")
    if levels.ndim != 1:
        raise ValueError(f"levels must be a 1-D sequence, got shape {levels.shape}")
    for level in levels:
        _level(level)
    if np.unique(levels).size != levels.size:
        raise ValueError(f"levels must be distinct, got {levels.tolist()}")
    return levels


def crps_from_quantiles(y, quantiles, levels) -> float:
    """The CRPS approximated by the quantile loss at ``levels`` (as in GluonTS and fev).

    ``CRPS = integral_0^1 2 * pinball_a da``, approximated on the K levels by
    ``(1/K) sum_k 2 * pinball_loss(y, quantiles[:, k], levels[k])``, i.e. 2 * the mean
    over levels and over the horizon of the pinball loss. With a single level 0.5 it is
    the MAE of the median.

    Args:
        y: the actual values, shape (H,).
        quantiles: the quantile forecasts, shape (H, K): ``quantiles[t, k]`` is the
            ``levels[k]`` quantile at step t.
        levels: the K distinct quantile levels, each in (0, 1), e.g. ``QUANTILE_LEVELS``.

    Returns:
        The approximate CRPS of the series, >= 0, in the units of ``y``.
    """
    y, quantiles, levels = _array(y, "y"), _array(quantiles, "quantiles"), _levels(levels)
    if quantiles.shape != y.shape + levels.shape:
        raise ValueError(
            f"quantiles must have shape y.shape + (len(levels),) = {y.shape + levels.shape}, "
            f"got {quantiles.shape}"
        )
    diff = y[..., None] - quantiles
    pinball = np.maximum(levels * diff, (levels - 1.0) * diff)
    return float(2.0 * pinball.mean())


@dataclass(frozen=True)
class SeriesScores:
    """The scores of one forecast; ``summarize`` averages a list of them.

    Attributes:
        smape: sMAPE of the point forecast, percent.
        mase: MASE of the point forecast (NaN only for an undefined MASE scored with
            ``zero_scale="nan"``).
        crps: the quantile-loss CRPS, in the series' units.
        abs_target: ``mean_t |y_t|`` over the horizon (the weight of the scaled CRPS).
        horizon: H, the number of forecast points.
    """

    smape: float
    mase: float
    crps: float
    abs_target: float
    horizon: int


def score_series(
    y,
    point,
    quantiles,
    levels,
    y_train,
    season: int,
    *,
    zero_scale: Literal["raise", "nan"] = "raise",
) -> SeriesScores:
    """sMAPE, MASE (of ``point``) and the CRPS (of ``quantiles``) of one forecast.

    Args:
        y: the actual values, shape (H,).
        point: the point forecast (the median, by the benchmark's convention), shape (H,).
        quantiles: shape (H, K), the ``levels`` quantiles.
        levels: the K quantile levels.
        y_train: the training part, shape (T,).
        season: the seasonal period for MASE.
        zero_scale: see ``mase``.

    Returns:
        The ``SeriesScores``.
    """
    y = _array(y, "y")
    if y.ndim != 1:
        raise ValueError(f"y must be one series, shape (H,), got {y.shape}")
    return SeriesScores(
        smape=smape(y, point),
        mase=mase(y, point, y_train, season, zero_scale=zero_scale),
        crps=crps_from_quantiles(y, quantiles, levels),
        abs_target=float(np.mean(np.abs(y))),
        horizon=int(y.size),
    )


def _summary(scores: Sequence[SeriesScores]) -> dict[str, float]:
    if not scores:
        raise ValueError("cannot summarize an empty list of scores")
    h = np.array([s.horizon for s in scores], dtype=np.float64)
    smapes = np.array([s.smape for s in scores])
    mases = np.array([s.mase for s in scores])
    crps = np.array([s.crps for s in scores])
    abs_target = np.array([s.abs_target for s in scores])
    defined = ~np.isnan(mases)
    # Every forecast point counts once: a series weighs its horizon H (within a subset all
    # H are equal, so this is the plain mean over series).
    n_points = float(h.sum())
    return _ratios(
        n_series=float(len(scores)),
        n_points=n_points,
        mase_points=float(h[defined].sum()),
        smape_sum=float(np.sum(h * smapes)),
        mase_sum=float(np.sum(h[defined] * mases[defined])),
        crps_sum=float(np.sum(h * crps)),
        abs_sum=float(np.sum(h * abs_target)),
    )


def _ratios(n_series, n_points, mase_points, smape_sum, mase_sum, crps_sum, abs_sum):
    """A summary from its sums over points (so that summaries pool exactly)."""
    return {
        "n_series": n_series,
        "n_points": n_points,
        "smape": smape_sum / n_points,
        # Points of series with an undefined MASE (NaN) are left out of its mean.
        "mase": mase_sum / mase_points if mase_points > 0 else float("nan"),
        "mase_points": mase_points,
        "crps": crps_sum / n_points,
        "abs_target": abs_sum / n_points,
        # sum_{i,t} |y| = 0 (all-zero targets) leaves WQL undefined: NaN rather than inf.
        "scaled_crps": crps_sum / abs_sum if abs_sum > 0 else float("nan"),
    }


def pool(summaries: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The summary of the union of disjoint groups, from their summaries alone (exact).

    ``summarize``'s total is this over its subsets; a benchmark that scored subsets in
    separate runs pools their stored summaries the same way.

    Args:
        summaries: summaries as ``summarize`` returns them (non-empty).

    Returns:
        The pooled summary, with the same keys.
    """
    if not summaries:
        raise ValueError("cannot pool an empty list of summaries")

    def total(key, weight=None):
        return float(sum(s[key] * (s[weight] if weight else 1.0) for s in summaries))

    return _ratios(
        n_series=total("n_series"),
        n_points=total("n_points"),
        mase_points=total("mase_points"),
        smape_sum=total("smape", "n_points"),
        mase_sum=float(sum(s["mase"] * s["mase_points"] for s in summaries if s["mase_points"])),
        crps_sum=total("crps", "n_points"),
        abs_sum=total("abs_target", "n_points"),
    )


def summarize(
    scores: Mapping[str, Sequence[SeriesScores]], *, total: str | None = "all"
) -> dict[str, dict[str, float]]:
    """Averages per subset, and over all subsets together under the key ``total``.

    For a group of series i with horizons H_i (one subset, or all of them pooled):

    * ``smape``, ``mase``, ``crps``: ``sum_i H_i * metric_i / sum_i H_i``, the mean over
      every forecast point. Within a subset (one horizon) it is the mean over series; over
      M3's four subsets it is the published "average" (Theta: 16.90, 8.96, 13.85 and 4.41 on
      645 x 6, 756 x 8, 1428 x 18 and 174 x 8 points give 13.01). Undefined MASEs (NaN)
      are left out of ``mase`` (``mase_points`` counts the points it has).
    * ``scaled_crps``: the weighted quantile loss of GluonTS (``mean_wQuantileLoss``) and
      fev (WQL), ``sum_{i,t,k} 2 * pinball / (K * sum_{i,t} |y_it|)``
      ``= sum_i H_i * crps_i / sum_i H_i * abs_target_i``; NaN if every target is 0. It is
      scale-free but large series weigh more.
    * ``abs_target``: the mean ``|y|`` over the points (the scaled CRPS's denominator).
    * ``n_series``, ``n_points`` (sum of H_i), ``mase_points`` (the points with a defined
      MASE): counts, as floats.

    Args:
        scores: subset name -> the scores of its series (non-empty).
        total: the key of the pooled summary, or None for none.

    Returns:
        subset name (and ``total``) -> metric name -> value.
    """
    if total is not None and total in scores:
        raise ValueError(f"a subset is named {total!r}, the key of the total; pass another total")
    out = {name: _summary(list(group)) for name, group in scores.items()}
    if total is not None:
        out[total] = pool(list(out.values()))
    return out

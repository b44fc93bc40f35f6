"""Forecast metrics against values worked out by hand, and their input policy."""

from __future__ import annotations

import numpy as np
import pytest

from xlstm_jax.forecast_metrics import (
    QUANTILE_LEVELS,
    SeriesScores,
    crps_from_quantiles,
    mase,
    mase_scale,
    pinball_loss,
    pool,
    score_series,
    smape,
    summarize,
)

# CI runs these in leg 1 only: the metrics: NumPy, not JAX.
pytestmark = pytest.mark.one_jax


def test_smape_is_the_m3_percent_formula():
    # |1-2|/(1+2) = 1/3, |4-2|/(4+2) = 1/3, |10-10|/20 = 0 -> 200 * (2/3) / 3 = 44.44...
    assert smape([1.0, 4.0, 10.0], [2.0, 2.0, 10.0]) == pytest.approx(400 / 9)
    # A sign error is the worst case: |1-(-1)| / (1+1) = 1 -> 200.
    assert smape([1.0], [-1.0]) == pytest.approx(200.0)


def test_smape_counts_an_exact_zero_forecast_of_zero_as_zero_error():
    # Terms: 0/0 -> 0, |0-1|/(0+1) = 1 -> 200 * (0 + 1) / 2 = 100.
    assert smape([0.0, 0.0], [0.0, 1.0]) == pytest.approx(100.0)
    assert smape([0.0, 0.0], [0.0, 0.0]) == 0.0


def test_mase_divides_by_the_seasonal_naive_in_sample_mae():
    y_train = [1.0, 2.0, 3.0, 5.0, 4.0, 8.0]
    # season 2: |3-1|, |5-2|, |4-3|, |8-5| = 2, 3, 1, 3 -> scale 9/4 = 2.25.
    assert mase_scale(y_train, 2) == pytest.approx(2.25)
    # Forecast errors |10-9|, |6-9| = 1, 3 -> MAE 2 -> MASE 2 / 2.25.
    assert mase([10.0, 6.0], [9.0, 9.0], y_train, 2) == pytest.approx(2 / 2.25)
    # season 1: |1|, |1|, |2|, |-1|, |4| -> 9/5 = 1.8.
    assert mase([10.0, 6.0], [9.0, 9.0], y_train, 1) == pytest.approx(2 / 1.8)


def test_mase_falls_back_to_lag_one_when_the_training_part_is_shorter_than_a_season():
    # T = 4 < season + 1 = 13: lag 1, |3-1|, |2-3|, |6-2| = 2, 1, 4 -> 7/3.
    assert mase_scale([1.0, 3.0, 2.0, 6.0], 12) == pytest.approx(7 / 3)
    # T = 13 = season + 1 is enough for one seasonal difference: |14 - 1| = 13.
    assert mase_scale([1.0] + [5.0] * 11 + [14.0], 12) == pytest.approx(13.0)
    with pytest.raises(ValueError, match="at least 2"):
        mase_scale([1.0], 1)


def test_mase_of_a_training_part_without_seasonal_change_raises_or_is_nan():
    y_train = [1.0, 2.0, 1.0, 2.0]  # repeats with period 2: seasonal-naive MAE 0
    with pytest.raises(ValueError, match="MASE is undefined.*zero_scale='nan'"):
        mase([1.0], [2.0], y_train, 2)
    assert np.isnan(mase([1.0], [2.0], y_train, 2, zero_scale="nan"))
    # With lag 1 the same series has a scale: |1| * 3 / 3 = 1 -> MAE 1 / 1.
    assert mase([1.0], [2.0], y_train, 1) == pytest.approx(1.0)


def test_pinball_loss_weights_under_and_over_forecasts_by_the_level():
    # level 0.9: y - q = 2 (under) costs 0.9 * 2 = 1.8; y - q = -1 (over) costs 0.1 * 1 = 0.1.
    assert pinball_loss([3.0, 1.0], [1.0, 2.0], 0.9) == pytest.approx((1.8 + 0.1) / 2)
    # level 0.5 is half the absolute error: (|2| + |-1|) / 2 * 0.5 = 0.75.
    assert pinball_loss([3.0, 1.0], [1.0, 2.0], 0.5) == pytest.approx(0.75)


def test_crps_from_quantiles_is_twice_the_mean_pinball_loss():
    y = [2.0, 4.0]
    # Columns: levels 0.1, 0.5, 0.9.
    quantiles = [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]
    # t=0 (y=2): 0.1*(2-1) = 0.1; 0; (0.9-1)*(2-3) = 0.1          -> 0.2
    # t=1 (y=4): 0.1*3 = 0.3;  0.5*2 = 1.0;  0.9*1 = 0.9          -> 2.2
    # 2 * (0.2 + 2.2) / 6 points = 0.8
    assert crps_from_quantiles(y, quantiles, [0.1, 0.5, 0.9]) == pytest.approx(0.8)
    # One level 0.5 is the MAE of the median: (|2-2| + |4-2|) / 2 = 1.
    assert crps_from_quantiles(y, [[2.0], [2.0]], [0.5]) == pytest.approx(1.0)


def test_crps_of_a_perfect_degenerate_forecast_is_zero():
    y = np.array([1.0, 5.0, 2.0])
    quantiles = np.repeat(y[:, None], len(QUANTILE_LEVELS), axis=1)
    assert crps_from_quantiles(y, quantiles, QUANTILE_LEVELS) == 0.0


def test_score_series_and_summarize_per_subset_and_pooled():
    levels = [0.1, 0.5, 0.9]
    s = score_series(
        [2.0, 4.0], [2.0, 2.0], [[1.0, 2.0, 3.0]] * 2, levels, [1.0, 2.0, 4.0], season=1
    )
    # sMAPE: 0 and |4-2|/6 -> 200 * (1/3) / 2 = 33.3; MASE: MAE 1 / ((1 + 2) / 2) = 2/3;
    # CRPS 0.8 (above); mean |y| = 3.
    assert s == SeriesScores(
        smape=pytest.approx(100 / 3),
        mase=pytest.approx(2 / 3),
        crps=pytest.approx(0.8),
        abs_target=3.0,
        horizon=2,
    )
    a = SeriesScores(smape=10.0, mase=1.0, crps=2.0, abs_target=10.0, horizon=2)
    b = SeriesScores(smape=20.0, mase=3.0, crps=1.0, abs_target=40.0, horizon=2)
    c = SeriesScores(smape=40.0, mase=float("nan"), crps=3.0, abs_target=5.0, horizon=6)
    out = summarize({"x": [a, b], "y": [c]})
    assert out["x"]["smape"] == pytest.approx(15.0)
    assert out["x"]["mase"] == pytest.approx(2.0)
    # WQL: (2*2 + 2*1) / (2*10 + 2*40) = 6 / 100.
    assert out["x"]["scaled_crps"] == pytest.approx(0.06)
    assert out["x"]["n_series"] == 2 and out["x"]["n_points"] == 4
    # Pooled, each point once: sMAPE (2*10 + 2*20 + 6*40) / 10 = 30; MASE leaves c out:
    # (2*1 + 2*3) / 4 = 2; WQL (4 + 2 + 18) / (20 + 80 + 30) = 24 / 130.
    assert out["all"]["smape"] == pytest.approx(30.0)
    assert out["all"]["mase"] == pytest.approx(2.0)
    assert out["all"]["mase_points"] == 4
    assert out["all"]["scaled_crps"] == pytest.approx(24 / 130)
    assert set(summarize({"x": [a]}, total=None)) == {"x"}
    # Pooling the subsets' summaries is exact: the same as summarizing all series at once.
    at_once = summarize({"xy": [a, b, c]}, total=None)["xy"]
    assert pool([out["x"], out["y"]]) == pytest.approx(at_once)
    assert pool([out["x"], out["y"]]) == pytest.approx(out["all"])
    with pytest.raises(ValueError, match="empty list of summaries"):
        pool([])


def test_the_pooled_average_reproduces_the_published_m3_theta_smape():
    # Makridakis and Hibon (2000): Theta 16.90 / 8.96 / 13.85 / 4.41 on yearly (645 series,
    # H 6), quarterly (756, 8), monthly (1428, 18), other (174, 8); average 13.01.
    subsets = {"yearly": (16.90, 645, 6), "quarterly": (8.96, 756, 8)}
    subsets |= {"monthly": (13.85, 1428, 18), "other": (4.41, 174, 8)}
    scores = {
        name: [SeriesScores(value, 1.0, 1.0, 1.0, h)] * n for name, (value, n, h) in subsets.items()
    }
    assert summarize(scores)["all"]["smape"] == pytest.approx(13.01, abs=0.005)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: smape([1.0, 2.0], [1.0]), r"y and yhat must have the same shape.*\(2,\).*\(1,\)"),
        (lambda: mase([1.0], [1.0, 2.0], [1.0, 2.0], 1), "y and yhat must have the same shape"),
        (lambda: pinball_loss([1.0], [1.0, 2.0], 0.5), "y and q must have the same shape"),
        (
            lambda: crps_from_quantiles([1.0, 2.0], [[1.0, 2.0]] * 2, QUANTILE_LEVELS),
            r"quantiles must have shape .*\(2, 9\), got \(2, 2\)",
        ),
        (lambda: mase_scale([[1.0, 2.0]], 1), r"y_train must be one series"),
        (lambda: smape([], []), "y is empty"),
        (lambda: pinball_loss([1.0], [1.0], 1.0), "strictly between 0 and 1"),
        (lambda: crps_from_quantiles([1.0], [[1.0, 1.0]], [0.5, 0.5]), "distinct"),
        (lambda: mase([1.0], [1.0], [1.0, 2.0], 0), "season must be a positive integer"),
        (lambda: summarize({"x": []}), "empty list of scores"),
        (lambda: summarize({"all": []}), "key of the total"),
    ],
)
def test_bad_shapes_and_arguments_raise_value_error_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inputs_raise_instead_of_being_skipped(bad):
    with pytest.raises(ValueError, match="yhat has 1 non-finite value"):
        smape([1.0, 2.0], [1.0, bad])
    with pytest.raises(ValueError, match="y_train has 1 non-finite"):
        mase([1.0], [1.0], [1.0, bad, 3.0], 1)
    with pytest.raises(ValueError, match="quantiles has 1 non-finite"):
        crps_from_quantiles([1.0], [[bad]], [0.5])

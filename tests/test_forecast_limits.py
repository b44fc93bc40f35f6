"""Forecasting refuses what it cannot compute: series too large to scale in float32, absurd
horizons, and (in ``python -m train.forecast``) any non-finite forecast before writing."""

from __future__ import annotations

import numpy as np
import pytest
from test_forecast_cli import model_path, run_cli, table, tiny, write  # noqa: F401

from xlstm_jax import MAX_PREDICTION_LENGTH, ForecastError
from xlstm_jax.models.tirex.forecast import context_windows, forecast, instance_scale, max_magnitude

pytestmark = pytest.mark.one_jax


@pytest.mark.parametrize("big", [1e25, 1e308, -3e17])
def test_a_series_too_large_for_float32_scaling_is_refused_naming_it(big):
    with pytest.raises(ForecastError) as e:
        context_windows([np.arange(5.0), [1.0, big, np.nan]], 2048)
    msg = str(e.value)
    assert msg.startswith(f"series 1 reaches magnitude {abs(big):.3g}") and "\n" not in msg
    assert "|value| <= 1.44e+17" in msg and "divide it by 1e6" in msg


def test_the_largest_allowed_values_scale_to_finite_numbers():
    L = 16
    m = np.float32(max_magnitude(L) * (1 - 1e-6))
    worst = np.full((3, L), -m, np.float32)
    worst[0, 0] = m  # one value 2M from a mean near -M
    worst[1, ::2] = m  # half +M, half -M
    worst[2, :8] = np.nan
    context_windows(list(worst), L)  # accepted
    scaled, st = instance_scale(worst)
    assert np.isfinite(np.asarray(st.scale)).all() and np.isfinite(np.asarray(st.loc)).all()
    assert np.isfinite(np.asarray(scaled)[~np.isnan(worst)]).all()
    with pytest.raises(ForecastError, match="reaches magnitude"):
        context_windows([[np.float64(m) * 1.01]], L)
    context_windows([[1e-30, 3e16, np.nan]], 2048)  # ordinary ranges are untouched


def test_a_horizon_beyond_the_limit_is_refused_before_any_compute(tiny):  # noqa: F811
    with pytest.raises(ForecastError, match="prediction_length 2000000000 is beyond the limit"):
        forecast(tiny, [np.arange(8.0)], 2_000_000_000)
    assert MAX_PREDICTION_LENGTH == 1_000_000


def cli_args(model, path, out, horizon):
    return ("--model", model, "--input", path, "--horizon", horizon, "--output", out)


def test_the_cli_refuses_a_huge_series_naming_it_with_exit_2(model_path, tmp_path, capsys):  # noqa: F811
    path = write(tmp_path, "a,b,c\n1,2,3\n2,3,1e25\n3,4,5\n", "big.csv")
    out = tmp_path / "fc.csv"
    assert run_cli(*cli_args(model_path, path, out, 4)) == 2
    err = capsys.readouterr().err
    assert "series 2 ('c') reaches magnitude 1e+25" in err and "divide it by 1e6" in err
    assert "Traceback" not in err and not out.exists()


def test_the_cli_refuses_horizons_that_cannot_fit_with_exit_2(
    model_path,  # noqa: F811
    table,  # noqa: F811
    tmp_path,
    capsys,
    monkeypatch,
):
    from train.loop import memory

    out = tmp_path / "fc.csv"
    assert run_cli(*cli_args(model_path, table, out, 2_000_000_000)) == 2
    assert "--horizon must be >= 1 and <= 1,000,000 (steps" in capsys.readouterr().err
    monkeypatch.setattr(memory, "machine_ram", lambda: (10**8, 10**8))
    assert run_cli(*cli_args(model_path, table, out, 1_000_000)) == 2
    err = capsys.readouterr().err
    assert "3 series x 1000000 steps x 9 levels need about 1.0 GB" in err
    assert "more than the 95.4 MB this machine has available" in err
    assert "at most about 9" in err and "Traceback" not in err and not out.exists()


def test_the_cli_never_writes_a_non_finite_forecast(
    model_path,  # noqa: F811
    table,  # noqa: F811
    tmp_path,
    capsys,
    monkeypatch,
):
    import xlstm_jax.models.tirex.forecast as tirex_forecast

    def broken(model, contexts, h, quantile_levels=None, batch_size=256):
        q = np.zeros((len(contexts), h, 9), np.float32)
        q[1, -1, 3] = np.inf
        return tirex_forecast.Forecast(q, q[:, :, 4], tuple(q / 10 for q in range(1, 10)))

    monkeypatch.setattr(tirex_forecast, "forecast", broken)
    out = tmp_path / "fc.csv"
    assert run_cli(*cli_args(model_path, table, out, 4)) == 2
    err = capsys.readouterr().err
    assert "the forecast of series 'b' (1 of 3 series) holds inf or NaN" in err
    assert "nothing was written" in err and not out.exists()


@pytest.mark.parametrize(
    ("stamps", "dtype", "fits"),
    [
        ([2**63 - 40, 2**63 - 30, 2**63 - 20], np.int64, 1),  # int64 would wrap
        (["2262-03-01T00", "2262-04-01T00"], "datetime64[ns]", 0),  # past year 2262
        (["2262-04-01T00", "2262-04-05T00"], "datetime64[ns]", 1),
        ([1.6e308, 1.7e308], np.float64, 0),  # float64 would overflow
    ],
)
def test_timestamps_that_cannot_be_continued_are_refused_not_wrapped(stamps, dtype, fits):
    from train.data.series.timestamps import future_timestamps
    from train.errors import DataError

    ts = np.array(stamps, dtype=dtype)
    assert future_timestamps(ts, fits) is None or len(future_timestamps(ts, fits)) == fits
    with pytest.raises(DataError, match=f"from step {fits + 1} on they would wrap or repeat"):
        future_timestamps(ts, 5)


def test_the_cli_refuses_timestamps_near_the_int64_limit_before_any_compute(
    model_path,  # noqa: F811
    tmp_path,
    capsys,
):
    top = 2**63 - 1
    rows = "".join(f"{top - 40 + 10 * i},{i}\n" for i in range(4))
    path = write(tmp_path, "timestamp,a\n" + rows, "late.csv")
    out = tmp_path / "fc.csv"
    assert run_cli(*cli_args(model_path, path, out, 3)) == 2
    err = capsys.readouterr().err
    assert "series 'a': the 3 timestamps after the last one" in err
    assert "Forecast at most 1 step (--horizon)" in err and "Traceback" not in err
    assert not out.exists()


def test_integer_timestamps_past_int64_are_refused_when_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from train.data.series.tables import read_series
    from train.errors import DataError

    csv = write(tmp_path, "timestamp,a\n9223372036854775808,1\n9223372036854777808,2\n", "x.csv")
    with pytest.raises(DataError, match=r"beyond what float64 holds exactly \(2\*\*53"):
        read_series(csv, "auto")  # arrow reads these integers as float64, rounded
    for top, ok in ((2**64 - 10, False), (2**40, True)):
        path = tmp_path / "u.parquet"
        stamps = pa.array(np.array([top - 10, top], dtype=np.uint64))
        pq.write_table(pa.table({"timestamp": stamps, "a": [1.0, 2.0]}), path)
        if ok:
            assert read_series(path, "auto")[0].timestamps.dtype == np.int64
        else:
            with pytest.raises(DataError, match="beyond what int64 holds"):
                read_series(path, "auto")

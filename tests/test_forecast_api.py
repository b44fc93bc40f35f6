"""The one forecasting API (``xlstm_jax.forecast``, ``forecast_frame``, ``load_forecaster``)
over TiRex and TiRex-2: per-series results in the right rows and levels, TiRex-2's long
horizons, the long-format DataFrame adapter, and loading by path."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx
from helpers import tirex2_kwargs

import xlstm_jax
from xlstm_jax import ForecastError, Series, TiRex, TiRex2, TiRex2Config, TiRexConfig
from xlstm_jax.models.tirex import forecast as tirex_forecast
from xlstm_jax.models.tirex2.convert import save_folder, to_state_dict
from xlstm_jax.models.tirex2.forecast import predict

P, FUT = 4, 8
LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _walk(rng, *shape):
    return (rng.normal(size=shape).cumsum(-1) + 10).astype(np.float32)


@pytest.fixture(scope="module")
def tirex():
    cfg = TiRexConfig(
        input_patch_size=P,
        output_patch_size=P,
        embedding_dim=16,
        num_heads=2,
        num_blocks=1,
        input_ff_dim=16,
        train_ctx_len=32,
        impl="xla",
    )
    return TiRex(cfg, rngs=nnx.Rngs(0))


def _tirex2_config(**kw) -> TiRex2Config:
    return TiRex2Config.from_dict(tirex2_kwargs(P=P, fut=FUT, tta_diff=False), impl="xla", **kw)


@pytest.fixture(scope="module")
def tirex2():
    return TiRex2(_tirex2_config(), rngs=nnx.Rngs(1))


def test_tirex_results_per_series_in_order(tirex):
    rng = np.random.default_rng(0)
    one, two = _walk(rng, 50), _walk(rng, 2, 40)
    out = xlstm_jax.forecast(tirex, [one, Series(two)], 6, quantile_levels=[0.9, 0.1, 0.5])
    rows = tirex_forecast.forecast(tirex, [one, two[0], two[1]], 6)  # (3, H, Q) batched
    assert [o.quantiles.shape for o in out] == [(1, 3, 6), (2, 3, 6)]
    want = rows.quantiles[:, :, [8, 0, 4]].transpose(0, 2, 1)
    np.testing.assert_array_equal(np.concatenate([o.quantiles for o in out]), want)
    np.testing.assert_array_equal(out[1].mean, rows.mean[1:])
    assert out[0].quantile_levels == (0.9, 0.1, 0.5)


@pytest.mark.parametrize(
    ("series", "H", "kw", "match"),
    [
        ([Series(np.ones((1, 20)), past_covariates=np.ones((1, 20)))], 4, {}, "covariates"),
        (
            [np.ones(9), Series(np.array([[1.0, 2.0], [1.0, np.inf]]))],
            4,
            {},
            "series 1, target row 1",
        ),
        (np.ones(20), 4, {}, "list"),
        ([np.ones(20)], 0, {}, "prediction_length"),
        ([np.ones(20)], 4, {"quantile_levels": [0.25]}, "0.25"),
        ([np.ones(20)], 4, {"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_calls_are_one_clear_error(tirex, series, H, kw, match):
    with pytest.raises(ForecastError, match=match):
        xlstm_jax.forecast(tirex, series, H, **kw)


def test_not_a_forecaster_is_one_clear_error():
    with pytest.raises(ForecastError, match="not a forecaster"):
        xlstm_jax.forecast(object(), [np.ones(8)], 2)


def test_tirex2_results_are_predicts_and_long_horizons_extend_it(tirex2):
    rng = np.random.default_rng(1)
    items = [_walk(rng, 30), Series(_walk(rng, 2, 25), past_covariates=_walk(rng, 1, 25))]
    out = xlstm_jax.forecast(tirex2, items, FUT, quantile_levels=[0.1, 0.5, 0.9])
    want = predict(tirex2, items, FUT)
    for o, w in zip(out, want, strict=True):
        np.testing.assert_array_equal(o.quantiles, w[:, [0, 4, 8]])
        np.testing.assert_array_equal(o.mean, w[:, 4])
    # Beyond future_len: the window of missing patches grows; the steps within future_len
    # are the same forecast (no trend differencing here, no future covariates whose
    # scaling the longer row would change), up to float32 rounding.
    long = xlstm_jax.forecast(tirex2, items, 2 * FUT + 3)
    for o, w in zip(long, want, strict=True):
        assert o.quantiles.shape == (w.shape[0], 9, 2 * FUT + 3)
        assert np.isfinite(o.quantiles).all()
        scale = np.abs(w).max()
        np.testing.assert_allclose(o.quantiles[..., :FUT], w, atol=2e-6 * scale, rtol=0)


def _frames(rng):
    import pandas as pd

    rows, future = [], []
    for key, T in (("b", 14), ("a", 11)):  # ids out of order: kept in order of appearance
        y = _walk(rng, 2, T)
        cov = _walk(rng, 1, T + 5)
        rows.append(
            pd.DataFrame(
                {
                    "unique_id": key,
                    "ds": np.arange(T) * 2,
                    "y": y[0],
                    "z": y[1],
                    "price": _walk(rng, T),
                    "temp": cov[0, :T],
                }
            )[::-1]  # unsorted rows: sorted by timestamp within each id
        )
        future.append(
            pd.DataFrame({"unique_id": key, "ds": (T + np.arange(5)) * 2, "temp": cov[0, T:]})
        )
    return pd.concat(rows), pd.concat(future)


@pytest.mark.one_jax  # table handling; the forecasts run on every JAX above
def test_frames_are_the_same_forecast(tirex2):
    pytest.importorskip("pandas")
    rng = np.random.default_rng(2)
    df, future = _frames(rng)
    H = 3
    kw = dict(target_columns=["y", "z"], past_covariates=["price"], future_covariates=["temp"])
    got = xlstm_jax.forecast_frame(
        tirex2, df, H, future_df=future, quantile_levels=[0.1, 0.9], **kw
    )
    assert list(got.columns) == ["unique_id", "target", "step", "ds", "mean", "q0.1", "q0.9"]
    assert len(got) == 2 * 2 * H and list(got["unique_id"].unique()) == ["b", "a"]
    items = []
    for key in ("b", "a"):
        part = df[df.unique_id == key].sort_values("ds")
        fut = future[future.unique_id == key]
        temp = np.concatenate([part.temp.to_numpy(), fut.temp.to_numpy()[:H]])[None]
        items.append(Series(part[["y", "z"]].to_numpy().T, part[["price"]].to_numpy().T, temp))
    want = xlstm_jax.forecast(tirex2, items, H, quantile_levels=[0.1, 0.9])
    z_of_a = got[(got.unique_id == "a") & (got.target == "z")]
    np.testing.assert_allclose(z_of_a["q0.9"], want[1].quantiles[1, 1], rtol=1e-6)
    np.testing.assert_allclose(z_of_a["mean"], want[1].mean[1], rtol=1e-6)
    np.testing.assert_array_equal(z_of_a["ds"], [22, 24, 26])  # from future_df
    # Without covariates the timestamps continue the history's constant step.
    plain = xlstm_jax.forecast_frame(tirex2, df, H, target_columns=["y"])
    np.testing.assert_array_equal(plain[plain.unique_id == "b"]["ds"], [28, 30, 32])


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"target_columns": ["nope"]}, "no column 'nope'"),
        ({"future_covariates": ["temp"]}, "future_df"),
        ({"target_columns": ["y", "y"]}, "more than one"),
    ],
)
@pytest.mark.one_jax  # table handling; the forecasts run on every JAX above
def test_bad_frames_are_one_clear_error(tirex2, kw, match):
    pytest.importorskip("pandas")
    df, _ = _frames(np.random.default_rng(3))
    with pytest.raises(ForecastError, match=match):
        xlstm_jax.forecast_frame(tirex2, df, 2, **kw)


@pytest.mark.one_jax  # table handling; the forecasts run on every JAX above
def test_too_short_future_frame_names_the_series(tirex2):
    pytest.importorskip("pandas")
    df, future = _frames(np.random.default_rng(4))
    with pytest.raises(ForecastError, match="series 'b'.*horizon needs 6"):
        xlstm_jax.forecast_frame(tirex2, df, 6, future_covariates=["temp"], future_df=future)


def test_load_forecaster_reads_a_tirex2_folder_by_any_of_its_paths(tirex2, tmp_path):
    folder = save_folder(tirex2, tmp_path / "tirex2")
    for path in (folder, folder / "config.json", folder / "model.safetensors"):
        got = xlstm_jax.load_forecaster(path, impl="xla")
        assert isinstance(got, TiRex2)
    want, have = to_state_dict(tirex2), to_state_dict(got)
    assert want.keys() == have.keys()
    for name in want:
        np.testing.assert_array_equal(have[name], want[name])


def test_load_forecaster_names_what_it_expected(tmp_path):
    with pytest.raises(ForecastError, match="no such file or folder"):
        xlstm_jax.load_forecaster(tmp_path / "missing")
    with pytest.raises(ForecastError, match="holding no forecaster"):
        xlstm_jax.load_forecaster(tmp_path)


@pytest.mark.one_jax  # table handling; the forecasts run on every JAX above
def test_the_cli_reads_targets_and_covariates_from_long_tables(tirex2, tmp_path, capsys):
    pytest.importorskip("pandas")
    import pandas as pd

    from train import forecast as cli

    df, future = _frames(np.random.default_rng(5))
    df.to_csv(tmp_path / "history.csv", index=False)
    future.to_csv(tmp_path / "future.csv", index=False)
    folder = save_folder(tirex2, tmp_path / "model")
    args = [
        "--model", folder, "--input", tmp_path / "history.csv", "--id-column", "unique_id",
        "--timestamp-column", "ds", "--target-columns", "y,z", "--past-covariates", "price",
        "--future-covariates", "temp", "--future-input", tmp_path / "future.csv",
        "--horizon", 3, "--quantiles", "0.1,0.9", "--output", tmp_path / "out.csv",
    ]  # fmt: skip
    assert cli.main([str(a) for a in args]) == 0
    got = pd.read_csv(tmp_path / "out.csv")
    assert list(got.columns) == ["id", "target", "step", "timestamp", "mean", "q0.1", "q0.9"]
    want = xlstm_jax.forecast_frame(
        tirex2,
        df,
        3,
        target_columns=["y", "z"],
        past_covariates=["price"],
        future_covariates=["temp"],
        future_df=future,
        quantile_levels=[0.1, 0.9],
    )
    np.testing.assert_array_equal(got["target"], want["target"])
    np.testing.assert_array_equal(got["timestamp"], want["ds"])
    np.testing.assert_allclose(
        got[["mean", "q0.1", "q0.9"]], want[["mean", "q0.1", "q0.9"]], rtol=1e-5
    )
    assert "2 series: 2 target(s), 1 past and 1 future covariate(s)" in capsys.readouterr().err
    # Future covariates without their values over the horizon: refused before any compute.
    assert (
        cli.main([str(a) for a in args[:-8] + ["--horizon", 3, "--output", tmp_path / "x.csv"]])
        == 2
    )
    assert "--future-input" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()

"""``train.data.series.tables`` (series tables) and ``python -m train.forecast`` on a tiny
forecaster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from train import forecast as cli
from train import forecast_output
from train.data.series.tables import read_series
from train.data.series.timestamps import future_timestamps
from train.errors import DataError

ROOT = Path(__file__).parent.parent


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------- readers


def test_wide_csv_gives_one_series_per_column_with_nan_cells_and_ragged_padding_dropped(
    tmp_path,
):
    path = write(
        tmp_path,
        "timestamp,a,b,c\n"
        "2024-01-01,1,,5\n"
        "2024-01-02,2,,NaN\n"
        "2024-01-03,,3.5,7\n"
        "2024-01-04,4,4.5,\n",
    )
    a, b, c = read_series(path)
    assert [a.name, b.name, c.name] == ["a", "b", "c"]
    np.testing.assert_array_equal(a.values, [1, 2, np.nan, 4])  # a gap stays NaN
    np.testing.assert_array_equal(b.values, [3.5, 4.5])  # leading padding dropped
    np.testing.assert_array_equal(c.values, [5, np.nan, 7])  # trailing padding dropped
    assert a.values.dtype == np.float64
    assert b.timestamps.tolist() == list(np.array(["2024-01-03", "2024-01-04"], "M8[D]"))
    (only,) = read_series(write(tmp_path, "x\n1\n2\n", "n.csv"))
    assert only.name == "x" and only.timestamps is None
    (newest_first,) = read_series(write(tmp_path, "timestamp,x\n3,30\n1,10\n2,\n", "r.csv"))
    assert newest_first.timestamps.tolist() == [1, 2, 3]  # sorted by the timestamp
    np.testing.assert_array_equal(newest_first.values, [10, np.nan, 30])


def test_long_csv_sorts_by_timestamp_within_id_in_order_of_first_appearance(tmp_path):
    path = write(
        tmp_path,
        "item,when,y,other\nb,3,30,x\na,2,2,x\nb,1,10,x\na,1,1,x\nb,2,,x\n",
    )
    kw = dict(id_column="item", timestamp_column="when", value_column="y")
    b, a = read_series(path, "long", **kw)
    assert (b.name, a.name) == ("b", "a")
    np.testing.assert_array_equal(b.values, [10, np.nan, 30])
    assert b.timestamps.tolist() == [1, 2, 3] and a.timestamps.tolist() == [1, 2]
    said = []
    assert [s.name for s in read_series(path, **kw, say=said.append)] == ["b", "a"]
    assert "long layout (auto" in said[0]


def test_parquet_tables_read_in_both_layouts(tmp_path):
    stamps = pa.array(np.array(["2024-01-01", "2024-01-02", "2024-01-03"], "M8[s]"))
    pq.write_table(
        pa.table({"timestamp": stamps, "u": [1.0, np.nan, 3.0], "v": pa.array([1, 2, 3])}),
        tmp_path / "w.parquet",
    )
    u, v = read_series(tmp_path / "w.parquet")
    np.testing.assert_array_equal(u.values, [1, np.nan, 3])
    assert v.values.dtype == np.float64 and u.timestamps.dtype.kind == "M"
    assert u.timestamps[-1] == np.datetime64("2024-01-03")
    long = {"id": [7, 7], "timestamp": [2.0, 1.0], "value": [2.0, 1.0], "x": ["", ""]}
    pq.write_table(pa.table(long), tmp_path / "l.pq")
    (s,) = read_series(tmp_path / "l.pq")
    assert s.name == "7" and s.values.tolist() == [1.0, 2.0]


def test_the_auto_layout_is_long_only_with_both_the_id_and_value_columns(tmp_path):
    path = write(tmp_path, "id,timestamp,x\n1,1,5\n1,2,6\n")
    assert [s.name for s in read_series(path)] == ["id", "x"]  # no 'value': wide
    assert [s.name for s in read_series(path, value_column="x")] == ["1"]


@pytest.mark.parametrize(
    "name, text, kwargs, needles",
    [
        ("t.txt", "a\n1\n", {}, ["'.txt'", ".csv", ".parquet"]),
        ("t.csv", "", {}, ["is empty", "header row"]),
        ("t.csv", "a,b\n", {}, ["empty table", "columns: a, b"]),
        ("t.csv", "a,b\n1,2\n3\n", {}, ["not a readable CSV"]),
        ("t.csv", "a,b\n1,2\n3,1,5\n", {}, ["not a readable CSV"]),
        (
            "t.csv",
            "a,b\n1,2\n2,x7\n",
            {},
            ["column 'b' is not numeric", "row 2 (line 3)", "'x7'", "--timestamp"],
        ),
        ("t.csv", "a,b\n1,2,\n2,3\n", {}, ["not a readable CSV"]),
        ("t.csv", "a,b\n1,\n2,NaN\n", {}, ["series 'b'", "only missing values"]),
        (
            "t.csv",
            "id,value\na,1\n",
            {"layout": "long"},
            ["no column 'timestamp'", "columns: id, value", "--timestamp-column NAME"],
        ),
        (
            "t.csv",
            "key,timestamp,v\na,1,1\n",
            {"layout": "long"},
            ["no column 'id', 'value'", "columns: key, timestamp, v", "--id-column NAME"],
        ),
        (
            "t.csv",
            "id,timestamp,value\na,1,1\nb,1,2\na,1,3\n",
            {},
            ["series 'a'", "two values for timestamp 1", "row 1 (line 2) and row 3 (line 4)"],
        ),
        (
            "t.csv",
            "id,timestamp,value\na,1,1\nb,1,\nb,2,NaN\n",
            {},
            ["series 'b'", "only missing values"],
        ),
        ("t.csv", "id,timestamp,value\na,1,1\nb,,2\n", {}, ["row 2", "no 'timestamp'"]),
        ("t.csv", "id,timestamp,value\na,1,1,5\n", {}, ["not a readable CSV"]),
        ("t.csv", "id,timestamp,value\na,1,one\n", {}, ["column 'value'", "'one'", "row 1"]),
        ("t.csv", "timestamp\n2024-01-01\n", {}, ["only the timestamp column"]),
        ("t.csv", "a,b,a\n1,2,3\n", {}, ["more than one column named 'a'"]),
        ("t.csv", "timestamp,a\n2,1\n1,2\n2,3\n", {}, ["two rows with timestamp 2", "row 3"]),
        ("t.csv", "timestamp,a\n2,1\n,2\n", {}, ["row 2 (line 3) has no 'timestamp'"]),
        ("t.csv", "a\n1\n-inf\n", {}, ["column 'a' holds -inf at row 2", "finite"]),
    ],
)
def test_bad_tables_raise_data_errors_naming_the_problem(tmp_path, name, text, kwargs, needles):
    path = write(tmp_path, text, name)
    with pytest.raises(DataError) as err:
        read_series(path, **kwargs)
    for needle in needles:
        assert needle in str(err.value)


def test_a_missing_input_file_is_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_series(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a folder"):
        read_series(tmp_path)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable Parquet"):
        read_series(tmp_path / "bad.parquet")


def test_future_timestamps_continue_regular_spacing_and_give_none_otherwise():
    days = np.array(["2024-01-30", "2024-01-31", "2024-02-01"], "M8[D]")
    assert future_timestamps(days, 2).tolist() == list(
        np.array(["2024-02-02", "2024-02-03"], "M8[D]")
    )
    quarters = np.array(["2024-01-01", "2024-04-01", "2024-07-01"], "M8[D]")
    assert str(future_timestamps(quarters, 1)[0]) == "2024-10-01"
    month_ends = np.array(["2024-01-31", "2024-02-29"], "M8[D]")
    assert [str(d) for d in future_timestamps(month_ends, 2)] == ["2024-03-31", "2024-04-30"]
    assert future_timestamps(np.array([10, 20, 30]), 2).tolist() == [40, 50]
    assert future_timestamps(np.array([1, 2, 4]), 2) is None
    assert future_timestamps(np.array([5]), 2) is None
    assert future_timestamps(None, 2) is None
    assert future_timestamps(np.array(["a", "b"], object), 2) is None


@pytest.mark.parametrize(
    "text, needle",
    [
        ("0.1,x", "'x' is not a number"),
        ("0.1,1.0", "not a level in (0, 1)"),
        ("0.5,0.5", "repeats 0.5"),
        (" , ", "is empty"),
    ],
)
def test_bad_quantile_lists_are_rejected(text, needle):
    from xlstm_jax import ConfigError

    with pytest.raises(ConfigError) as err:
        cli.parse_quantiles(text)
    assert needle in str(err.value)
    assert cli.parse_quantiles("0.9, 0.1") == (0.1, 0.9)


# -------------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def tiny():
    """A tiny random forecaster (patch 4, context 16, the 9 TiRex levels). Its parameters
    are drawn with numpy into the model's abstract shapes: a real initialisation costs
    seconds of op-by-op compiling, more than all the CLI runs here together."""
    import jax
    from flax import nnx

    from xlstm_jax import TiRex, TiRexConfig

    config = TiRexConfig(
        input_patch_size=4,
        output_patch_size=4,
        embedding_dim=8,
        num_heads=2,
        num_blocks=1,
        input_ff_dim=8,
        train_ctx_len=16,
    )
    graphdef, state = nnx.split(nnx.eval_shape(lambda: TiRex(config, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(0)
    # Placed (committed) on the device like restored checkpoints, so that this model and
    # one read back from a run share their compiled forecast.
    device = jax.devices()[0]
    state = jax.tree.map(
        lambda s: jax.device_put(rng.normal(0, 0.3, s.shape).astype(s.dtype), device), state
    )
    return nnx.merge(graphdef, state)


@pytest.fixture(scope="module")
def run_folder(tiny, tmp_path_factory) -> Path:
    """``tiny`` saved as a ``python -m train.main`` run folder (config.json and a checkpoint
    with the items and meta the loop writes); training one would take far longer."""
    import json

    import jax.numpy as jnp
    from flax import nnx

    from train.config import ExperimentConfig
    from train.config.overrides import to_dict
    from train.runs.checkpoint import Checkpointer

    workdir = tmp_path_factory.mktemp("run") / "tirex"
    workdir.mkdir()
    cfg = ExperimentConfig(name="tirex_test", model=tiny.config)
    (workdir / "config.json").write_text(json.dumps(to_dict(cfg)))
    ckpt = Checkpointer(workdir / "checkpoints", keep=1, async_save=False)
    params = nnx.to_pure_dict(nnx.state(tiny, nnx.Param))
    meta = {"step": 3, "data_position": 3, "model_config": to_dict(cfg.model)}
    ckpt.save(3, {"params": params, "opt_state": {"count": jnp.zeros((), jnp.int32)}}, meta)
    ckpt.close()
    return workdir


@pytest.fixture
def model_path(tiny, tmp_path, monkeypatch):
    """A TiRex checkpoint path the CLI loads as ``tiny`` (``load_forecaster`` patched for
    that path alone: writing a real ``model.ckpt`` needs PyTorch)."""
    import xlstm_jax.models.tirex.convert as tirex_convert

    path = tmp_path / "model.ckpt"
    path.write_bytes(b"")
    real = tirex_convert.load_forecaster

    def patched(p, **kw):
        return tiny if Path(p) == path else real(p, **kw)

    monkeypatch.setattr(tirex_convert, "load_forecaster", patched)
    return path


@pytest.fixture
def table(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    lines = ["timestamp,a,b,c"]
    for i in range(30):
        b = "" if i < 12 else f"{rng.normal():.4f}"  # shorter (ragged)
        c = "" if i % 5 == 2 else f"{10 + i * 0.5:.2f}"  # gaps
        lines.append(f"{np.datetime64('2024-01-01') + i},{np.sin(i / 3):.4f},{b},{c}")
    return write(tmp_path, "\n".join(lines) + "\n", "wide.csv")


def run_cli(*args) -> int:
    return cli.main([str(a) for a in args])


def test_the_cli_writes_what_forecast_returns_and_one_plot_per_series(
    tiny, run_folder, table, tmp_path, capsys
):
    from xlstm_jax.models.tirex.forecast import forecast

    out, plots = tmp_path / "out" / "fc.csv", tmp_path / "plots"
    out.parent.mkdir()
    H = 6  # more than one patch: the rollout (every CLI run here compiles this one shape)
    rc = run_cli(
        "--model", run_folder, "--input", table, "--horizon", H, "--quantiles", "0.9,0.1,0.5",
        "--batch-size", 2, "--output", out, "--plot-dir", plots, "--max-plots", 2,
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "read 3 series" in err and "checkpoint step 3 of the run" in err
    assert "batch 2/2 done" in err and "wrote 2 plot(s)" in err
    got = pcsv.read_csv(out, convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
    assert got.column_names == ["id", "step", "timestamp", "mean", "q0.1", "q0.5", "q0.9"]
    assert got.num_rows == 3 * H
    assert got.column("id").to_pylist() == ["a"] * H + ["b"] * H + ["c"] * H
    assert got.column("step").to_pylist() == list(range(1, H + 1)) * 3
    assert got.column("timestamp").to_pylist()[:2] == [
        np.datetime64("2024-01-31"),
        np.datetime64("2024-02-01"),
    ]
    series = read_series(table)
    want = forecast(tiny, [s.values for s in series], H, [0.1, 0.5, 0.9], batch_size=2)
    for k, name in enumerate(["q0.1", "q0.5", "q0.9"]):
        np.testing.assert_allclose(
            np.asarray(got.column(name)).reshape(3, H), want.quantiles[:, :, k], rtol=1e-6
        )
    np.testing.assert_allclose(np.asarray(got.column("mean")).reshape(3, H), want.mean, rtol=1e-6)
    assert sorted(p.name for p in plots.iterdir()) == ["a.png", "b.png"]
    assert (plots / "a.png").read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_long_tables_without_regular_timestamps_leave_the_timestamp_empty(
    model_path, tmp_path, capsys
):
    path = write(tmp_path, "id,timestamp,value\nx,1,1\nx,2,2\nx,4,3\nz,5,1\nz,6,2\n", "l.csv")
    out = tmp_path / "fc.csv"
    assert run_cli("--model", model_path, "--input", path, "--horizon", 6, "--output", out) == 0
    got = pcsv.read_csv(out, convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
    assert got.column("timestamp").to_pylist() == [None] * 6 + list(range(7, 13))
    assert got.column_names[4:] == [f"q{q / 10:g}" for q in range(1, 10)]  # all levels


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"--horizon": 0}, "--horizon must be >= 1"),
        ({"--quantiles": "0.1,2"}, "not a level in (0, 1)"),
        ({"--quantiles": "0.1,0.55"}, "the model predicts the levels 0.1,0.2"),
        ({"--batch-size": 0}, "--batch-size must be >= 1"),
        ({"--output": "{tmp}/no/such/fc.csv"}, "does not exist; create it"),
        ({"--output": "{tmp}/fc.txt"}, "must be a .csv file"),
        ({"--plot-dir": "{tmp}/wide.csv"}, "is a file"),
        ({"--input": "{tmp}/missing.csv"}, "does not exist"),
        ({"--model": "{tmp}/elsewhere"}, "--model {tmp}/elsewhere does not exist"),
        ({"--model": "{tmp}/wide.csv"}, "not a PyTorch zip checkpoint"),
        ({"--model": "{tmp}/empty"}, "a folder holding no forecaster: expected a TiRex model.ckpt"),
        ({"--model": "{tmp}/lm_run"}, "is a training run of a xLSTMLMModel, not of the"),
    ],
)
def test_bad_arguments_fail_before_compute_and_leave_no_output(
    model_path, table, tmp_path, capsys, monkeypatch, change, needle
):
    import json

    import xlstm_jax.models.tirex.forecast as tirex_forecast
    from train.config import named
    from train.config.overrides import to_dict

    def no_compute(*a, **k):
        raise AssertionError("forecast ran")

    monkeypatch.setattr(tirex_forecast, "forecast", no_compute)
    args = {
        "--model": model_path, "--input": table, "--horizon": 4, "--output": "{tmp}/fc.csv",
        "--plot-dir": "{tmp}/plots",
    }  # fmt: skip
    args.update(change)
    argv = [str(x).replace("{tmp}", str(tmp_path)) for kv in args.items() for x in kv]
    (tmp_path / "empty").mkdir()
    (tmp_path / "lm_run").mkdir()  # a language model's run: its config.json is enough
    lm = to_dict(named.load("xlstm_tiny"))
    (tmp_path / "lm_run" / "config.json").write_text(json.dumps(lm))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error:") and "Traceback" not in err
    assert needle.replace("{tmp}", str(tmp_path)) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_run_that_fails_while_plotting_leaves_no_csv_and_no_plots(
    model_path, table, tmp_path, capsys, monkeypatch
):
    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, "plot_all", broken)
    out = tmp_path / "fc.csv"
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = run_cli("--model", model_path, "--input", table, "--horizon", 6, "--batch-size", 2,
                 "--output", out, "--plot-dir", tmp_path / "plots")  # fmt: skip
    assert rc == 1 and "the disk is full" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_plots_join_an_existing_folder_under_safe_distinct_names(tmp_path):
    keep = tmp_path / "plots" / "notes.txt"
    keep.parent.mkdir()
    keep.write_text("mine")
    with cli.staged_plots(keep.parent) as staged:
        (staged / "a.png").write_bytes(b"png")
    assert sorted(p.name for p in keep.parent.iterdir()) == ["a.png", "notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["plots"]  # the staging folder is gone
    names = forecast_output.file_names(["a/b", "A/B", "..", "x y", "a_b"])
    assert names == ["a_b.png", "A_B-2.png", "series.png", "x_y.png", "a_b-3.png"]


def test_the_module_runs_as_a_command():
    proc = subprocess.run(
        [sys.executable, "-m", "train.forecast", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "--horizon" in proc.stdout and "examples:" in proc.stdout

"""``train.series_io``: reading series tables for forecasting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from train.series_io import DataError, future_timestamps, read_series


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


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
            ["column 'b' is not numeric", "row 2 (line 3 of the file)", "'x7'", "--timestamp"],
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
            ["series 'a'", "two values for timestamp 1", "row 1 (line 2", "row 3 (line 4"],
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

"""Reading tables of time series for forecasting (``python -m train.forecast``).

    series = read_series("sales.csv")                        # layout decided by the columns
    series = read_series("ticks.parquet", layout="long", id_column="item")
    series[0].name, series[0].values, series[0].timestamps   # "a", (T,) float64, (T,) or None

Two file formats, CSV (``.csv``, ``.csv.gz``, ``.tsv``) and Parquet (``.parquet``,
``.pq``), both read with pyarrow, and two layouts:

- **wide**: one series per column, named by its header. A column named like
  ``timestamp_column`` (default ``timestamp``), if there is one, gives every series its
  timestamps (the rows are then sorted by it; without one they stay in file order);
  every other column must be numeric. Columns may have different lengths (ragged): the
  empty cells before a column's first value and after its last are padding and are
  dropped; empty cells between values are missing values (NaN).
- **long**: one row per observation, with an id, a timestamp and a value column (names
  configurable; other columns are ignored). Rows are sorted by timestamp within each id;
  series come in the order their ids first appear. An empty value cell is a missing value
  (NaN) and is kept.

``layout="auto"`` picks **long** when the table has both the id and the value column and
**wide** otherwise.

Timestamps are read as pyarrow infers them (ISO 8601 dates and times become
``datetime64``; times with a time zone are kept as UTC), numbers, or text otherwise
(text sorts as text: right for ISO 8601, wrong for e.g. ``3/1/2024``).
Missing values: an empty cell, ``NA``, ``NaN``, ``null`` and pyarrow's other null
spellings, and NaN floats in Parquet, all become NaN. Every problem with the file raises
``DataError`` (exit code 2 in the commands) naming the file, the column or series, and
the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from train.data.series.timestamps import show_stamp as _show
from train.errors import DataError

__all__ = [
    "LAYOUTS",
    "DataError",
    "Layout",
    "Series",
    "read_series",
    "read_table",
    "read_variates",
]

Layout = Literal["wide", "long", "auto"]
LAYOUTS = ("wide", "long", "auto")
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class Series:
    """One time series of a table.

    Attributes:
        name: the wide column's header, or the long layout's id (as text).
        values: (T,) float64, NaN where a value is missing; T >= 1 and not all NaN.
        timestamps: (T,) the timestamps (``datetime64`` for dates and times, int64 or
            float64 for numbers, ``str`` objects for other text), or None when the table
            has none.
    """

    name: str
    values: np.ndarray
    timestamps: np.ndarray | None


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in CSV_SUFFIXES + PARQUET_SUFFIXES:
        if name.endswith(s):
            return s
    return path.suffix.lower()


def read_table(path: str | Path):
    """The file at ``path`` as a ``pyarrow.Table`` (CSV or Parquet, by its extension).

    Raises:
        DataError: the file is missing, has an unknown extension, cannot be parsed, or
            holds no rows.
    """
    import pyarrow as pa

    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise DataError(f"the input {path} {what}; give a CSV or Parquet file of series.")
    suffix = _suffix(path)
    supported = ", ".join(CSV_SUFFIXES + PARQUET_SUFFIXES)
    try:
        if suffix in CSV_SUFFIXES:
            import pyarrow.csv as pcsv

            table = pcsv.read_csv(
                path,
                parse_options=pcsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ","),
                convert_options=pcsv.ConvertOptions(strings_can_be_null=True),
            )
        elif suffix in PARQUET_SUFFIXES:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            raise DataError(
                f"the input {path} has the extension {suffix or '(none)'!r}, which is not a "
                f"table format read here ({supported}); convert it to CSV or Parquet, or "
                f"rename it if it already is one."
            )
        names = table.column_names  # decoded here: a header that is not UTF-8 raises
        # Parquet does not check that its text cells are UTF-8; this does (and offsets).
        table.validate(full=True)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
        kind = "CSV" if suffix in CSV_SUFFIXES else "Parquet"
        if "Empty CSV file" in str(e):
            raise DataError(
                f"the input {path} is empty; give a table with a header row and one row per "
                f"time step (wide) or observation (long)."
            ) from None
        raise DataError(
            f"the input {path} is not a readable {kind} file ({e}); fix the file (or "
            f"rename it if it holds another format: {supported})."
        ) from None
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(
            f"the input {path} has more than one column named "
            f"{', '.join(repr(n) for n in twice)}; give every column its own name."
        )
    if table.num_columns == 0 or table.num_rows == 0:
        raise DataError(
            f"the input {path} is an empty table (columns: "
            f"{', '.join(table.column_names) or 'none'}; no rows); give one row per time "
            f"step (wide layout) or per observation (long layout)."
        )
    return table


def read_series(
    path: str | Path,
    layout: Layout = "auto",
    *,
    id_column: str = "id",
    timestamp_column: str = "timestamp",
    value_column: str = "value",
    say: Callable[[str], None] | None = None,
) -> list[Series]:
    """The series of the table at ``path`` (see the module docstring for the layouts).

    Args:
        path: a CSV or Parquet file.
        layout: ``wide``, ``long``, or ``auto`` (long when the table has both ``id_column``
            and ``value_column``, wide otherwise).
        id_column: the long layout's series id column.
        timestamp_column: the timestamp column (required in the long layout, optional in
            the wide layout).
        value_column: the long layout's value column.
        say: told which layout was used and why (e.g. ``print``); None: silent.

    Returns:
        One ``Series`` per column (wide) or id (long), each with at least one value.

    Raises:
        DataError: the file cannot be read or is empty; a required column is missing (the
            message lists the columns present); a value column is not numeric or holds an
            infinity (names the column, its first bad value and its row); a series is
            empty or all NaN (names it); a timestamp repeats, or is missing, within a long
            series (or a wide table's rows).
    """
    if layout not in LAYOUTS:
        raise DataError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}.")
    path = Path(path)
    table = read_table(path)
    names = table.column_names
    why = ""
    if layout == "auto":
        long = id_column in names and value_column in names
        layout = "long" if long else "wide"
        has = "has" if long else "does not have both"
        why = f" (auto: the table {has} columns {id_column!r} and {value_column!r})"
    if say is not None:
        say(f"{path}: {table.num_rows} rows, {table.num_columns} columns, {layout} layout{why}")
    if layout == "long":
        return _long(table, path, id_column, timestamp_column, value_column)
    return _wide(table, path, timestamp_column)


def _row(path: Path, i: int) -> str:
    """Names the data row ``i`` (0-based) of ``path``: "row 3" (and "(line 4)" of a CSV file)."""
    if _suffix(path) in CSV_SUFFIXES:
        return f"row {i + 1} (line {i + 2})"
    return f"row {i + 1}"


def _numeric(column, path: Path, name: str, fix: str) -> np.ndarray:
    """A column as (N,) float64 with NaN for nulls; ``DataError`` if it is not numeric or
    holds an infinity."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind = column.type
    if pa.types.is_null(kind):
        return np.full(len(column), np.nan)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        out = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        # pyarrow reads a column as text when any cell is not a number it recognises;
        # accept the column if Python can read every cell as a float (e.g. "inf").
        out = np.full(len(column), np.nan)
        for i, cell in enumerate(column.to_pylist()):
            if cell is None or not cell.strip():
                continue
            try:
                out[i] = float(cell)
            except ValueError:
                raise DataError(
                    f"{path}: column {name!r} is not numeric: {_row(path, i)} holds "
                    f"{cell!r}. Write numbers with a '.' decimal point and leave missing "
                    f"values empty (or NA/NaN); {fix}."
                ) from None
    else:
        raise DataError(
            f"{path}: column {name!r} holds {kind}, not numbers; {fix}. Series values must "
            f"be integers or floats."
        )
    inf = np.flatnonzero(np.isinf(out))
    if inf.size:
        raise DataError(
            f"{path}: column {name!r} holds {out[inf[0]]} at {_row(path, int(inf[0]))}; a "
            f"forecaster needs finite values: replace it, or leave the cell empty (missing)."
        )
    return out


def _timestamps(column, path: Path, name: str) -> np.ndarray:
    """A timestamp column as (N,) numpy: datetime64, int64/float64, or str objects.

    Raises:
        DataError: integers past int64 (unsigned ones, or a CSV's that arrow read as
            float64, where neighbours beyond 2**53 merge): they cannot be kept exactly.
    """
    stamps = _stamps_numpy(column)
    big = None
    if stamps.dtype.kind == "u" and stamps.size and stamps.max() > np.iinfo(np.int64).max:
        big = stamps.max()
    elif stamps.dtype.kind == "f" and np.isfinite(stamps).any():
        top = np.nanmax(np.abs(stamps[np.isfinite(stamps)]))
        big = top if top > 2**53 and (stamps[np.isfinite(stamps)] % 1 == 0).all() else None
    if big is not None:
        limit = (
            "int64 holds"
            if stamps.dtype.kind == "u"
            else "float64 holds exactly (2**53; a CSV's integers past int64 are read as float64)"
        )
        raise DataError(
            f"{path}: the {name!r} column holds timestamps up to {big:.6g}, beyond what "
            f"{limit}, so neighbouring timestamps would merge or wrap and the forecast's "
            "would be wrong. Give smaller numbers (e.g. subtract the first timestamp) or dates."
        )
    return stamps.astype(np.int64) if stamps.dtype.kind == "u" else stamps


def _stamps_numpy(column) -> np.ndarray:
    """``_timestamps`` without the range check."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind = column.type
    if pa.types.is_timestamp(kind) and kind.tz is not None:
        column = pc.cast(column, pa.timestamp(kind.unit))  # UTC wall time
    if pa.types.is_date(kind) or pa.types.is_timestamp(kind) or pa.types.is_integer(kind):
        if column.null_count:  # nulls would be NaT / garbage in numpy
            return np.asarray(column.to_pylist(), dtype=object)
        return column.to_numpy(zero_copy_only=False)
    if pa.types.is_floating(kind):
        return column.to_numpy(zero_copy_only=False).astype(np.float64)
    return np.asarray([None if v is None else str(v) for v in column.to_pylist()], dtype=object)


def _check_series(path: Path, name: str, values: np.ndarray, what: str) -> None:
    if values.size == 0 or np.isnan(values).all():
        empty = "has no values" if values.size == 0 else f"has only missing values ({what})"
        raise DataError(
            f"{path}: series {name!r} {empty}; every cell is empty or NaN. Remove it from "
            f"the table, or fill in its values."
        )


def _wide(table, path: Path, timestamp_column: str) -> list[Series]:
    import pyarrow.compute as pc

    names = table.column_names
    stamps, order = None, None
    if timestamp_column in names:
        column = table.column(timestamp_column).combine_chunks()
        _require_plain(column, path, timestamp_column)
        _require_stamps(column, path, timestamp_column, "wide")
        order = pc.sort_indices(column).to_numpy(zero_copy_only=False)  # stable
        stamps = _timestamps(column.take(order), path, timestamp_column)
        dup = np.flatnonzero(stamps[1:] == stamps[:-1])
        if dup.size:
            first, second = sorted(int(r) for r in order[dup[0] : dup[0] + 2])
            raise DataError(
                f"{path} has two rows with {timestamp_column} {_show(stamps[dup[0]])} "
                f"({_row(path, first)} and {_row(path, second)}); keep one row per timestamp "
                f"(aggregate or drop the duplicates)."
            )
    value_names = [n for n in names if n != timestamp_column]
    if not value_names:
        raise DataError(
            f"{path} has only the timestamp column {timestamp_column!r}; a wide table needs "
            f"one column per series beside it."
        )
    out = []
    for name in value_names:
        fix = (
            f"if {name!r} holds the timestamps, pass --timestamp-column {name!r}; for a table "
            f"in long layout pass --layout long (with --id-column and --value-column); "
            f"otherwise remove the column"
        )
        values = _numeric(table.column(name), path, name, fix)
        if order is not None:
            values = values[order]
        seen = np.flatnonzero(~np.isnan(values))
        if seen.size == 0:
            _check_series(path, name, values, f"{values.size} rows")
        lo, hi = seen[0], seen[-1] + 1  # ragged columns: drop the padding around the values
        out.append(Series(str(name), values[lo:hi], None if stamps is None else stamps[lo:hi]))
    return out


def _require_plain(column, path: Path, name: str) -> None:
    """``DataError`` unless an id or timestamp column holds one sortable value per cell
    (numbers, text, dates or times; a Parquet file may hold lists, structs or bytes)."""
    import pyarrow as pa

    kind = column.type
    plain = (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_timestamp(kind)
        or pa.types.is_date(kind)
        or pa.types.is_null(kind)
    )
    if not plain:
        raise DataError(
            f"{path}: column {name!r} holds {kind}; ids and timestamps must be numbers, text, "
            f"dates or times (one value per cell). Rewrite the column, or name another with "
            f"--id-column / --timestamp-column."
        )


def _require_stamps(column, path: Path, timestamp_column: str, layout: str) -> None:
    """``DataError`` naming the first row without a timestamp, if there is one."""
    if column.null_count:
        i = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(
            f"{path}: {_row(path, i)} has no {timestamp_column!r}; with a timestamp column "
            f"every row of the {layout} layout needs a timestamp (drop the row or fill it in)."
        )


def _long(table, path: Path, id_column: str, timestamp_column: str, value_column: str):
    names = table.column_names
    flags = {id_column: "--id-column", timestamp_column: "--timestamp-column"}
    flags[value_column] = "--value-column"
    missing = [n for n in (id_column, timestamp_column, value_column) if n not in names]
    if missing:
        raise DataError(
            f"{path} has no column {', '.join(repr(m) for m in missing)} for the long layout "
            f"(columns: {', '.join(names)}); name the columns with "
            f"{', '.join(flags[m] + ' NAME' for m in missing)}, or pass --layout wide for "
            f"one series per column."
        )
    groups = _long_groups(table, path, id_column, timestamp_column)
    values = _numeric(
        table.column(value_column),
        path,
        value_column,
        f"or name the value column with --value-column (columns: {', '.join(names)})",
    )
    out = []
    for name, order, ts in groups:
        _check_series(path, name, values[order], f"{len(order)} rows")
        out.append(Series(name, values[order], ts))
    return out


def _long_groups(table, path: Path, id_column: str | None, timestamp_column: str):
    """The long layout's series: ``(name, row order (T,), timestamps (T,))`` per id, in the
    order the ids first appear, rows sorted by timestamp (``id_column`` None: the whole
    table is one series named after the file).

    Raises:
        DataError: a row without an id or timestamp, an id or timestamp column that is not
            plain values, a timestamp that repeats within a series.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if id_column is None:
        ids = pa.array(np.zeros(table.num_rows, np.int64))
    else:
        ids = table.column(id_column).combine_chunks()
        _require_plain(ids, path, id_column)
    if ids.null_count:
        i = int(np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(
            f"{path}: {_row(path, i)} has no {id_column!r}; every row of the long layout "
            f"needs a series id."
        )
    stamps_col = table.column(timestamp_column).combine_chunks()
    _require_plain(stamps_col, path, timestamp_column)
    _require_stamps(stamps_col, path, timestamp_column, "long")
    # dictionary_encode numbers the ids in the order they first appear.
    encoded = ids.dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    order = pc.sort_indices(
        pa.table({"c": encoded.indices, "t": stamps_col}),
        sort_keys=[("c", "ascending"), ("t", "ascending")],
    ).to_numpy(zero_copy_only=False)
    codes = codes[order]
    stamps = _timestamps(stamps_col.take(pa.array(order)), path, timestamp_column)
    starts = np.flatnonzero(np.diff(codes, prepend=-1))
    ends = np.append(starts[1:], len(codes))
    labels = [path.stem] if id_column is None else encoded.dictionary.to_pylist()
    out = []
    for lo, hi in zip(starts, ends, strict=True):
        name = str(labels[codes[lo]])
        ts = stamps[lo:hi]
        dup = np.flatnonzero(ts[1:] == ts[:-1])
        if dup.size:
            first, second = sorted(int(r) for r in order[lo + dup[0] : lo + dup[0] + 2])
            raise DataError(
                f"{path}: series {name!r} has two values for {timestamp_column} "
                f"{_show(ts[dup[0]])} ({_row(path, first)} and {_row(path, second)}); keep "
                f"one value per timestamp (aggregate or drop the duplicates)."
            )
        out.append((name, order[lo:hi], ts))
    return out


def read_variates(
    path: str | Path,
    columns: tuple[str, ...],
    *,
    id_column: str | None = "id",
    timestamp_column: str = "timestamp",
    table=None,
    roles_hint: str = "name the columns with data.id_column, data.timestamp_column, "
    "data.target_columns, data.past_covariates and data.future_covariates",
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The series of a long table with several value ``columns`` (a series' targets and
    covariates): ``(name, values (C, T) float64, timestamps (T,))`` per id, rows sorted by
    timestamp, NaN where a cell is missing; true/false columns read as 1/0. ``id_column``
    None: the table is one series. ``table``: the ``pyarrow.Table`` when already read.
    ``roles_hint``: how the caller names the columns (the missing-column error says it).

    Raises:
        DataError: the file cannot be read, a column is missing (the message lists those
            present), a value column is not numeric, or ``_long_groups``' problems.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    path = Path(path)
    table = read_table(path) if table is None else table
    names = table.column_names
    need = [n for n in (id_column, timestamp_column, *columns) if n is not None]
    missing = [n for n in need if n not in names]
    if missing:
        raise DataError(
            f"{path} has no column {', '.join(repr(m) for m in missing)} (columns: "
            f"{', '.join(names)}); {roles_hint}."
        )
    groups = _long_groups(table, path, id_column, timestamp_column)
    fix = "give numbers (true/false are read as 1/0) or leave the column out of data.*_columns"
    cols = []
    for c in columns:
        col = table.column(c)
        if pa.types.is_boolean(col.type):
            col = pc.cast(col, pa.int8())
        cols.append(_numeric(col, path, c, fix))
    values = np.stack(cols) if cols else np.zeros((0, table.num_rows))
    return [(name, values[:, order], ts) for name, order, ts in groups]

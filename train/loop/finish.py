"""The end of a run: closing its files whatever happened, the filesystem failure as the
user's error, the summary the command prints, and the end-of-run plots."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from train.config.schema import ExperimentConfig
from train.data.evaluation import Evaluator
from train.errors import RunError, disk_error
from train.loop.hooks import EvalHook
from train.loop.memory import peak_resident_bytes
from train.runs.checkpoint import Checkpointer
from train.runs.metrics import MetricsWriter, plot_loss_curve, read_metrics

__all__ = ["close_all", "plot_run", "summarize", "write_failure"]


def close_all(*closers: Callable[[], None] | None) -> None:
    """Runs every closer. While an error is propagating, a closer's own failure (often the
    same full disk) is dropped so the first error is the one reported; otherwise the first
    closer failure is raised after all have run."""
    propagating = sys.exc_info()[1] is not None
    first: BaseException | None = None
    for close in closers:
        if close is None:
            continue
        try:
            close()
        except Exception as e:  # noqa: BLE001 - re-raised below unless another is in flight
            first = first or e
    if first is not None and not propagating:
        raise first


def write_failure(e: OSError, workdir: Path, ckpt: Checkpointer) -> RunError | None:
    """The ``RunError`` for a filesystem failure while writing the run's own files
    (metrics, events, plots; the checkpoints report their own), naming the checkpoint
    that is kept; None when ``e`` is not one."""
    what = f"writing {e.filename}" if e.filename else f"writing the run's files in {workdir}"
    last = ckpt.latest_step()
    keeps = (
        "no checkpoint was written yet"
        if last is None
        else (f"the last complete checkpoint ({ckpt.directory / str(last)}) is kept")
    )
    return disk_error(e, what, keeps)


def summarize(summary: dict, step: int, loss: float, t_start: float, eval_hook: EvalHook) -> dict:
    """``summary`` with the last step, its loss, the run's seconds, the peak resident
    memory and the last evaluation's ``val_loss`` (and ``val_scaled_acc``)."""
    summary.update(step=step, loss=loss, seconds=time.time() - t_start)
    peak = peak_resident_bytes()
    if peak is not None:
        summary["peak_rss"] = peak
    if eval_hook.last_record is not None:
        summary["val_loss"] = eval_hook.last_record["val_loss"]
        if "val_scaled_acc" in eval_hook.last_record:
            summary["val_scaled_acc"] = eval_hook.last_record["val_scaled_acc"]
    return summary


def plot_run(
    cfg: ExperimentConfig,
    workdir: Path,
    metrics: MetricsWriter | None,
    evaluator: Evaluator,
) -> None:
    """The loss curve and the evaluator's own plots, when the run logged anything (on the
    process that writes the metrics)."""
    if metrics is not None and cfg.logging.plot and read_metrics(metrics.path):
        records = read_metrics(metrics.path)
        title = f"{cfg.name} ({workdir.name})"
        plot_loss_curve(metrics.path, workdir / "loss_curve.png", title)
        evaluator.finish(workdir, records, title)

"""Run outputs: ``metrics.jsonl``, TensorBoard event files and the loss-curve PNG."""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path

from train.files import atomic_write_bytes, atomic_write_text

__all__ = ["MetricsWriter", "plot_loss_curve", "read_metrics"]


def read_metrics(path: Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` (an empty list when it does not exist).

    A line that is not a complete JSON record with a ``step`` (the last line of a run
    killed mid-write, or a damaged file) is skipped: the metrics are a log, and losing one
    line must not make a run unresumable.
    """
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


class MetricsWriter:
    """Appends one JSON object per logged step to ``metrics.jsonl`` and mirrors the
    scalars to TensorBoard event files in the same folder.

    Events are written synchronously (tensorboardX's record writer, not its background
    thread): a full disk then fails the write in the training loop with one message,
    instead of killing a writer thread and leaving the next write waiting forever.
    """

    def __init__(self, workdir: Path, resume_step: int, tensorboard: bool):
        self.path = Path(workdir) / "metrics.jsonl"
        # Records past the checkpoint we resume from were produced by the interrupted
        # run and will be produced again; drop them so every step appears once.
        kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._tb = None
        if tensorboard:
            from tensorboardX.event_file_writer import EventsWriter
            from tensorboardX.proto.event_pb2 import Event, SessionLog
            from tensorboardX.summary import scalar

            self._event, self._scalar = Event, scalar

            self._tb = EventsWriter(str(Path(workdir) / "events"))
            # TensorBoard drops the older files' events past this step (as a resumed run
            # writes them again).
            start = SessionLog(status=SessionLog.START)
            self._tb.write_event(
                Event(wall_time=time.time(), step=resume_step + 1, session_log=start)
            )
            self._tb.flush()

    def write(self, record: dict) -> None:
        """Logs ``record`` (must contain ``step``)."""
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:  # name the file: a write error alone does not
            raise OSError(e.errno, e.strerror, str(self.path)) from e
        if self._tb is not None:
            Event, scalar = self._event, self._scalar
            try:
                for k, v in record.items():
                    if k != "step" and isinstance(v, int | float) and math.isfinite(v):
                        summary = scalar(k, v)
                        event = Event(wall_time=time.time(), step=record["step"], summary=summary)
                        self._tb.write_event(event)
                self._tb.flush()
            except OSError as e:
                raise OSError(
                    e.errno, e.strerror, str(self.path.parent / "events.out.tfevents.*")
                ) from e

    def close(self) -> None:
        """Closes the TensorBoard event file."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def plot_loss_curve(metrics_path: Path, out_path: Path, title: str) -> None:
    """Training (and validation, where logged) loss against step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()  # then one atomic write: no half-written PNG after a crash
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(out_path, buffer.getvalue())
    plt.close(fig)

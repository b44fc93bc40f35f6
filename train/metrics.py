"""Run outputs: ``metrics.jsonl``, TensorBoard event files and the loss-curve PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["MetricsWriter", "plot_loss_curve", "read_metrics"]


def read_metrics(path: Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` (an empty list when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsWriter:
    """Appends one JSON object per logged step to ``metrics.jsonl`` and mirrors the
    scalars to TensorBoard event files in the same folder."""

    def __init__(self, workdir: Path, resume_step: int, tensorboard: bool):
        self.path = Path(workdir) / "metrics.jsonl"
        # Records past the checkpoint we resume from were produced by the interrupted
        # run and will be produced again; drop them so every step appears once.
        kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(logdir=str(workdir), purge_step=resume_step + 1)

    def write(self, record: dict) -> None:
        """Logs ``record`` (must contain ``step``)."""
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float) and math.isfinite(v):
                    self._tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        """Flushes the TensorBoard writer."""
        if self._tb is not None:
            self._tb.close()


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
    fig.savefig(out_path, dpi=100)
    plt.close(fig)

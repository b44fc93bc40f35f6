"""Evaluators: what the evaluation hook runs every ``train.eval_every`` steps.

Shapes: b batch, w a batch's width (s + 1, or a synthetic bucket's longest example).

* ``TextEvaluator``: the mean validation loss per token over fixed validation batches, and
  its perplexity (``val_loss``, ``val_ppl``).
* ``SyntheticEvaluator`` (``data.path=synthetic:TASK``): the fixed evaluation set of the
  task (``train.synthetic.eval_set``: ``train.eval_batches`` batches of
  ``train.micro_batch_size`` sequences per length bucket), so successive evaluations are
  comparable. Its record fields: ``val_loss`` (cross-entropy per scored token),
  ``val_acc`` (the mean over sequences of each one's accuracy on its scored tokens),
  ``val_scaled_acc`` (the same scaled by the chance level, ``(acc - s_rand) / (1 -
  s_rand)``) and ``val_scaled_acc/LO-HI`` per input-length bucket (every bucket holds the
  same number of sequences, so the overall figure is the mean of the buckets').
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import jax
import numpy as np
from flax import nnx

from train.batch import Batch
from train.files import atomic_write_bytes
from train.memory import StepMemory
from train.objective import scored_cross_entropy
from train.synthetic import eval_set, get_task, scaled_accuracy

__all__ = [
    "Evaluator",
    "ForecastEvaluator",
    "SyntheticEvaluator",
    "TextEvaluator",
    "plot_accuracy_vs_length",
]


class Evaluator(Protocol):
    """Evaluates parameters on a fixed set; the evaluation hook calls it."""

    # A sentence saying why evaluation is off (no batches), or None when it can run.
    empty_note: str | None

    def __call__(self, params) -> dict[str, float]:
        """The metrics record fields for ``params`` (``val_loss`` among them)."""
        ...

    def compile(self, params) -> list[StepMemory]:
        """Compiles the evaluation now (for every batch shape), so its memory is known
        before training starts; returns each compiled function's memory."""
        ...

    def describe(self, record: dict) -> str:
        """The evaluation part of the progress line."""
        ...

    def finish(self, workdir: Path, records: list[dict], title: str) -> None:
        """End-of-run outputs (plots) from the run's metrics records."""
        ...


class TextEvaluator:
    """The mean loss per token over fixed validation batches.

    Args:
        loss_fn: ``(params, batch) -> scalar``, the training loss (jitted here).
        batches: this host's rows of the validation batches, in order.
        put: places a host's batch as the global batch the step function expects.
        empty_note: the sentence to print when ``batches`` is empty.
    """

    def __init__(
        self,
        loss_fn: Callable,
        batches: list[Batch],
        put: Callable[[Batch], Batch],
        empty_note: str,
    ):
        self._fn = jax.jit(loss_fn)
        self.batches, self._put = batches, put
        self.empty_note = None if batches else empty_note

    def compile(self, params) -> list[StepMemory]:
        if not self.batches:
            return []
        self._fn = self._fn.lower(params, self._put(self.batches[0])).compile()
        return [m for m in [StepMemory.of(self._fn)] if m is not None]

    def __call__(self, params) -> dict[str, float]:
        loss = float(np.mean([float(self._fn(params, self._put(b))) for b in self.batches]))
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 700.0))}

    def describe(self, record: dict) -> str:
        return f"val_loss {record['val_loss']:.4f}, val_ppl {record['val_ppl']:.2f}"

    def finish(self, workdir: Path, records: list[dict], title: str) -> None:
        del workdir, records, title  # the loss curve covers validation too


class ForecastEvaluator(TextEvaluator):
    """The forecaster's mean pinball loss (``val_loss``, scaled domain) over the fixed
    validation windows (each held-out series' last window; ``train.series_data``)."""

    def __call__(self, params) -> dict[str, float]:
        return {
            "val_loss": float(
                np.mean([float(self._fn(params, self._put(b))) for b in self.batches])
            )
        }

    def describe(self, record: dict) -> str:
        return f"val_loss {record['val_loss']:.4f} (pinball)"


class SyntheticEvaluator:
    """Evaluates a model on the fixed evaluation set of a ``synthetic:TASK`` run.

    Args:
        data_cfg: the run's ``DataConfig`` (``path=synthetic:TASK``).
        graphdef, rest: the model's ``nnx.split`` graph and non-parameter state.
        batch_size: sequences per evaluation batch.
        batches_per_bucket: evaluation batches per length bucket.
        seed: the run's seed (the evaluation set uses a stream training never draws from).
        max_scored: see ``train.objective.scored_predictions``.
    """

    empty_note = None

    def __init__(
        self,
        data_cfg,
        graphdef,
        rest,
        batch_size: int,
        batches_per_bucket: int,
        seed,
        max_scored: int | None = None,
    ):
        self.data_cfg = data_cfg
        self.task = get_task(data_cfg.path)
        self.batches = eval_set(data_cfg, batch_size, batches_per_bucket, seed)
        self.buckets = list(dict.fromkeys(b.bucket for b in self.batches))

        def fn(params, batch):
            return scored_cross_entropy(nnx.merge(graphdef, params, rest), batch, max_scored)

        self._fn = jax.jit(fn)
        self._compiled: dict[tuple, object] = {}  # batch shape -> compiled evaluation
        # Per-sequence (input length, accuracy) of the latest evaluation, for the plot.
        self.last: tuple[np.ndarray, np.ndarray] | None = None
        self.latest: dict[str, float] | None = None

    def compile(self, params) -> list[StepMemory]:
        for b in self.batches:
            shape = b.batch.tokens.shape
            if shape not in self._compiled:
                self._compiled[shape] = self._fn.lower(params, b.batch).compile()
        return [m for m in map(StepMemory.of, self._compiled.values()) if m is not None]

    def __call__(self, params) -> dict[str, float]:
        loss_sum, count, lengths, accs, buckets = 0.0, 0, [], [], []
        for b in self.batches:
            fn = self._compiled.get(b.batch.tokens.shape, self._fn)
            ce, correct, scored = (np.asarray(a) for a in fn(params, b.batch))
            loss_sum += float(ce.sum())
            count += int(scored.sum())
            accs.append(correct / np.maximum(scored, 1))
            lengths.append(b.lengths)
            buckets += [b.bucket] * len(b.lengths)
        acc, lengths, buckets = np.concatenate(accs), np.concatenate(lengths), np.array(buckets)
        self.last = (lengths, acc)
        s_rand = self.task.s_rand
        record = {
            "val_loss": loss_sum / max(count, 1),
            "val_acc": float(acc.mean()),
            "val_scaled_acc": float(scaled_accuracy(acc.mean(), s_rand)),
        }
        for name in self.buckets:
            record[f"val_scaled_acc/{name}"] = float(
                scaled_accuracy(acc[buckets == name].mean(), s_rand)
            )
        self.latest = record
        return record

    def describe(self, record: dict) -> str:
        """Loss, scaled accuracy overall and per bucket."""
        per_bucket = ", ".join(
            f"{k.split('/', 1)[1]}: {v:.3f}"
            for k, v in record.items()
            if k.startswith("val_scaled_acc/")
        )
        return (
            f"val_loss {record['val_loss']:.4f}, val_acc {record['val_acc']:.3f}, "
            f"val_scaled_acc {record['val_scaled_acc']:.3f} ({per_bucket})"
        )

    def finish(self, workdir: Path, records: list[dict], title: str) -> None:
        if self.last is not None:
            plot_accuracy_vs_length(
                self,
                records,
                Path(workdir) / "accuracy_vs_length.png",
                title,
                train_max_len=self.data_cfg.train_lengths[1],
            )


def plot_accuracy_vs_length(
    evaluator: SyntheticEvaluator,
    records: list[dict],
    out_path: Path,
    title: str,
    train_max_len: int | None = None,
) -> None:
    """Two panels as a PNG: the latest evaluation's scaled accuracy against input length
    (lengths binned 16 wide), and each bucket's scaled accuracy against the training step.

    Args:
        evaluator: an evaluator that has run at least once.
        records: the run's ``metrics.jsonl`` records (for the per-step panel).
        out_path: the PNG to write.
        title: the figure title.
        train_max_len: drawn as a vertical line (the longest training input).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths, acc = evaluator.last
    s_rand = evaluator.task.s_rand
    bins = (lengths // 16) * 16
    xs = np.unique(bins)
    ys = [scaled_accuracy(acc[bins == x].mean(), s_rand) for x in xs]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(xs + 8 if len(xs) > 1 else xs, ys, "o-")
    if train_max_len is not None and evaluator.task.kind == "formal":
        ax1.axvline(
            train_max_len, color="gray", ls=":", label=f"longest training input ({train_max_len})"
        )
        ax1.legend(loc="lower left")
    ax1.axhline(0, color="gray", lw=0.5)
    # Below chance is possible (down to -1); keep 0..1 in view either way.
    ax1.set_ylim(min(-0.1, min(ys) - 0.05), 1.05)
    ax1.set_xlabel("input length")
    ax1.set_ylabel("scaled accuracy (0 = chance, 1 = perfect)")
    ax1.set_title("final evaluation")
    ax1.grid(alpha=0.3)
    for name in evaluator.buckets:
        key = f"val_scaled_acc/{name}"
        pts = [(r["step"], r[key]) for r in records if key in r]
        if pts:
            ax2.plot(*zip(*pts, strict=True), "o-", label=f"length {name}")
    ax2.set_ylim(-1.05, 1.05)
    ax2.set_xlabel("step")
    ax2.set_title("scaled accuracy per length bucket")
    ax2.grid(alpha=0.3)
    ax2.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()  # then one atomic write: no half-written PNG after a crash
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(out_path, buffer.getvalue())
    plt.close(fig)

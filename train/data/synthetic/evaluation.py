"""The evaluation of a ``synthetic:TASK`` run: a fixed evaluation set per length bucket,
its evaluator and the accuracy-against-length plot.

Shapes: b batch, w a batch's width (a bucket's longest example).

``SyntheticEvaluator`` scores ``train.eval_batches`` batches of ``train.micro_batch_size``
sequences per length bucket, the same set at every evaluation, so successive evaluations
are comparable. Its record fields: ``val_loss`` (cross-entropy per scored token),
``val_acc`` (the mean over sequences of each one's accuracy on its scored tokens),
``val_scaled_acc`` (the same scaled by the chance level, ``(acc - s_rand) / (1 -
s_rand)``) and ``val_scaled_acc/LO-HI`` per input-length bucket (every bucket holds the
same number of sequences, so the overall figure is the mean of the buckets').
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from train.data.batch import Batch
from train.data.objective import scored_cross_entropy
from train.data.synthetic.example import scaled_accuracy
from train.data.synthetic.tasks import EVAL_STREAM, get_task, make_batch
from train.files import atomic_write_bytes

__all__ = ["EvalBatch", "SyntheticEvaluator", "eval_set", "plot_accuracy_vs_length"]


@dataclass(frozen=True)
class EvalBatch:
    """A fixed evaluation batch: the ``Batch`` ``(b, w)``, input lengths ``(b,)`` and the
    bucket (``"40-63"``) it belongs to."""

    batch: Batch
    lengths: np.ndarray
    bucket: str


def eval_set(data_cfg, batch_size: int, batches_per_bucket: int, seed: int) -> list[EvalBatch]:
    """The fixed evaluation set: for each length bucket, ``batches_per_bucket`` batches.

    Buckets are consecutive ``data.eval_buckets`` edges, ``[e_i, e_{i+1})``, the last one
    including its upper edge (40, 64, 128, 256 -> 40-63, 64-127, 128-256); each batch is
    padded to its bucket's widest example, so evaluation compiles once per bucket. MQAR
    has one bucket, its context length.
    """
    task = get_task(data_cfg.path)
    rng = np.random.default_rng([seed, EVAL_STREAM])
    if task.kind == "mqar":
        w = data_cfg.seq_len + 1
        return [
            EvalBatch(*make_batch(task, rng, batch_size, w, (w, w), data_cfg.num_kv_pairs), str(w))
            for _ in range(batches_per_bucket)
        ]
    edges = list(data_cfg.eval_buckets)
    out = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        hi = hi if i == len(edges) - 2 else hi - 1
        ns = task.lengths(lo, hi)
        width = max(task.width(int(n)) for n in ns)
        for _ in range(batches_per_bucket):
            batch, lengths = make_batch(task, rng, batch_size, width, (lo, hi), 0)
            out.append(EvalBatch(batch, lengths, f"{lo}-{hi}"))
    return out


class SyntheticEvaluator:
    """Evaluates a model on the fixed evaluation set of a ``synthetic:TASK`` run.

    Args:
        data_cfg: the run's ``DataConfig`` (``path=synthetic:TASK``).
        graphdef, rest: the model's ``nnx.split`` graph and non-parameter state.
        batch_size: sequences per evaluation batch.
        batches_per_bucket: evaluation batches per length bucket.
        seed: the run's seed (the evaluation set uses a stream training never draws from).
        max_scored: see ``train.data.objective.scored_predictions``.
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

    def compile(self, params) -> list[jax.stages.Compiled]:
        for b in self.batches:
            shape = b.batch.tokens.shape
            if shape not in self._compiled:
                self._compiled[shape] = self._fn.lower(params, b.batch).compile()
        return list(self._compiled.values())

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

"""What the evaluation hook runs every ``train.eval_every`` steps: the ``Evaluator``
protocol each data source's evaluator follows, and the plain one, the mean loss over fixed
validation batches.

Shapes: b batch, w a batch's width.

* ``TextEvaluator``: the mean validation loss per token over fixed validation batches, and
  its perplexity (``val_loss``, ``val_ppl``); the text sources use it.
* The synthetic tasks' evaluator (accuracy per length bucket) is
  ``train.data.synthetic.evaluation``; the forecaster's (pinball loss) is
  ``train.data.series.source``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import jax
import numpy as np

from train.data.batch import Batch

__all__ = ["Evaluator", "TextEvaluator"]


class Evaluator(Protocol):
    """Evaluates parameters on a fixed set; the evaluation hook calls it."""

    # A sentence saying why evaluation is off (no batches), or None when it can run.
    empty_note: str | None

    def __call__(self, params) -> dict[str, float]:
        """The metrics record fields for ``params`` (``val_loss`` among them)."""
        ...

    def compile(self, params) -> list[jax.stages.Compiled]:
        """Compiles the evaluation now (for every batch shape), so its memory is known
        before training starts; returns the compiled functions (their memory analysis
        goes into the start-up report)."""
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

    def compile(self, params) -> list[jax.stages.Compiled]:
        if not self.batches:
            return []
        self._fn = self._fn.lower(params, self._put(self.batches[0])).compile()
        return [self._fn]

    def __call__(self, params) -> dict[str, float]:
        loss = float(np.mean([float(self._fn(params, self._put(b))) for b in self.batches]))
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 700.0))}

    def describe(self, record: dict) -> str:
        return f"val_loss {record['val_loss']:.4f}, val_ppl {record['val_ppl']:.2f}"

    def finish(self, workdir: Path, records: list[dict], title: str) -> None:
        del workdir, records, title  # the loss curve covers validation too

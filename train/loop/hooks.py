"""What runs after a train step, each on its own cadence: evaluation, metrics and progress,
checkpoints.

The loop hands every hook a ``StepResult``; hooks run in order, and the metrics record of
the step (``StepResult.record``) collects what each adds, so the logging hook writes one
line per step with everything that step produced.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any, Protocol

from tqdm import tqdm

from train.data.evaluation import Evaluator
from train.runs.checkpoint import Checkpointer
from train.runs.metrics import MetricsWriter

__all__ = ["CheckpointHook", "EvalHook", "Hook", "LoggingHook", "StepResult"]


@dataclasses.dataclass
class StepResult:
    """One finished step: its number (1-based), whether it is the run's last, the loss,
    gradient norm and learning rate, the seconds it took (data included), the train state
    after it, and the metrics record the hooks fill."""

    step: int
    last: bool
    loss: float
    grad_norm: float
    lr: float
    seconds: float
    state: Any
    record: dict = dataclasses.field(default_factory=dict)


class Hook(Protocol):
    def __call__(self, result: StepResult) -> None: ...


class EvalHook:
    """Every ``every`` steps and at step ``final_step``: runs the evaluator, adds its fields
    to the record and prints the progress line."""

    def __init__(self, evaluator: Evaluator, every: int, final_step: int, say: Callable):
        self.evaluator, self.every, self.final_step, self.say = evaluator, every, final_step, say
        self.last_record: dict | None = None

    def __call__(self, result: StepResult) -> None:
        if not self.every or not (result.step % self.every == 0 or result.step == self.final_step):
            return
        fields = self.evaluator(result.state["params"])
        result.record.update(fields)
        self.last_record = fields
        self.say(f"step {result.step}: loss {result.loss:.4f}, {self.evaluator.describe(fields)}")


class LoggingHook:
    """Metrics (``metrics.jsonl``, TensorBoard) every ``every`` steps, on the last step and
    whenever another hook added fields, and the progress bar every step.

    Throughput is the tokens of the steps since the last log over the seconds those steps
    took (evaluation and checkpointing are not counted).
    """

    def __init__(
        self,
        metrics: MetricsWriter | None,
        every: int,
        tokens_per_step: int,
        bar_total: int,
        bar_start: int,
        show_bar: bool,
        name: str,
    ):
        self.metrics, self.every, self.tokens_per_step = metrics, every, tokens_per_step
        self.bar = tqdm(
            total=bar_total,
            initial=bar_start,
            disable=not show_bar,
            dynamic_ncols=True,
            desc=name,
            file=sys.stderr,
        )
        self.tokens_per_s = 0.0
        self._steps, self._seconds = 0, 0.0

    def __call__(self, result: StepResult) -> None:
        self._steps += 1
        self._seconds += result.seconds
        logged = result.step % self.every == 0 or result.last
        if logged:
            self.tokens_per_s = self._steps * self.tokens_per_step / max(self._seconds, 1e-9)
            self._steps, self._seconds = 0, 0.0
        if (logged or result.record) and self.metrics is not None:
            record = {
                "step": result.step,
                "loss": result.loss,
                "lr": result.lr,
                "tokens_per_s": self.tokens_per_s,
            }
            if logged:
                record["grad_norm"] = result.grad_norm
            self.metrics.write({**record, **result.record})
        speed = f"{self.tokens_per_s:,.0f}" if self.tokens_per_s else "-"
        self.bar.set_postfix_str(
            f"loss {result.loss:.4f} lr {result.lr:.2e} tok/s {speed}", refresh=False
        )
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class CheckpointHook:
    """Saves the train state every ``every`` steps (the loop saves the final step)."""

    def __init__(self, checkpointer: Checkpointer, every: int, meta: Callable[[int], dict]):
        self.checkpointer, self.every, self.meta = checkpointer, every, meta

    def __call__(self, result: StepResult) -> None:
        if result.step % self.every == 0:
            self.checkpointer.save(result.step, result.state, self.meta(result.step))

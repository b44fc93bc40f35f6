"""The step loop: next batch, step, check the loss, hooks; and the signals that stop it.

The data position is the step itself (every source indexes its batches by step), so a
checkpoint at step k resumes with the same batches the uninterrupted run would have seen.
SIGINT/SIGTERM are acknowledged at once and end the loop after the running step, which is
then saved; a second signal aborts without saving.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Iterator

import jax

from train.errors import RunError
from train.loop.hooks import Hook, StepResult
from train.loop.setup import TrainSetup, put_batch
from train.runs.checkpoint import Checkpointer

__all__ = [
    "NonFiniteLossError",
    "catch_signals",
    "non_finite_loss",
    "release_signals",
    "run_steps",
    "wait_interruptibly",
]


class NonFiniteLossError(RunError):
    """The loss became NaN/inf; the last good checkpoint was kept."""


def wait_interruptibly(x: jax.Array) -> None:
    """Waits for ``x`` while letting Python run signal handlers.

    A blocking read (``float(x)``) holds the main thread in C++ for the whole step, so a
    Ctrl-C would be noticed only after a step that can take minutes; polling keeps the
    interpreter responsive at a cost of at most a few milliseconds per step.
    """
    delay = 1e-4
    while not x.is_ready():
        time.sleep(delay)
        delay = min(2 * delay, 0.02)


def catch_signals(caught: list[int], say: Callable[[str], None]) -> dict:
    """Routes SIGINT and SIGTERM into ``caught`` (the loop stops after its step); returns
    the previous handlers for ``release_signals``."""

    def on_signal(signum, _frame):
        # A step can take minutes (large models, long accumulation): acknowledge at once,
        # and let a second signal abort without saving.
        if caught:
            raise KeyboardInterrupt
        caught.append(signum)
        say(
            f"{signal.Signals(signum).name} received: saving a checkpoint after this step "
            f"(send it again to abort without saving)."
        )

    return {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}


def release_signals(old_handlers: dict) -> None:
    """Puts back the handlers ``catch_signals`` replaced."""
    for s, h in old_handlers.items():
        signal.signal(s, h)


def run_steps(
    setup: TrainSetup,
    compiled: jax.stages.Compiled,
    batches: Iterator,
    hooks: list[Hook],
    ckpt: Checkpointer,
    span: tuple[int, int],
    caught: list[int],
) -> tuple[int, float]:
    """Runs steps ``start + 1 .. end`` (``span``), each followed by the hooks, until the
    end or a caught signal; ``setup.state`` follows the steps.

    Returns:
        The last step run and its loss (NaN when none ran).

    Raises:
        NonFiniteLossError: the loss became NaN or infinite (nothing is saved).
    """
    tc = setup.cfg.train
    n_proc, lead = jax.process_count(), jax.process_index() == 0
    batch_shape = (tc.accum_steps, tc.micro)
    (step, end), loss = span, float("nan")
    while step < end and not caught:
        t_step = time.perf_counter()
        local = jax.tree.map(  # this host's rows of every micro-batch
            lambda x: x.reshape(tc.accum_steps, tc.micro // n_proc, *x.shape[1:]),
            next(batches),
        )
        setup.state, out = compiled(
            setup.state, put_batch(local, setup.batch_sharding, batch_shape)
        )
        wait_interruptibly(out["loss"])
        loss = float(out["loss"])
        if not math.isfinite(loss):
            raise NonFiniteLossError(non_finite_loss(loss, step, out, ckpt, lead))
        step += 1
        result = StepResult(
            step=step,
            last=step == end,
            loss=loss,
            grad_norm=float(out["grad_norm"]),
            lr=float(setup.schedule(step - 1)),
            seconds=time.perf_counter() - t_step,
            state=setup.state,
        )
        for hook in hooks:
            hook(result)
    return step, loss


def non_finite_loss(loss: float, step: int, out: dict, ckpt: Checkpointer, lead: bool) -> str:
    """The message for a non-finite loss at step ``step + 1``.

    That loss was computed from the state after step ``step``: if that state is the newest
    checkpoint, the checkpoint is what gives the NaN, so it is set aside (not deleted) and
    the one before stays the last good one; a rerun with a lower LR then starts from it.
    """
    ckpt.wait()
    moved = ""
    if lead and ckpt.latest_step() == step and step > 0:
        dest = ckpt.set_aside(step, "non-finite-loss")
        moved = f" Checkpoint {step}, whose weights give this loss, was moved to {dest}."
    last = ckpt.latest_step()
    kept = (
        "There is no earlier checkpoint: a rerun starts afresh."
        if last is None
        else f"The last good checkpoint ({ckpt.directory / str(last)}) is kept; a rerun "
        f"resumes from it."
    )
    return (
        f"loss became {loss} at step {step + 1} (grad norm {float(out['grad_norm']):.3g}); "
        f"stopped without saving.{moved} {kept} Lower optimizer.lr, raise "
        f"schedule.warmup_steps, or set optimizer.grad_clip, then rerun."
    )

"""Compiling before the first step: the train step for the source's batch shape, and the
evaluation for every shape it will see, so the memory report covers the whole run."""

from __future__ import annotations

import time
from collections.abc import Callable

import jax

from train.data.evaluation import Evaluator
from train.data.sources import DataSource
from train.loop.memory import StepMemory
from train.loop.setup import TrainSetup, put_batch
from train.loop.step import make_train_step

__all__ = ["compile_evaluator", "compile_step"]


def compile_step(
    setup: TrainSetup, source: DataSource, say: Callable[[str], None]
) -> jax.stages.Compiled:
    """The train step with the state donated, compiled for batches (a, m, ...) of
    ``source`` on the run's shardings."""
    tc = setup.cfg.train
    abstract_batch = source.abstract_batch((tc.accum_steps, tc.micro))
    step_fn = jax.jit(
        make_train_step(setup.graphdef, setup.rest, setup.tx, objective=source.loss),
        in_shardings=(
            setup.shardings,
            jax.tree.map(lambda _: setup.batch_sharding, abstract_batch),
        ),
        out_shardings=(setup.shardings, setup.replicated),
        donate_argnums=0,
    )
    t0 = time.time()
    compiled = step_fn.lower(setup.state, abstract_batch).compile()
    say(f"compiled the train step in {time.time() - t0:.1f} s")
    return compiled


def compile_evaluator(
    setup: TrainSetup, source: DataSource, say: Callable[[str], None]
) -> tuple[Evaluator, int, list[StepMemory]]:
    """The source's evaluator, the evaluation cadence (0 when there is nothing to
    evaluate on, which is said) and the memory of each compiled evaluation."""
    tc = setup.cfg.train
    evaluator = source.evaluator(
        setup.graphdef,
        setup.rest,
        tc.micro,
        tc.eval_batches,
        tc.seed,
        lambda b: put_batch(b, setup.eval_sharding),
        jax.process_index(),
        jax.process_count(),
    )
    eval_every = tc.eval_every
    if eval_every and evaluator.empty_note:
        say(evaluator.empty_note)
        eval_every = 0
    compiled = evaluator.compile(setup.state["params"]) if eval_every else []
    memory = [m for m in map(StepMemory.of, compiled) if m is not None]
    return evaluator, eval_every, memory

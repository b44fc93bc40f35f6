"""``train(config, workdir)``: one training run (or its resumption) from start to end.

The phases, each in its own module: ``setup`` (checks, data source, model, sharded train
state), ``restore`` (checkpoint, fine-tuning weights, ``config.json``), ``compile`` (the
step and the evaluation), ``run`` (the step loop and its hooks, ``hooks``: evaluation,
logging, checkpoints) and ``finish`` (closing, summary, plots).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import grain
import jax
from jax.sharding import Mesh

from train.config.overrides import to_dict
from train.config.schema import ConfigError, ExperimentConfig
from train.data.sources import DataSource
from train.loop.compile import compile_evaluator, compile_step
from train.loop.finish import close_all, plot_run, summarize, write_failure
from train.loop.hooks import CheckpointHook, EvalHook, LoggingHook
from train.loop.memory import StepMemory, check_estimate_fits
from train.loop.report import report_setup, report_step_memory, say
from train.loop.restore import restore, write_config
from train.loop.run import NonFiniteLossError, catch_signals, release_signals, run_steps
from train.loop.setup import (
    adopt_init_config,
    build_state,
    check_setup,
    count_params,
    open_data,
)
from train.runs.checkpoint import Checkpointer, check_resume_step
from train.runs.metrics import MetricsWriter
from train.runs.workdir import LOCK_NAME, WorkdirLock, check_workdir
from xlstm_jax.layers.sharding import activate

__all__ = ["NonFiniteLossError", "train"]


def train(cfg: ExperimentConfig, workdir: str | Path, resume_step: int | None = None) -> dict:
    """Trains ``cfg`` in ``workdir``, resuming from its newest intact checkpoint if there is
    one (or from ``resume_step``: newer checkpoints are then moved to ``WORKDIR/set_aside``).

    Writes ``config.json``, ``metrics.jsonl``, TensorBoard events, ``checkpoints/`` and
    ``loss_curve.png`` into ``workdir``, holding ``WORKDIR/.lock`` meanwhile (one run per
    workdir). Nothing is written before the config, the data and the workdir have been
    checked. SIGINT/SIGTERM save a checkpoint and return.

    Returns:
        A summary: ``status`` ("done", "stopped" at ``train.stop_after``, or
        "interrupted" with ``signal``), ``step``, ``loss``, ``val_loss`` (if evaluated),
        ``seconds`` and ``num_params``.

    Raises:
        ConfigError, DataError, WorkdirError: before anything is written, for a bad setup
            (or a workdir held by another run).
        CheckpointError: no checkpoint can be restored, or a save failed (nothing is
            deleted).
        NonFiniteLossError, NonFiniteStateError: the loss or the state became NaN or
            infinite; the last good checkpoint is kept.
    """
    t_start = time.time()
    # Everything that can fail cheaply fails here, before data or model are touched.
    cfg = adopt_init_config(cfg, say)
    mesh = check_setup(cfg)
    workdir = Path(workdir).absolute()
    check_workdir(workdir)
    if resume_step is not None:
        check_resume_step(workdir / "checkpoints", resume_step)
    cfg, source = open_data(cfg, say)
    # The data is read (and bad data refused) before the workdir is created or touched.
    data_line = source.prepare()
    num_params = count_params(cfg)
    check_estimate_fits(cfg, num_params, jax.device_count())
    made = (*workdir.parents, workdir, workdir / "checkpoints", workdir / LOCK_NAME)
    created = [p for p in made if not p.exists()]
    workdir.mkdir(parents=True, exist_ok=True)
    # One run per workdir; the other processes of a multi-host run follow the first.
    lock = WorkdirLock(workdir) if jax.process_index() == 0 else None
    if lock is not None and lock.took_over:
        say(f"note: took over {lock.path} from PID {lock.took_over.get('pid')} (not running).")
    refused = False
    try:
        # The mesh is active while the step is traced: the layers run their recurrent ops
        # inside shard_map over it and constrain activations by logical axis names.
        with activate(mesh, cfg.mesh.rules):
            return _train(cfg, workdir, mesh, source, data_line, resume_step, t_start, num_params)
    except ConfigError:  # found before the run wrote anything (the compiled step's memory)
        refused = True
        raise
    finally:
        if lock is not None:
            lock.release()
        if refused and jax.process_index() == 0:
            _remove_empty(created)


def _remove_empty(paths: list[Path]) -> None:
    """Removes the files and folders this run made if they hold nothing (the released
    lock, an empty checkpoints folder, a new workdir): a refused run leaves the disk as it
    found it."""
    for path in sorted(paths, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # a folder that is not empty stays
            if path.is_dir():
                path.rmdir()
            elif path.stat().st_size == 0:
                path.unlink()


def _train(
    cfg: ExperimentConfig,
    workdir: Path,
    mesh: Mesh,
    source: DataSource,
    data_line: str,
    resume_step: int | None,
    t_start: float,
    num_params: int,
) -> dict:
    """The run inside its workdir lock and mesh: ``train`` without the checks."""
    lead, tc = jax.process_index() == 0, cfg.train
    say(f"run {cfg.name} in {workdir}")
    report_setup(cfg, num_params, say)
    say(data_line)
    setup = build_state(cfg, mesh)
    ckpt = Checkpointer(workdir / "checkpoints", cfg.checkpoint.keep, cfg.checkpoint.async_save)
    start = restore(setup, ckpt, resume_step, say)
    end = tc.steps if tc.stop_after == -1 else min(tc.steps, tc.stop_after)
    summary = {"num_params": num_params, "step": start, "status": "done"}
    if start >= end:
        if lead:
            write_config(cfg, workdir, say)
        say(f"nothing to do: the checkpoint is at step {start}, the run ends at {end}.")
        ckpt.close()
        summary["seconds"] = time.time() - t_start
        return summary

    try:
        compiled = compile_step(setup, source, say)
        evaluator, eval_every, eval_memory = compile_evaluator(setup, source, say)
        # A step that cannot fit is refused here, before config.json, metrics or a
        # checkpoint are written.
        report_step_memory(StepMemory.of(compiled), eval_memory, cfg.model, say)
    except BaseException:
        ckpt.close()
        raise
    # Only now, with the checkpoint accepted and the step fitting, does config.json
    # describe this run.
    if lead:
        write_config(cfg, workdir, say)
    metrics = MetricsWriter(workdir, start, cfg.logging.tensorboard) if lead else None
    model_cfg = to_dict(cfg.model)

    def meta(step: int) -> dict:
        return {"step": step, "data_position": step, "model_config": model_cfg}

    eval_hook = EvalHook(evaluator, eval_every, tc.steps, say)
    log_hook = LoggingHook(
        metrics,
        cfg.logging.every,
        tc.batch_size * cfg.data.seq_len,
        tc.steps,
        start,
        cfg.logging.progress_bar and lead,
        cfg.name,
    )
    hooks = [eval_hook, log_hook, CheckpointHook(ckpt, cfg.checkpoint.every, meta)]
    ds = source.train_batches(tc.batch_size, tc.seed, jax.process_index(), jax.process_count())
    options = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
    batches = iter(ds[start:].to_iter_dataset(options))
    caught: list[int] = []
    old_handlers = catch_signals(caught, say)
    try:
        step, loss = run_steps(setup, compiled, batches, hooks, ckpt, (start, end), caught)
        if caught:
            say(f"interrupted: saving a checkpoint at step {step} and exiting.")
            summary.update(status="interrupted", signal=caught[0])
        elif step < tc.steps:
            summary["status"] = "stopped"
        if ckpt.latest_step() != step:
            ckpt.save(step, setup.state, meta(step))
    except OSError as e:  # metrics, events, plots: the checkpoints report their own
        wrapped = write_failure(e, workdir, ckpt)
        if wrapped is None:
            raise
        raise wrapped from e
    finally:
        release_signals(old_handlers)
        close_all(log_hook.close, ckpt.close, metrics.close if metrics is not None else None)
    summarize(summary, step, loss, t_start, eval_hook)
    plot_run(cfg, workdir, metrics, evaluator)
    return summary

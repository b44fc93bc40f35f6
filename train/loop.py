"""The training loop: ``train(config, workdir)`` runs (or resumes) one training run.

Setup (checks, data source, model, sharded train state, checkpoint restore, the compiled
step, hooks), then a short loop: next batch, step, check the loss, hooks
(``train.hooks``: evaluation, logging, checkpoints). The data position is the step itself
(``train.sources``), so a checkpoint at step k resumes with the same batches the
uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grain
import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from train.checkpoint import Checkpointer
from train.config import ConfigError, ExperimentConfig
from train.errors import RunError, disk_error
from train.files import atomic_write_text
from train.hooks import CheckpointHook, EvalHook, LoggingHook, StepResult
from train.memory import StepMemory, machine_ram, peak_resident_bytes, resident_bytes
from train.metrics import MetricsWriter, plot_loss_curve, read_metrics
from train.models import build_model
from train.optimizer import decay_mask, make_optimizer, make_schedule
from train.overrides import config_diff, to_dict
from train.runs import initial_params
from train.series_data import PREFIX as SERIES_PREFIX
from train.sources import open_source
from train.step import estimate_memory, fmt_bytes, fmt_count, make_train_step, state_shardings
from train.workdir import WorkdirLock, check_workdir
from xlstm_jax.registry import family_of
from xlstm_jax.sharding import ShardingError, activate, make_mesh

__all__ = ["NonFiniteLossError", "train"]


class NonFiniteLossError(RunError):
    """The loss became NaN/inf; the last good checkpoint was kept."""


def _wait_interruptibly(x: jax.Array) -> None:
    """Waits for ``x`` while letting Python run signal handlers.

    A blocking read (``float(x)``) holds the main thread in C++ for the whole step, so a
    Ctrl-C would be noticed only after a step that can take minutes; polling keeps the
    interpreter responsive at a cost of at most a few milliseconds per step.
    """
    delay = 1e-4
    while not x.is_ready():
        time.sleep(delay)
        delay = min(2 * delay, 0.02)


def _put_global(tree, shardings):
    """Places values (identical on every process) as global arrays with ``shardings``."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    host = jax.device_get(tree)  # each process then hands its devices their slices
    return jax.tree.map(
        lambda x, sh: jax.make_array_from_callback(x.shape, sh, lambda idx: x[idx]),
        host,
        shardings,
    )


def _global_batch(local: np.ndarray, sharding: NamedSharding, global_shape=None) -> jax.Array:
    """The global batch from each process's rows (the batch axis is split across hosts)."""
    return jax.make_array_from_process_local_data(sharding, local, global_shape)


def _put_batch(local, sharding: NamedSharding, global_shape=None):
    """The global batch (any pytree of host rows; ``global_shape``: the leaves' leading
    axes, their trailing ones are each leaf's own)."""
    return jax.tree.map(
        lambda x: _global_batch(
            x, sharding, None if global_shape is None else (*global_shape, *x.shape[2:])
        ),
        local,
    )


def _check_setup(cfg: ExperimentConfig) -> Mesh:
    """Config checks that need the runtime (devices, hosts) or that the loop relies on.

    Returns the device mesh of the run.
    """
    try:
        mesh = make_mesh(cfg.mesh.resolve(jax.device_count()))
    except ShardingError as e:
        raise ConfigError(f"{e} (--set mesh.data=... mesh.fsdp=... mesh.tensor=...)") from e
    sizes = dict(mesh.shape)
    batch_split = sizes["data"] * sizes["fsdp"]
    if cfg.train.micro % batch_split:
        raise ConfigError(
            f"the micro-batch ({cfg.train.micro}) must be divisible by mesh.data x mesh.fsdp "
            f"= {batch_split}: change train.micro_batch_size / train.batch_size or the mesh."
        )
    if cfg.train.batch_size % jax.process_count():
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} must be a multiple of the "
            f"{jax.process_count()} processes."
        )
    # The step closes over the model's non-parameter state, so a dropout RNG would repeat
    # its masks every step; refuse rather than train silently wrong.
    m = cfg.model
    fam = family_of(m)
    forecaster = fam.task == "forecast"
    if forecaster != cfg.data.path.startswith(SERIES_PREFIX):
        raise ConfigError(
            "the forecaster (a TiRexConfig model) trains on series data (data.path=series:m3, "
            "series:FILE.csv, ...) and the language models on tokens; this run has "
            f"model {type(m).__name__} with data.path={cfg.data.path}: pick a matching pair "
            "(e.g. --config tirex_tiny for forecasting)."
        )
    slstm = getattr(m, "slstm_block", None)  # the Transformer baseline has none
    ff = slstm.feedforward if slstm is not None else None
    if getattr(m, "dropout", 0.0) > 0 or (ff is not None and ff.dropout > 0):
        raise ConfigError(
            "dropout is not supported by the trainer yet (the paper's recipes use none): "
            "set model.dropout=0 and model.slstm_block.feedforward.dropout=0."
        )
    init = Path(cfg.train.init_from) if cfg.train.init_from else None
    if init is not None and not (init.is_dir() or (forecaster and init.is_file())):
        raise ConfigError(
            f"train.init_from={cfg.train.init_from}: no such folder; give a train.main run "
            "folder or a checkpoint folder (config.json / config.yaml + safetensors)."
        )
    if cfg.data.reset_at_document_boundaries:
        why = fam.doc_resets(m)
        if why is not None:
            raise ConfigError(
                f"data.reset_at_document_boundaries does not apply to this {fam.name} model: "
                f"{why}. Unset data.reset_at_document_boundaries or change the model."
            )
        if cfg.data.path.startswith("synthetic:"):
            raise ConfigError(
                "data.reset_at_document_boundaries applies to packed text; synthetic tasks "
                "hold one example per row. Unset it."
            )
    return mesh


def _write_config(cfg: ExperimentConfig, workdir: Path, say: Callable[[str], None]) -> None:
    path = workdir / "config.json"
    new = to_dict(cfg)
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
            say(f"note: {path} was unreadable (a half-written file?); writing it afresh.")
        diff = config_diff(old, new) if isinstance(old, dict) else []
        if diff:
            say("config differs from the previous run in this workdir:\n  " + "\n  ".join(diff))
    atomic_write_text(path, json.dumps(new, indent=2) + "\n")


def _report_setup(cfg: ExperimentConfig, num_params: int, say: Callable[[str], None]) -> None:
    """The start-up lines: model size, devices, tokens per step, memory estimate."""
    tc, S = cfg.train, cfg.data.seq_len
    mem = estimate_memory(cfg, num_params)
    dev = jax.devices()[0]
    fam = family_of(cfg.model)
    forecaster = fam.task == "forecast"
    vocab = "" if forecaster else f"vocab {cfg.model.vocab_size}, "
    say(
        f"model: {fmt_count(num_params)} parameters ({num_params:,}), {cfg.model.num_blocks} "
        f"blocks ({fam.summary(cfg.model)}), "
        f"E {cfg.model.embedding_dim}, {vocab}compute "
        f"{cfg.model.dtype}, params {cfg.model.param_dtype}, remat {cfg.model.remat}"
    )
    say(
        f"devices: {jax.device_count()} x {dev.device_kind} ({dev.platform}) in "
        f"{jax.process_count()} process(es); mesh data/fsdp/tensor = "
        f"{'/'.join(map(str, cfg.mesh.resolve(jax.device_count())))}"
    )
    unit = "values" if forecaster else "tokens"
    say(
        f"{unit}/step: {tc.batch_size * S:,} = batch {tc.batch_size} x seq {S} "
        f"(micro-batch {tc.micro} x {tc.accum_steps} accumulation steps)"
    )
    say(
        "rough memory estimate per device (before compiling): "
        + ", ".join(f"{k} {fmt_bytes(v)}" for k, v in mem.items() if k != "total")
        + f" -> total ~{fmt_bytes(mem['total'])}"
    )
    total_ram, _ = machine_ram()
    if dev.platform == "cpu" and total_ram and mem["total"] * jax.local_device_count() > total_ram:
        say(
            f"warning: this looks like more than the machine's {fmt_bytes(total_ram)} of RAM; "
            "lower train.micro_batch_size or data.seq_len, or set model.remat=true "
            "(the compiled step's own figure follows)."
        )


def _report_step_memory(
    mem: StepMemory | None, eval_memory: list[StepMemory], say: Callable[[str], None]
) -> None:
    """The compiled step's memory, and a warning when the run (steps and evaluations, one
    at a time) will not fit."""
    if mem is None:
        return
    worst = max([mem, *eval_memory], key=lambda m: m.added)
    dev = jax.local_devices()[0]
    parts = (
        f"arguments {fmt_bytes(mem.arguments)}, temporaries {fmt_bytes(mem.temporaries)}, "
        f"outputs {fmt_bytes(mem.outputs)} ({fmt_bytes(mem.aliased)} of them donated)"
    )
    fixes = "lower train.micro_batch_size or data.seq_len, or set model.remat=true"
    if dev.platform == "cpu":
        peak = worst.predict_host_peak(jax.local_device_count())
        total_ram, available = machine_ram()
        if peak is None:
            say(f"memory: the step needs per device {parts}")
            return
        say(
            f"memory: the step needs per device {parts}; this process will peak near "
            f"{fmt_bytes(peak)} of RAM"
        )
        if total_ram and peak > total_ram:
            say(f"warning: that is more than the machine's {fmt_bytes(total_ram)} of RAM; {fixes}.")
        elif available and peak > available + (resident_bytes() or 0):
            say(
                f"warning: other processes leave only {fmt_bytes(available)} of RAM free; "
                "the run may be killed for memory."
            )
        return
    limit = (dev.memory_stats() or {}).get("bytes_limit") if hasattr(dev, "memory_stats") else None
    need = mem.arguments + worst.added
    where = f" of the {fmt_bytes(limit)} on {dev.device_kind}" if limit else ""
    say(f"memory: the step needs {fmt_bytes(need)} per device{where} ({parts})")
    if limit and need > limit:
        say(
            f"warning: that is more than one device holds; {fixes}, or shard over more "
            "devices (mesh.fsdp)."
        )


def _non_finite_loss(loss: float, step: int, out: dict, ckpt: Checkpointer, lead: bool) -> str:
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
    mesh = _check_setup(cfg)
    workdir = Path(workdir).absolute()
    check_workdir(workdir)
    source = open_source(cfg.data, cfg.model)
    if source.vocab_size and cfg.model.vocab_size < source.vocab_size:
        _say(
            f"model.vocab_size {cfg.model.vocab_size} -> {source.vocab_size} to fit "
            f"{source.vocab_origin}."
        )
        cfg = dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, vocab_size=source.vocab_size)
        )
    # The data is read (and bad data refused) before the workdir is created or touched.
    data_line = source.prepare()
    workdir.mkdir(parents=True, exist_ok=True)
    # One run per workdir; the other processes of a multi-host run follow the first.
    lock = WorkdirLock(workdir) if jax.process_index() == 0 else None
    if lock is not None and lock.took_over:
        _say(f"note: took over {lock.path} from PID {lock.took_over.get('pid')} (not running).")
    try:
        # The mesh is active while the step is traced: the layers run their recurrent ops
        # inside shard_map over it and constrain activations by logical axis names.
        with activate(mesh, cfg.mesh.rules):
            return _train(cfg, workdir, mesh, source, data_line, resume_step, t_start)
    finally:
        if lock is not None:
            lock.release()


def _close_all(*closers: Callable[[], None] | None) -> None:
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


def _say(msg: str) -> None:
    """Prints above the progress bar; several processes (hosts) run the loop, the first
    one talks."""
    if jax.process_index() == 0:
        tqdm.write(msg, file=sys.stdout)


def _train(
    cfg: ExperimentConfig,
    workdir: Path,
    mesh: Mesh,
    source,
    data_line: str,
    resume_step: int | None,
    t_start: float,
) -> dict:
    lead = jax.process_index() == 0
    n_proc, proc = jax.process_count(), jax.process_index()
    say = _say
    tc, S = cfg.train, cfg.data.seq_len
    abstract = nnx.eval_shape(lambda: build_model(cfg.model, nnx.Rngs(tc.seed)))
    num_params = sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    say(f"run {cfg.name} in {workdir}")
    _report_setup(cfg, num_params, say)
    say(data_line)

    model = build_model(cfg.model, nnx.Rngs(tc.seed))
    graphdef, param_state, rest = nnx.split(model, nnx.Param, ...)
    params = nnx.to_pure_dict(param_state)
    del model
    schedule = make_schedule(cfg.optimizer, cfg.schedule, tc.steps)
    tx = make_optimizer(
        cfg.optimizer,
        schedule,
        decay_mask(params, getattr(cfg.model, "weight_decay_on_embedding", False)),
    )
    state = {"params": params, "opt_state": tx.init(params)}
    # Parameters and optimizer state sharded by their logical axes (FSDP over `fsdp`,
    # tensor parallel over `tensor`); the batch split over data x fsdp.
    shardings = state_shardings(tx, param_state, state["opt_state"], mesh, cfg.mesh.rules)
    state = _put_global(state, shardings)
    batch_sharding = NamedSharding(mesh, PartitionSpec(None, ("data", "fsdp")))
    eval_sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    replicated = NamedSharding(mesh, PartitionSpec())

    ckpt = Checkpointer(workdir / "checkpoints", cfg.checkpoint.keep, cfg.checkpoint.async_save)
    start = 0
    model_cfg = to_dict(cfg.model)
    # Restoring onto this run's shardings: a checkpoint from any mesh fits any other.
    abstract_state = jax.tree.map(
        lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), state, shardings
    )
    try:
        restored = ckpt.restore_latest(
            abstract_state, model_cfg, say, step=resume_step, set_aside_newer=lead
        )
    except BaseException:
        ckpt.close()
        raise
    if restored is not None:
        step_restored, state, meta = restored
        start = int(meta["data_position"])
        say(f"resumed from {ckpt.directory / str(step_restored)} (step {start})")
        if tc.init_from:
            say(f"note: train.init_from={tc.init_from} is ignored: the run resumes instead.")
    elif tc.init_from:
        try:
            params = initial_params(tc.init_from, param_state, say)
        except BaseException:
            ckpt.close()
            raise
        state = _put_global({"params": params, "opt_state": tx.init(params)}, shardings)
        say(f"initialised the weights from {tc.init_from} (fine-tuning)")
    # Only now, with the checkpoint accepted, does config.json describe this run.
    if lead:
        _write_config(cfg, workdir, say)
    end = tc.steps if tc.stop_after == -1 else min(tc.steps, tc.stop_after)
    summary = {"num_params": num_params, "step": start, "status": "done"}
    if start >= end:
        say(f"nothing to do: the checkpoint is at step {start}, the run ends at {end}.")
        ckpt.close()
        summary["seconds"] = time.time() - t_start
        return summary

    batch_shape = (tc.accum_steps, tc.micro)
    abstract_batch = source.abstract_batch(batch_shape)
    step_fn = jax.jit(
        make_train_step(graphdef, rest, tx, objective=source.loss),
        in_shardings=(shardings, jax.tree.map(lambda _: batch_sharding, abstract_batch)),
        out_shardings=(shardings, replicated),
        donate_argnums=0,
    )
    t0 = time.time()
    compiled = step_fn.lower(state, abstract_batch).compile()
    say(f"compiled the train step in {time.time() - t0:.1f} s")

    evaluator = source.evaluator(
        graphdef,
        rest,
        tc.micro,
        tc.eval_batches,
        tc.seed,
        lambda b: _put_batch(b, eval_sharding),
        proc,
        n_proc,
    )
    eval_every = tc.eval_every
    if eval_every and evaluator.empty_note:
        say(evaluator.empty_note)
        eval_every = 0
    # The evaluation is compiled now too, so the memory report covers the whole run.
    eval_memory = evaluator.compile(state["params"]) if eval_every else []
    metrics = MetricsWriter(workdir, start, cfg.logging.tensorboard) if lead else None

    def meta(step: int) -> dict:
        return {"step": step, "data_position": step, "model_config": model_cfg}

    eval_hook = EvalHook(evaluator, eval_every, tc.steps, say)
    log_hook = LoggingHook(
        metrics,
        cfg.logging.every,
        tc.batch_size * S,
        tc.steps,
        start,
        cfg.logging.progress_bar and lead,
        cfg.name,
    )
    hooks = [eval_hook, log_hook, CheckpointHook(ckpt, cfg.checkpoint.every, meta)]

    ds = source.train_batches(tc.batch_size, tc.seed, proc, n_proc)[start:]
    data = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)))
    caught: list[int] = []

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

    # Everything but the steps is in memory now: the prediction starts from here.
    _report_step_memory(StepMemory.of(compiled), eval_memory, say)
    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    step, loss = start, float("nan")
    try:
        while step < end and not caught:
            t_step = time.perf_counter()
            local = jax.tree.map(  # this host's rows of every micro-batch
                lambda x: x.reshape(tc.accum_steps, tc.micro // n_proc, *x.shape[1:]),
                next(data),
            )
            state, out = compiled(state, _put_batch(local, batch_sharding, batch_shape))
            _wait_interruptibly(out["loss"])
            loss = float(out["loss"])
            if not math.isfinite(loss):
                raise NonFiniteLossError(_non_finite_loss(loss, step, out, ckpt, lead))
            step += 1
            result = StepResult(
                step=step,
                last=step == end,
                loss=loss,
                grad_norm=float(out["grad_norm"]),
                lr=float(schedule(step - 1)),
                seconds=time.perf_counter() - t_step,
                state=state,
            )
            for hook in hooks:
                hook(result)
        if caught:
            say(f"interrupted: saving a checkpoint at step {step} and exiting.")
            summary.update(status="interrupted", signal=caught[0])
        elif step < tc.steps:
            summary["status"] = "stopped"
        if ckpt.latest_step() != step:
            ckpt.save(step, state, meta(step))
    except OSError as e:  # metrics, events, plots: the checkpoints report their own
        what = f"writing {e.filename}" if e.filename else f"writing the run's files in {workdir}"
        last = ckpt.latest_step()
        keeps = (
            "no checkpoint was written yet"
            if last is None
            else (f"the last complete checkpoint ({ckpt.directory / str(last)}) is kept")
        )
        wrapped = disk_error(e, what, keeps)
        if wrapped is None:
            raise
        raise wrapped from e
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
        _close_all(log_hook.close, ckpt.close, metrics.close if metrics is not None else None)
    summary.update(step=step, loss=loss, seconds=time.time() - t_start)
    peak = peak_resident_bytes()
    if peak is not None:
        summary["peak_rss"] = peak
    if eval_hook.last_record is not None:
        summary["val_loss"] = eval_hook.last_record["val_loss"]
        if "val_scaled_acc" in eval_hook.last_record:
            summary["val_scaled_acc"] = eval_hook.last_record["val_scaled_acc"]
    if metrics is not None and cfg.logging.plot and read_metrics(metrics.path):
        records = read_metrics(metrics.path)
        title = f"{cfg.name} ({workdir.name})"
        plot_loss_curve(metrics.path, workdir / "loss_curve.png", title)
        evaluator.finish(workdir, records, title)
    return summary

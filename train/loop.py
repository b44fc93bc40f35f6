"""The training loop: ``train(config, workdir)`` runs (or resumes) one training run.

Shapes: a accumulation steps, m micro-batch, s sequence length, V vocabulary.

The train state is a plain pytree ``{"params", "opt_state"}`` (fp32 master weights; the
model computes in ``model.dtype``). One jitted step, with the state donated, takes a
``(a, m, s + 1)`` int32 batch, accumulates the gradients of ``a`` micro-batches, clips,
and applies masked AdamW. The data position is the step itself (``train.data``), so a
checkpoint at step k resumes with the same batches the uninterrupted run would have seen.
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
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from train import synthetic
from train.checkpoint import Checkpointer
from train.config import ConfigError, ExperimentConfig, config_diff, to_dict
from train.data import PackedWindows, check_source, eval_batches, load_corpus, train_batches
from train.eval_synthetic import SyntheticEvaluator, plot_accuracy_vs_length
from train.metrics import MetricsWriter, plot_loss_curve, read_metrics
from train.objective import scored_cross_entropy
from train.optimizer import decay_mask, make_optimizer, make_schedule
from train.tokenizer import load_tokenizer, padded_vocab_size
from xlstm_jax import xLSTMLMModel
from xlstm_jax.sharding import ShardingError, activate, make_mesh, tree_shardings
from xlstm_jax.transformer import TransformerConfig, TransformerLM

__all__ = ["NonFiniteLossError", "estimate_memory", "make_train_step", "train"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint was kept."""


def _fmt_bytes(n: float) -> str:
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} TB"


def _fmt_count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n:,}"


def estimate_memory(cfg: ExperimentConfig, num_params: int) -> dict[str, int]:
    """Rough bytes per device for one train step (no sharding yet).

    Parameters, gradients (two buffers with accumulation) and AdamW moments are exact for
    the master weights; "updates" counts the optimizer's update buffer plus the weights'
    copy in the compute dtype (bf16 runs). The activation term is an estimate of what the
    backward pass keeps per micro-batch: about a dozen (B, S, inner) tensors per block
    (projections, conv, gates, cell output) in the compute dtype, the mLSTM's chunk-local
    (S x chunk) gate matrices in fp32, and the fp32 logits with their softmax and
    gradient. With ``model.remat`` only each block's input stays, plus one block's worth
    during its recomputation. The compiled step's own figure is printed after compiling.
    """
    m = cfg.model
    p_bytes = jnp.dtype(m.param_dtype).itemsize
    c_bytes = jnp.dtype(m.dtype).itemsize
    B, S, E = cfg.train.micro, cfg.data.seq_len, m.embedding_dim
    per_block = []
    if isinstance(m, TransformerConfig):
        # q, k, v, attention output, residuals and the SwiGLU's (B, S, F) tensors, plus the
        # fp32 (S x S) attention weights per head.
        act = B * S * (8 * E + 4 * m.ffn_dim) * c_bytes + B * m.num_heads * S * S * 4
        per_block = [act] * m.num_blocks
    for kind in () if isinstance(m, TransformerConfig) else m.block_map:
        if kind == 0:
            layer = m.mlstm_block.mlstm
            inner, nh = layer.inner_embedding_dim, layer.num_heads
            chunk = min(S, layer.chunk_size)
            per_block.append(12 * B * S * inner * c_bytes + 3 * B * nh * S * chunk * 4)
        else:
            ff = m.slstm_block.feedforward
            up = ff.proj_up_dim if ff is not None else 0
            per_block.append(B * S * (16 * E * 4 + 4 * E * c_bytes + 3 * up * c_bytes))
    remat_blocks = len(per_block) * B * S * E * c_bytes + max(per_block)
    blocks = remat_blocks if m.remat else sum(per_block)
    logits = 3 * B * S * m.vocab_size * 4
    out = {
        "params": num_params * p_bytes,
        "grads": num_params * p_bytes * (2 if cfg.train.accum_steps > 1 else 1),
        "optimizer": 2 * num_params * p_bytes,
        "updates": num_params * (p_bytes + (c_bytes if m.dtype != m.param_dtype else 0)),
        "activations": blocks + logits,
    }
    out["total"] = sum(out.values())
    return out


def _build_model(model_cfg, rngs: nnx.Rngs) -> nnx.Module:
    """The xLSTM LM, or the Transformer baseline for a ``TransformerConfig``."""
    if isinstance(model_cfg, TransformerConfig):
        return TransformerLM(model_cfg, rngs=rngs)
    return xLSTMLMModel(model_cfg, rngs=rngs)


def _loss_fn(graphdef, rest, max_scored: int | None = None):
    def loss(params, tokens):
        model = nnx.merge(graphdef, params, rest)
        # Synthetic tasks score only their answer tokens; the mask rides in the ids' sign
        # (see train.synthetic). Text batches are all non-negative: every token counts.
        ce, _, count = scored_cross_entropy(model, tokens, max_scored)
        return jnp.sum(ce) / jnp.maximum(jnp.sum(count), 1)

    return loss


def make_train_step(
    graphdef, rest, tx: optax.GradientTransformation, max_scored: int | None = None
) -> Callable:
    """``step(state, batch) -> (state, {"loss", "grad_norm"})`` with batch (a, m, s + 1).

    The loss is the mean next-token cross-entropy over the scored tokens of the ``a``
    micro-batches (the mean of the micro-batches' means); gradients are accumulated in
    fp32. ``max_scored``: see ``train.objective.scored_predictions`` (None: every
    position goes through the LM head).
    """
    loss_fn = _loss_fn(graphdef, rest, max_scored)
    grad_fn = jax.value_and_grad(loss_fn)

    def step(state, batch):
        params = state["params"]
        if batch.shape[0] == 1:
            loss, grads = grad_fn(params, batch[0])
        else:

            def micro(carry, tokens):
                loss_sum, grad_sum = carry
                loss, grads = grad_fn(params, tokens)
                return (loss_sum + loss, jax.tree.map(jnp.add, grad_sum, grads)), None

            zeros = jax.tree.map(jnp.zeros_like, params)
            (loss, grads), _ = jax.lax.scan(micro, (jnp.zeros((), jnp.float32), zeros), batch)
            loss = loss / batch.shape[0]
            grads = jax.tree.map(lambda g: g / batch.shape[0], grads)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new_state = {"params": optax.apply_updates(params, updates), "opt_state": opt_state}
        grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
        return new_state, {"loss": loss, "grad_norm": grad_norm}

    return step


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


def _make_eval_step(graphdef, rest, max_scored: int | None = None) -> Callable:
    return jax.jit(_loss_fn(graphdef, rest, max_scored))


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
    slstm = getattr(m, "slstm_block", None)  # the Transformer baseline has none
    ff = slstm.feedforward if slstm is not None else None
    if m.dropout > 0 or (ff is not None and ff.dropout > 0):
        raise ConfigError(
            "dropout is not supported by the trainer yet (the paper's recipes use none): "
            "set model.dropout=0 and model.slstm_block.feedforward.dropout=0."
        )
    return mesh


def _write_config(cfg: ExperimentConfig, workdir: Path, say: Callable[[str], None]) -> None:
    path = workdir / "config.json"
    new = to_dict(cfg)
    if path.exists():
        diff = config_diff(json.loads(path.read_text()), new)
        if diff:
            say("config differs from the previous run in this workdir:\n  " + "\n  ".join(diff))
    path.write_text(json.dumps(new, indent=2) + "\n")


def _block_kinds(m) -> str:
    if isinstance(m, TransformerConfig):
        return f"Transformer, {m.num_heads} heads"
    return f"{m.block_map.count(0)} mLSTM, {m.block_map.count(1)} sLSTM"


def _report_setup(cfg: ExperimentConfig, num_params: int, say: Callable[[str], None]) -> None:
    """The start-up lines: model size, devices, tokens per step, memory estimate."""
    tc, S = cfg.train, cfg.data.seq_len
    mem = estimate_memory(cfg, num_params)
    dev = jax.devices()[0]
    say(
        f"model: {_fmt_count(num_params)} parameters ({num_params:,}), {cfg.model.num_blocks} "
        f"blocks ({_block_kinds(cfg.model)}), "
        f"E {cfg.model.embedding_dim}, vocab {cfg.model.vocab_size}, compute "
        f"{cfg.model.dtype}, params {cfg.model.param_dtype}, remat {cfg.model.remat}"
    )
    say(
        f"devices: {jax.device_count()} x {dev.device_kind} ({dev.platform}) in "
        f"{jax.process_count()} process(es); mesh data/fsdp/tensor = "
        f"{'/'.join(map(str, cfg.mesh.resolve(jax.device_count())))}"
    )
    say(
        f"tokens/step: {tc.batch_size * S:,} = batch {tc.batch_size} x seq {S} "
        f"(micro-batch {tc.micro} x {tc.accum_steps} accumulation steps)"
    )
    say(
        "estimated memory/device: "
        + ", ".join(f"{k} {_fmt_bytes(v)}" for k, v in mem.items() if k != "total")
        + f" -> total ~{_fmt_bytes(mem['total'])}"
    )


def train(cfg: ExperimentConfig, workdir: str | Path) -> dict:
    """Trains ``cfg`` in ``workdir``, resuming from its latest checkpoint if there is one.

    Writes ``config.json``, ``metrics.jsonl``, TensorBoard events, ``checkpoints/`` and
    ``loss_curve.png`` into ``workdir``. SIGINT/SIGTERM save a checkpoint and return.

    Returns:
        A summary: ``status`` ("done", "stopped" at ``train.stop_after``, or
        "interrupted" with ``signal``), ``step``, ``loss``, ``val_loss`` (if evaluated),
        ``seconds`` and ``num_params``.

    Raises:
        ConfigError, DataError: before any compute, for a bad setup.
        CheckpointError: the latest checkpoint cannot be restored (nothing is deleted).
        NonFiniteLossError: the loss became NaN or infinite.
    """
    # Everything that can fail cheaply fails here, before data or model are touched.
    mesh = _check_setup(cfg)
    # The mesh is active while the step is traced: the layers run their recurrent ops
    # inside shard_map over it and constrain activations by logical axis names.
    with activate(mesh, cfg.mesh.rules):
        return _train(cfg, workdir, mesh)


def _train(cfg: ExperimentConfig, workdir: str | Path, mesh: Mesh) -> dict:
    t_start = time.time()
    workdir = Path(workdir).absolute()
    # Several processes (hosts) run this same function; only the first one talks.
    lead = jax.process_index() == 0
    n_proc, proc = jax.process_count(), jax.process_index()

    def say(msg: str) -> None:
        if lead:
            tqdm.write(msg, file=sys.stdout)

    # A synthetic task (data.path=synthetic:TASK) generates its own ids: no tokenizer.
    task = synthetic.get_task(cfg.data.path) if synthetic.task_name(cfg.data.path) else None
    if task is None:
        tokenizer = load_tokenizer(cfg.data.tokenizer)
        check_source(cfg.data)
        vocab = padded_vocab_size(tokenizer.vocab_size)
        fits = f"the tokenizer {cfg.data.tokenizer!r} ({tokenizer.vocab_size} ids, padded to 64)"
    else:
        vocab, fits = task.vocab_size, f"synthetic:{task.name}'s {task.vocab_size} ids"
    if cfg.model.vocab_size < vocab:
        say(f"model.vocab_size {cfg.model.vocab_size} -> {vocab} to fit {fits}.")
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab))
    workdir.mkdir(parents=True, exist_ok=True)
    if lead:
        _write_config(cfg, workdir, say)

    tc, S = cfg.train, cfg.data.seq_len
    abstract = nnx.eval_shape(lambda: _build_model(cfg.model, nnx.Rngs(tc.seed)))
    num_params = sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    say(f"run {cfg.name} in {workdir}")
    _report_setup(cfg, num_params, say)

    if task is None:
        corpus = load_corpus(cfg.data, tokenizer)
        train_windows = PackedWindows(corpus.train, S)
        val_windows = PackedWindows(corpus.val, S)
        say(
            f"data: {corpus.description}; tokenizer {cfg.data.tokenizer}; "
            f"{len(corpus.train):,} train tokens ({len(train_windows):,} windows), "
            f"{len(corpus.val):,} validation tokens"
        )
    else:
        say(f"data: {synthetic.describe(cfg.data)}")

    model = _build_model(cfg.model, nnx.Rngs(tc.seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    del model
    schedule = make_schedule(cfg.optimizer, cfg.schedule, tc.steps)
    tx = make_optimizer(
        cfg.optimizer, schedule, decay_mask(params, cfg.model.weight_decay_on_embedding)
    )
    state = {"params": params, "opt_state": tx.init(params)}
    # Parameters and optimizer state sharded by their logical axes (FSDP over `fsdp`,
    # tensor parallel over `tensor`); the batch split over data x fsdp.
    shardings = tree_shardings(state)
    state = _put_global(state, shardings)
    batch_sharding = NamedSharding(mesh, PartitionSpec(None, ("data", "fsdp")))
    eval_sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    replicated = NamedSharding(mesh, PartitionSpec())

    ckpt = Checkpointer(
        workdir / "checkpoints",
        cfg.checkpoint.keep,
        cfg.checkpoint.async_save,
    )
    start = 0
    latest = ckpt.latest_step()
    model_cfg = to_dict(cfg.model)
    if latest is not None:
        # Restoring onto this run's shardings: a checkpoint from any mesh fits any other.
        abstract_state = jax.tree.map(
            lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), state, shardings
        )
        state, meta = ckpt.restore(latest, abstract_state, model_cfg)
        start = int(meta["data_position"])
        say(f"resumed from {ckpt.directory / str(latest)} (step {start})")
    end = tc.steps if tc.stop_after == -1 else min(tc.steps, tc.stop_after)
    summary = {"num_params": num_params, "step": start, "status": "done"}
    if start >= end:
        say(f"nothing to do: the checkpoint is at step {start}, the run ends at {end}.")
        ckpt.close()
        summary["seconds"] = time.time() - t_start
        return summary

    # MQAR scores a known few positions per row: only those go through the LM head.
    max_scored = synthetic.max_scored(cfg.data) if task is not None else None
    step_fn = jax.jit(
        make_train_step(graphdef, rest, tx, max_scored),
        in_shardings=(shardings, batch_sharding),
        out_shardings=(shardings, replicated),
        donate_argnums=0,
    )
    batch_shape = (tc.accum_steps, tc.micro, S + 1)
    t0 = time.time()
    compiled = step_fn.lower(state, jax.ShapeDtypeStruct(batch_shape, jnp.int32)).compile()
    analysis = compiled.memory_analysis()
    xla_mem = (
        f"; XLA temporaries {_fmt_bytes(analysis.temp_size_in_bytes)}"
        if analysis is not None
        else ""
    )
    say(f"compiled the train step in {time.time() - t0:.1f} s{xla_mem}")
    eval_step = _make_eval_step(graphdef, rest, max_scored)
    evaluator = None
    if task is not None:
        evaluator = SyntheticEvaluator(
            cfg.data, graphdef, rest, tc.micro, tc.eval_batches, tc.seed, max_scored
        )
        val_data = evaluator.batches
    else:
        val_data = eval_batches(val_windows, tc.micro, tc.eval_batches, proc, n_proc)
    if tc.eval_every and len(val_data) == 0:
        say(
            f"note: {len(corpus.val)} validation tokens make no batch of {tc.micro} x {S + 1}; "
            f"evaluation is off (raise data.val_fraction for a validation set)."
        )

    def evaluate(params) -> float:
        return float(
            np.mean([float(eval_step(params, _global_batch(b, eval_sharding))) for b in val_data])
        )

    metrics = MetricsWriter(workdir, start, cfg.logging.tensorboard) if lead else None
    source = (
        train_batches(train_windows, tc.batch_size, tc.seed, proc, n_proc)
        if task is None
        else synthetic.train_batches(cfg.data, tc.batch_size, tc.seed, proc, n_proc)
    )
    data = iter(
        source[start:].to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
    )

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

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    bar = tqdm(
        total=tc.steps,
        initial=start,
        disable=not (cfg.logging.progress_bar and lead),
        dynamic_ncols=True,
        desc=cfg.name,
        file=sys.stderr,
    )
    tokens_per_step = tc.batch_size * S
    step = start
    loss = float("nan")
    val_loss = None
    t_log, steps_since_log = time.time(), 0
    tps = 0.0

    def meta() -> dict:
        return {"step": step, "data_position": step, "model_config": model_cfg}

    try:
        while step < end and not caught:
            local = np.asarray(next(data)).reshape(
                tc.accum_steps, tc.micro // n_proc, S + 1
            )  # this host's rows of every micro-batch
            batch = _global_batch(local, batch_sharding, batch_shape)
            state, out = compiled(state, batch)
            _wait_interruptibly(out["loss"])
            loss = float(out["loss"])
            if not math.isfinite(loss):
                last = ckpt.latest_step()
                raise NonFiniteLossError(
                    f"loss became {loss} at step {step + 1} (grad norm "
                    f"{float(out['grad_norm']):.3g}); stopped without saving. The last good "
                    f"checkpoint ({'none' if last is None else ckpt.directory / str(last)}) is "
                    f"kept. Lower optimizer.lr, raise schedule.warmup_steps, or set "
                    f"optimizer.grad_clip, then rerun (it resumes from that checkpoint)."
                )
            step += 1
            steps_since_log += 1
            lr = float(schedule(step - 1))
            record = None
            if step % cfg.logging.every == 0 or step == end:
                now = time.time()
                tps = steps_since_log * tokens_per_step / max(now - t_log, 1e-9)
                t_log, steps_since_log = now, 0
                record = {"step": step, "loss": loss, "lr": lr, "tokens_per_s": tps}
                record["grad_norm"] = float(out["grad_norm"])
            if tc.eval_every and len(val_data) and (step % tc.eval_every == 0 or step == tc.steps):
                record = record or {"step": step, "loss": loss, "lr": lr, "tokens_per_s": tps}
                if evaluator is not None:
                    record.update(evaluator(state["params"]))
                    val_loss = record["val_loss"]
                    say(f"step {step}: loss {loss:.4f}, " + synthetic.format_eval(record))
                else:
                    val_loss = evaluate(state["params"])
                    record.update(val_loss=val_loss, val_ppl=math.exp(min(val_loss, 700.0)))
                    say(
                        f"step {step}: loss {loss:.4f}, val_loss {val_loss:.4f}, "
                        f"val_ppl {record['val_ppl']:.2f}"
                    )
                # Evaluation time is not training throughput.
                t_log = time.time()
            if record is not None and metrics is not None:
                metrics.write(record)
            speed = f"{tps:,.0f}" if tps else "-"  # measured from the first logging step
            bar.set_postfix_str(f"loss {loss:.4f} lr {lr:.2e} tok/s {speed}", refresh=False)
            bar.update(1)
            if step % cfg.checkpoint.every == 0:
                ckpt.save(step, state, meta())
        if caught:
            say(f"interrupted: saving a checkpoint at step {step} and exiting.")
            summary.update(status="interrupted", signal=caught[0])
        elif step < tc.steps:
            summary["status"] = "stopped"
        if ckpt.latest_step() != step:
            ckpt.save(step, state, meta())
    finally:
        bar.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
        ckpt.close()
        if metrics is not None:
            metrics.close()
    summary.update(step=step, loss=loss, seconds=time.time() - t_start)
    if val_loss is not None:
        summary["val_loss"] = val_loss
    if metrics is not None and cfg.logging.plot and read_metrics(metrics.path):
        plot_loss_curve(metrics.path, workdir / "loss_curve.png", f"{cfg.name} ({workdir.name})")
        if evaluator is not None and evaluator.last is not None:
            plot_accuracy_vs_length(
                evaluator,
                read_metrics(metrics.path),
                workdir / "accuracy_vs_length.png",
                f"{cfg.name} ({workdir.name})",
                train_max_len=cfg.data.train_lengths[1],
            )
    if evaluator is not None and evaluator.latest is not None:
        summary["val_scaled_acc"] = evaluator.latest["val_scaled_acc"]
    return summary

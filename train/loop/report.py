"""What the loop prints: one talking process, the start-up lines (model, devices, batch,
the memory estimate) and the compiled step's memory against what the machine has."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import jax
from tqdm import tqdm

from train.config.schema import ExperimentConfig
from train.loop.memory import (
    StepMemory,
    device_capacity,
    estimate_memory,
    fmt_bytes,
    fmt_count,
    machine_ram,
    resident_bytes,
)
from xlstm_jax.registry import family_of

__all__ = ["report_setup", "report_step_memory", "say"]


def say(msg: str) -> None:
    """Prints above the progress bar; several processes (hosts) run the loop, the first
    one talks."""
    if jax.process_index() == 0:
        tqdm.write(msg, file=sys.stdout)


def report_setup(cfg: ExperimentConfig, num_params: int, say: Callable[[str], None]) -> None:
    """The start-up lines: model size, devices, tokens per step, memory estimate."""
    tc, S = cfg.train, cfg.data.seq_len
    sizes = cfg.mesh.resolve(jax.device_count())
    mem = estimate_memory(cfg, num_params, sizes)
    dev = jax.devices()[0]
    fam = family_of(cfg.model)
    forecaster = fam.task == "forecast"
    vocab = "" if forecaster else f"vocab {cfg.model.vocab_size}, "
    remat = getattr(cfg.model, "remat", False)  # TiRex-2 has no remat
    say(
        f"model: {fmt_count(num_params)} parameters ({num_params:,}), {cfg.model.num_blocks} "
        f"blocks ({fam.summary(cfg.model)}), "
        f"E {cfg.model.embedding_dim}, {vocab}compute "
        f"{cfg.model.dtype}, params {cfg.model.param_dtype}, remat {remat}"
    )
    say(
        f"devices: {jax.device_count()} x {dev.device_kind} ({dev.platform}) in "
        f"{jax.process_count()} process(es); mesh data/fsdp/tensor = "
        f"{'/'.join(map(str, sizes))}"
    )
    unit = "values" if forecaster else "tokens"
    say(
        f"{unit}/step: {tc.batch_size * S:,} = batch {tc.batch_size} x seq {S} "
        f"(micro-batch {tc.micro} x {tc.accum_steps} accumulation steps)"
    )
    say(
        "rough memory estimate per device (before compiling; ideal sharding over the "
        "mesh): "
        + ", ".join(f"{k} {fmt_bytes(v)}" for k, v in mem.items() if k != "total")
        + f" -> total ~{fmt_bytes(mem['total'])}"
    )


def report_step_memory(
    mem: StepMemory | None,
    eval_memory: list[StepMemory],
    model: Any,
    say: Callable[[str], None],
) -> None:
    """Says the compiled step's memory; ``ConfigError`` when the run (steps and
    evaluations, one at a time) cannot fit in what the machine or a device has, with the
    fixes that apply to ``model`` (its config).

    Called before the run writes anything (config, metrics, checkpoints), so a refusal
    leaves the workdir as it was.
    """
    from xlstm_jax.layers.config import ConfigError

    if mem is None:
        return
    worst = max([mem, *eval_memory], key=lambda m: m.added)
    dev = jax.local_devices()[0]
    parts = (
        f"arguments {fmt_bytes(mem.arguments)}, temporaries {fmt_bytes(mem.temporaries)}, "
        f"outputs {fmt_bytes(mem.outputs)} ({fmt_bytes(mem.aliased)} of them donated)"
    )
    fixes = "lower train.micro_batch_size or data.seq_len"
    if not getattr(model, "remat", True):
        fixes += ", or set model.remat=true"
    if getattr(model, "scan_layers", True) is False and _scannable(model):
        # XLA:CPU keeps every block's full-size gradient until the step's end; the scan
        # produces them one block at a time (benchmarks/results/start_memory.md).
        fixes += ", or set model.scan_layers=true (the blocks as one scan: far smaller steps)"
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
            raise ConfigError(
                f"the compiled train step would take this process to about "
                f"{fmt_bytes(peak)} of RAM, more than the machine's {fmt_bytes(total_ram)} "
                f"(per device: {parts}); {fixes}. Nothing was written."
            )
        if available and peak > available + (resident_bytes() or 0):
            say(
                f"warning: other processes leave only {fmt_bytes(available)} of RAM free; "
                "the run may be killed for memory."
            )
        return
    limit, _ = device_capacity()
    need = mem.arguments + worst.added
    where = f" of the {fmt_bytes(limit)} on {dev.device_kind}" if limit else ""
    say(f"memory: the step needs {fmt_bytes(need)} per device{where} ({parts})")
    if limit and need > limit:
        raise ConfigError(
            f"the compiled train step needs {fmt_bytes(need)} per device, more than the "
            f"{fmt_bytes(limit)} one {dev.device_kind} holds ({parts}); {fixes}, or shard "
            "over more devices (mesh.fsdp). Nothing was written."
        )


def _scannable(model: Any) -> bool:
    """Whether ``model.scan_layers=true`` is valid for this model config."""
    try:
        dataclasses.replace(model, scan_layers=True)
    except (ValueError, TypeError):  # ConfigError is a ValueError: sLSTM blocks, dropout
        return False
    return True

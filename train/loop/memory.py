"""Memory: what this process holds and what the compiled step will add, against what the
machine has, so a run that cannot fit says so before it starts; and the rough estimate
printed before compiling (``estimate_memory``).

On a CPU the "devices" share the host's RAM with everything else the process holds (the
runtime, the corpus, the compiler's leftovers), so the prediction is the resident memory
after compiling plus what one step allocates beyond its arguments (its temporaries and
outputs, less the donated buffers it reuses), from the compiled step's memory analysis.
On a GPU it is per device: the step's arguments, temporaries and outputs against the
device's memory limit.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax.numpy as jnp

from train.config.schema import ExperimentConfig
from xlstm_jax.registry import family_of

__all__ = [
    "StepMemory",
    "check_estimate_fits",
    "check_forecast_memory",
    "estimate_memory",
    "fmt_bytes",
    "fmt_count",
    "device_capacity",
    "machine_ram",
    "peak_resident_bytes",
    "resident_bytes",
]


def _proc_kib(path: str, field: str) -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def resident_bytes() -> int | None:
    """This process's resident memory now (Linux; None elsewhere)."""
    return _proc_kib("/proc/self/status", "VmRSS")


def peak_resident_bytes() -> int | None:
    """This process's peak resident memory so far (Linux; None elsewhere)."""
    return _proc_kib("/proc/self/status", "VmHWM")


def machine_ram() -> tuple[int | None, int | None]:
    """(total, available) bytes of RAM (Linux; None elsewhere)."""
    return _proc_kib("/proc/meminfo", "MemTotal"), _proc_kib("/proc/meminfo", "MemAvailable")


def check_forecast_memory(n: int, horizon: int, q_all: int, q_out: int) -> None:
    """``ConfigError`` unless ``python -m train.forecast``'s forecasts of ``n`` series x
    ``horizon`` steps fit in the available RAM: about three float32 copies of all ``q_all``
    levels (the rollout's output, its transpose, the batches joined), about 20 bytes per
    written value (``q_out`` levels and the mean: the CSV text and its Arrow column) and 60
    bytes per row (id, step, timestamp)."""
    from xlstm_jax.layers.config import ConfigError

    total, available = machine_ram()
    ram = available or total
    need = n * horizon * (q_all * 4 * 3 + (q_out + 1) * 20 + 60)
    if ram is not None and need > ram:
        fits = max(int(horizon * ram / need), 1)
        raise ConfigError(
            f"--horizon {horizon}: the forecasts of {n} series x {horizon} steps x {q_all} "
            f"levels need about {fmt_bytes(need)} of memory, more than the "
            f"{fmt_bytes(ram)} this machine has available; give a shorter --horizon (at most "
            f"about {fits}) or forecast fewer series per run."
        )


def device_capacity() -> tuple[int | None, str]:
    """What one step may use per device and its name: the machine's RAM shared by the
    process's CPU devices (per device), or an accelerator's own memory limit."""
    import jax

    dev = jax.local_devices()[0]
    if dev.platform == "cpu":
        total, _ = machine_ram()
        n = jax.local_device_count()
        share = f" shared by {n} devices" if n > 1 else ""
        return (None if total is None else total // n), f"the machine's RAM{share}"
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    return (stats or {}).get("bytes_limit"), f"the memory of one {dev.device_kind}"


def check_estimate_fits(cfg: ExperimentConfig, num_params: int, devices: int) -> None:
    """``ConfigError`` when even a low estimate of a train step's memory per device exceeds
    what a device has, so a run that cannot fit is refused before it writes anything or
    allocates its state.

    Low, so that it never refuses a run that fits: ``estimate_memory`` on the run's mesh
    (ideal sharding; its activations are about half what compiled steps need on a CPU).
    """
    from xlstm_jax.layers.config import ConfigError

    capacity, where = device_capacity()
    data, fsdp, _ = sizes = cfg.mesh.resolve(devices)
    mem = estimate_memory(cfg, num_params, sizes)
    act = mem["activations"]
    fixed = mem["total"] - act
    if capacity is None or fixed + act <= capacity:
        return
    tc = cfg.train
    room = capacity - fixed
    # Compiled steps need about twice the estimate's activations: suggest what fits then.
    micro = int(tc.micro * room / (2 * act)) // (data * fsdp) * (data * fsdp) if room > 0 else 0
    hint = (
        f"train.micro_batch_size={micro} or less should fit (compiled steps need about "
        "twice this estimate's activations)"
        if micro >= 1
        else "the parameters and optimizer state alone do not fit: shard them over more "
        "devices (mesh.fsdp) or pick a smaller model"
    )
    raise ConfigError(
        f"one train step needs at least {fmt_bytes(fixed + act)} per device (parameters, "
        f"gradients and optimizer {fmt_bytes(fixed)}, activations of micro-batch {tc.micro} x "
        f"seq {cfg.data.seq_len} {fmt_bytes(act)}), more than the {fmt_bytes(capacity)} of "
        f"{where}; {hint}. Other fixes: lower data.seq_len, set model.remat=true, or use "
        "more devices."
    )


@dataclasses.dataclass(frozen=True)
class StepMemory:
    """The compiled step's bytes per device (``compiled.memory_analysis()``)."""

    arguments: int
    outputs: int
    temporaries: int
    aliased: int

    @classmethod
    def of(cls, compiled) -> StepMemory | None:
        a = compiled.memory_analysis()
        if a is None:
            return None
        return cls(
            a.argument_size_in_bytes,
            a.output_size_in_bytes,
            a.temp_size_in_bytes,
            getattr(a, "alias_size_in_bytes", 0),
        )

    @property
    def added(self) -> int:
        """What running the step allocates beyond its arguments."""
        return max(self.outputs - self.aliased, 0) + self.temporaries

    def predict_host_peak(self, local_devices: int) -> int | None:
        """The process's peak resident memory while training on a CPU."""
        now, peak = resident_bytes(), peak_resident_bytes()
        if now is None:
            return None
        return max(peak or 0, now + local_devices * self.added)


def fmt_bytes(n: float) -> str:
    """``n`` bytes for people: ``"512 B"``, ``"1.5 GB"``."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} TB"


def fmt_count(n: int) -> str:
    """A parameter count for people: ``"12,345"``, ``"1.3M"``, ``"6.87B"``."""
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n:,}"


def estimate_memory(
    cfg: ExperimentConfig, num_params: int, mesh: tuple[int, int, int] = (1, 1, 1)
) -> dict[str, int]:
    """Rough bytes per device for one train step on a mesh of ``mesh`` = (data, fsdp,
    tensor) devices, under ideal sharding: parameters, gradients, optimizer state and
    updates divided over fsdp x tensor, activations (the micro-batch) over data x fsdp.
    Real shardings fall short of it where an axis does not divide (the compiled step's
    figure, printed after compiling, is the measured one).

    Parameters, gradients (two buffers with accumulation) and AdamW moments are exact for
    the master weights; "updates" counts the optimizer's update buffer plus the weights'
    copy in the compute dtype (bf16 runs). The activation term is an estimate of what the
    backward pass keeps per micro-batch: about a dozen (B, S, inner) tensors per block
    (projections, conv, gates, cell output) in the compute dtype, the mLSTM's chunk-local
    (S x chunk) gate matrices in fp32, and the fp32 logits with their softmax and
    gradient. With ``model.remat`` only each block's input stays, plus one block's worth
    during its recomputation. With ``model.scan_layers`` the step stacks the blocks'
    parameters (a copy, in the parameter dtype) and gets their gradients stacked before
    splitting them: "scan" counts those two stacks (every parameter but the embedding).
    """
    m = cfg.model
    p_bytes = jnp.dtype(m.param_dtype).itemsize
    c_bytes = jnp.dtype(m.dtype).itemsize
    fam = family_of(m)
    # A forecaster with covariates packs each series into data.series_rows rows.
    rows = cfg.data.series_rows if fam.covariates else 1
    act = fam.activation_bytes(m, cfg.train.micro * rows, cfg.data.seq_len, c_bytes)
    # With remat each block's input stays, plus one block's worth while it is recomputed.
    if getattr(m, "remat", False):
        blocks = len(act.per_block) * act.block_input + max(act.per_block)
    else:
        blocks = sum(act.per_block)
    data, fsdp, tensor = mesh
    state = fsdp * tensor  # the devices each parameter (and its moments) is split over
    out = {
        "params": num_params * p_bytes // state,
        "grads": num_params * p_bytes * (2 if cfg.train.accum_steps > 1 else 1) // state,
        "optimizer": 2 * num_params * p_bytes // state,
        "updates": num_params * (p_bytes + (c_bytes if m.dtype != m.param_dtype else 0)) // state,
        "activations": (blocks + act.head) // (data * fsdp),
    }
    if getattr(m, "scan_layers", False):
        stacked = max(num_params - m.vocab_size * m.embedding_dim, 0)
        out["scan"] = 2 * stacked * p_bytes // state
    out["total"] = sum(out.values())
    return out

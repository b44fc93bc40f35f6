"""Memory: what this process holds and what the compiled step will add, against what the
machine has, so a run that cannot fit says so before it starts.

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

__all__ = ["StepMemory", "machine_ram", "peak_resident_bytes", "resident_bytes"]


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

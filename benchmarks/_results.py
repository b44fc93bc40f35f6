"""Where a benchmark writes its table, and the lines every table starts with.

A benchmark writes to the scratch folder ``runs/benchmarks/`` (git ignores ``runs/``) unless
asked to update the tracked table in ``benchmarks/results/`` (``--update-results``) or given
a file (``--out``), so running one never changes the repository by accident. Every table
starts with the machine, the date and the command that made it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "runs" / "benchmarks"
TRACKED = ROOT / "benchmarks" / "results"


def add_output_args(parser: argparse.ArgumentParser, name: str) -> None:
    """``--out`` and ``--update-results`` for the table ``name`` (e.g. ``decode_cpu.md``)."""
    parser.add_argument(
        "--out",
        default=None,
        help=f"write the table here (default: runs/benchmarks/{name}, a scratch copy)",
    )
    parser.add_argument(
        "--update-results",
        action="store_true",
        help=f"write the tracked table benchmarks/results/{name} instead",
    )


def output_path(args: argparse.Namespace, name: str) -> Path:
    """The file the table goes to (its folder created)."""
    path = Path(args.out) if args.out else (TRACKED if args.update_results else SCRATCH) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 2**20:.0f} GiB RAM"
    except OSError:
        pass
    return "RAM unknown"


def machine() -> str:
    """The machine in words: cores, CPU model, RAM."""
    return f"{os.cpu_count()} cores ({_cpu_model()}), {_ram_gib()}"


def provenance(argv: list[str] | None = None) -> list[str]:
    """Markdown lines: machine (cores, CPU, RAM, load average at start), date, command."""
    argv = sys.argv if argv is None else argv
    one, five, fifteen = os.getloadavg()
    state = "idle" if one < 0.5 else f"busy: about {one:.1f} cores in use by other work"
    return [
        f"- machine: {machine()}; at the start "
        f"{state} (load average {one:.1f} / {five:.1f} / {fifteen:.1f} over 1 / 5 / 15 min)",
        f"- date: {datetime.date.today().isoformat()}; Python {platform.python_version()}",
        f"- command: `python {' '.join(argv)}`",
    ]


def rerun_with_devices(devices: int) -> None:
    """Runs this script again as ``SCRIPT --child ARGS`` (the path as it was invoked, so the
    table records the command as typed) with ``devices`` simulated CPU devices and exits
    with its status: the device count is fixed when JAX starts, so a benchmark that picks
    it from its arguments measures in a child process."""
    import subprocess

    env = dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
    )
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    sys.exit(subprocess.call([sys.executable, *sys.argv[:1], "--child", *sys.argv[1:]], env=env))

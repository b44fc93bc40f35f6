"""The protocol every timing benchmark follows, so that a ratio means something.

* Each side (ours, the reference) is measured in its own process, one process per round,
  the sides alternating (A B A B ...), so neither inherits the other's threads, caches or
  allocator state, and slow drifts of the machine fall on both.
* Several rounds: the table gives the median and the spread (lowest-highest).
* The machine's load average is recorded before and after. A machine is idle when the
  1-minute load is below ``IDLE_LOAD``; ``--update-results`` refuses to write a table
  measured on a busy machine unless ``--force``, and then the table says so. A benchmark
  without a reference side records the same (``add_force_arg``, ``check_idle``,
  ``load_line``).
* The machine's fp32 matmul peak is measured (JAX, 2048 x 2048, best of several), so
  each row can state the fraction of it that the step reaches.

A side is a command that prints one JSON object as its last line of output. Usage::

    sides = {"ours": [sys.executable, __file__, "--side", "ours"], "ref": [...]}
    runs = alternate(sides, rounds=args.rounds)   # {"ours": [dict, ...], "ref": [...]}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _results import ROOT

IDLE_LOAD = 0.5


def add_protocol_args(parser: argparse.ArgumentParser, rounds: int = 3) -> None:
    """``--rounds`` and ``--force`` (write a busy machine's table with ``--update-results``)."""
    parser.add_argument(
        "--rounds", type=int, default=rounds, help="alternating rounds, one process per side"
    )
    add_force_arg(parser)


def add_force_arg(parser: argparse.ArgumentParser) -> None:
    """``--force`` alone, for a benchmark without sides to alternate (rounds make no sense)."""
    parser.add_argument(
        "--force",
        action="store_true",
        help="with --update-results: write the table even if the machine was busy (it says so)",
    )


def load() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    return os.getloadavg()


def fmt_load(avg: tuple[float, float, float]) -> str:
    return " / ".join(f"{a:.1f}" for a in avg)


def check_idle(
    args: argparse.Namespace, before: tuple[float, float, float], what: str = "timings"
) -> bool:
    """Whether the machine is idle now; exits (status 2, one paragraph) when it is busy and
    ``--update-results`` was asked without ``--force``. ``what``: what other work would
    distort (a memory benchmark's compile times, say), for the message."""
    idle = before[0] < IDLE_LOAD
    if not idle and getattr(args, "update_results", False) and not args.force:
        print(
            f"error: the machine is busy (load average {fmt_load(before)}; idle means a "
            f"1-minute load under {IDLE_LOAD}), so its {what} would mislead; stop the other "
            "work and rerun, or add --force to write the table marked as measured on a busy "
            "machine.",
            file=sys.stderr,
        )
        sys.exit(2)
    return idle


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_side(cmd: list[str]) -> dict:
    """Runs one side's command; returns the JSON object its output ends with (plus its
    process's wall seconds as ``process_s``)."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - t0
    return result


def alternate(sides: dict[str, list[str]], rounds: int) -> dict[str, list[dict]]:
    """Each side's results over ``rounds`` rounds, the sides alternating in fresh processes
    (the order flips every round, so neither side always runs first)."""
    names = list(sides)
    out: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            res = run_side(sides[name])
            # Figures only: a side's arrays (e.g. forecasts to compare) would flood the log.
            shown = {k: v for k, v in res.items() if not isinstance(v, list | dict)}
            print(f"round {r + 1}/{rounds} {name}: {shown}", flush=True)
            out[name].append(res)
    return out


def spread(values: list[float]) -> tuple[float, float, float]:
    """(median, lowest, highest)."""
    return statistics.median(values), min(values), max(values)


def fmt_spread(values: list[float], digits: int = 0) -> str:
    """``"median (lo-hi)"``."""
    med, lo, hi = spread(values)
    return f"{med:,.{digits}f} ({lo:,.{digits}f}-{hi:,.{digits}f})"


def matmul_peak() -> float:
    """This machine's fp32 matmul rate in GFLOP/s (JAX, 2048 x 2048, best of 10 after a
    warm-up), measured in a fresh process so nothing else of the benchmark runs beside it."""
    code = (
        "import time, json, jax, jax.numpy as jnp\n"
        "n = 2048\n"
        "a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)\n"
        "f = jax.jit(lambda x: x @ x)\n"
        "f(a).block_until_ready()\n"
        "best = 1e9\n"
        "for _ in range(10):\n"
        "    t = time.perf_counter(); f(a).block_until_ready()\n"
        "    best = min(best, time.perf_counter() - t)\n"
        "print(json.dumps({'gflops': 2 * n**3 / best / 1e9}))\n"
    )
    return run_side([sys.executable, "-c", code])["gflops"]


def load_line(before, after, idle: bool, what: str = "timings") -> str:
    """The table line with the load average before and after, and whether the machine was
    idle when the run started (if not, the ``what`` that other work may have distorted)."""
    state = "idle" if idle else f"BUSY: other work ran, so these {what} may mislead"
    return (
        f"- load average (1 / 5 / 15 min) before {fmt_load(before)}, after "
        f"{fmt_load(after)}; machine {state}"
    )


def header(before, after, idle: bool, peak: float, rounds: int) -> list[str]:
    """The protocol's lines for a table (after ``_results.provenance``)."""
    return [
        load_line(before, after, idle),
        f"- protocol: the sides alternate in separate processes, {rounds} rounds; median "
        f"(lowest-highest); measured fp32 matmul peak {peak:.0f} GFLOP/s (JAX, 2048 x 2048)",
    ]

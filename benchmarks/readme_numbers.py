"""Re-measures the numbers the README and docs/ state, on this machine, with its commands.

    python benchmarks/readme_numbers.py                  # quick start, sampling, synthetic runs
    python benchmarks/readme_numbers.py --tests          # also both test tiers (~15 min more)
    python benchmarks/readme_numbers.py --update-results # the tracked table in results/

Each number comes from running the README's own command in a fresh scratch workdir (the
whole command, start-up included, timed from outside) and reading what it printed and
wrote. The table states the machine (cores) and the load average before and after the
run; ``--update-results`` refuses a busy machine unless ``--force`` (``_protocol.py``).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from _protocol import add_force_arg, check_idle, load, load_line
from _results import ROOT, SCRATCH, add_output_args, output_path, provenance

QUIET = ["--set", "logging.progress_bar=false"]


def run(cmd: list[str], timeout: int = 3600) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - t0


def fmt_time(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def train_row(config: str, workdir: Path, metric: str) -> tuple[str, dict]:
    proc, secs = run(
        [sys.executable, "-m", "train.main", "--config", config, "--workdir", str(workdir), *QUIET]
    )
    if proc.returncode != 0:
        return f"| `python -m train.main --config {config}` | failed: {proc.stderr[-200:]} | |", {}
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if metric in r][-1]
    peak = re.search(r"peak RAM ([\d.]+) GB", proc.stdout)
    disk = sum(p.stat().st_size for p in (workdir / "checkpoints").rglob("*") if p.is_file())
    extra = f"peak RAM {peak.group(1)} GB, checkpoints {disk / 2**20:.1f} MB" if peak else ""
    row = (
        f"| `python -m train.main --config {config}` | {fmt_time(secs)} | "
        f"{metric} {last[metric]:.4f} at step {last['step']}; {extra} |"
    )
    return row, {"seconds": secs, metric: last[metric]}


def _jax_version() -> str:
    code = "import jax; print(jax.__version__)"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True
    ).stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tests", action="store_true", help="also time both test tiers")
    p.add_argument("--skip-synthetic", action="store_true", help="skip the synthetic runs")
    add_force_arg(p)
    add_output_args(p, "readme_numbers.md")
    args = p.parse_args()
    head = provenance()
    before = load()
    idle = check_idle(args, before, "wall times")
    scratch = SCRATCH / "readme_numbers"
    subprocess.run(["rm", "-rf", str(scratch)], check=True)
    rows = []
    row, _ = train_row("xlstm_tiny", scratch / "xlstm_tiny", "val_loss")
    rows.append(row)
    print(row, flush=True)
    proc, secs = run(
        [
            sys.executable,
            "-m",
            "train.generate",
            "--workdir",
            str(scratch / "xlstm_tiny"),
            "--prompt",
            "def main(",
            "--max-new-tokens",
            "200",
        ]
    )
    speed = proc.stderr.strip().splitlines()[-1] if proc.returncode == 0 else proc.stderr[-200:]
    rows.append(
        f"| `python -m train.generate ... --max-new-tokens 200` | {fmt_time(secs)} | {speed} |"
    )
    print(rows[-1], flush=True)
    if not args.skip_synthetic:
        for config in ("parity_xlstm01", "mqar_xlstm11"):
            row, _ = train_row(config, scratch / config, "val_scaled_acc")
            rows.append(row)
            print(row, flush=True)
    if args.tests:
        # The README's own commands: both tiers, each with as many workers as cores.
        tiers = (
            ("fast tier", ["-n", "auto", "-m", "not slow"]),
            ("slow tier", ["-n", "auto", "-m", "slow"]),
        )
        for label, marker in tiers:
            proc, secs = run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *marker], 5400
            )
            tail = (
                proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-200:]
            )
            rows.append(f"| `pytest {' '.join(marker)}` ({label}) | {fmt_time(secs)} | {tail} |")
            print(rows[-1], flush=True)
    after = load()
    text = "\n".join(
        [
            "# The README's numbers, re-measured",
            "",
            *head,
            load_line(before, after, idle, "wall times"),
            f"- JAX {_jax_version()}; every command run from the repository root, timed as a "
            "whole (start-up included)",
            "",
            "| command | wall time | result |",
            "|---|---|---|",
            *rows,
            "",
        ]
    )
    out = output_path(args, "readme_numbers.md")
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

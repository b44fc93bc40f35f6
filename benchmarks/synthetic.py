"""The paper's small-scale claims side by side: xLSTM[0:1], xLSTM[1:0], xLSTM[1:1] and a
Transformer on parity and on MQAR (context 128, 8 key-value pairs), on the CPU.

Each run is the real CLI (``python -m train.main --config NAME --set ...``), one after the
other, in ``--root/NAME``; the table reports its steps, wall time (the whole command:
start-up, compiling, training and evaluation) and the final evaluation's scaled accuracy
overall and per length bucket.

    python benchmarks/synthetic.py [--only parity|mqar] [--seeds 0,1,2] [--update-results [--force]]

The budget is the configs' own settings (``configs/_synthetic.py``) plus the overrides in
``RUNS`` below: a few minutes per model on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from _protocol import add_force_arg, check_idle, load, load_line
from _results import add_output_args, output_path, provenance

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["logging.progress_bar=false", "logging.tensorboard=false"]

# (label, config, overrides). Same data, optimizer and budget within each task.
PARITY: list[str] = []  # the parity configs' own budget: 2000 steps x 64, lr 3e-3
MQAR: list[str] = []  # the MQAR configs' own budget: 1000 steps x 32, lr 1e-2, tied head
RUNS = {
    "parity": [
        ("xLSTM[0:1]", "parity_xlstm01", PARITY),
        ("xLSTM[1:0]", "parity_xlstm10", PARITY),
        ("xLSTM[1:1]", "parity_xlstm11", PARITY),
        ("Transformer", "llama_parity", PARITY),
    ],
    "mqar": [
        ("xLSTM[0:1]", "mqar_xlstm01", MQAR),
        ("xLSTM[1:0]", "mqar_xlstm10", MQAR),
        ("xLSTM[1:1]", "mqar_xlstm11", MQAR),
        ("Transformer", "llama_mqar", MQAR),
    ],
}


def _slug(label: str) -> str:
    return re.sub(r"\W", "", label).lower()  # xLSTM[0:1] -> xlstm01


def run_one(workdir: Path, config: str, overrides: list[str]) -> dict:
    """Runs the CLI once in ``workdir``; returns the wall time and the last evaluation."""
    cmd = [sys.executable, "-m", "train.main", "--config", config, "--workdir", str(workdir)]
    cmd += ["--set", *overrides, *QUIET]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    print("$", " ".join(cmd[1:]), flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.time() - t0
    if proc.returncode:
        raise RuntimeError(f"{config} failed:\n{proc.stderr[-3000:]}")
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "val_scaled_acc" in r][-1]
    print(f"  {seconds:.0f} s: " + proc.stdout.strip().splitlines()[-2], flush=True)
    return {"seconds": seconds, "record": last}


def table(task: str, results: list[tuple[str, str, int, list[str], dict]]) -> str:
    """A markdown table of one task's runs, a row per (model, seed)."""
    buckets = [k for k in results[0][4]["record"] if k.startswith("val_scaled_acc/")]
    head = ["model", "config", "seed", "steps", "wall time", "val_acc", "scaled acc"]
    head += [f"scaled {b.split('/', 1)[1]}" for b in buckets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, config, seed, _, res in results:
        r = res["record"]
        cells = [label, f"`{config}`", str(seed), str(r["step"]), f"{res['seconds']:.0f} s"]
        cells += [f"{r['val_acc']:.3f}", f"**{r['val_scaled_acc']:.3f}**"]
        cells += [f"{r[b]:.3f}" for b in buckets]
        lines.append("| " + " | ".join(cells) + " |")
    return f"### {task}\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    """Runs the comparison and writes the results table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=sorted(RUNS), help="one task only")
    p.add_argument("--seeds", default="0", help="comma-separated train.seed values per model")
    p.add_argument("--root", default="runs/synthetic_benchmark", help="workdirs go here")
    add_force_arg(p)
    add_output_args(p, "synthetic_cpu.md")
    args = p.parse_args()
    head = provenance()
    before = load()
    idle = check_idle(args, before, "wall times")
    root = Path(args.root).absolute()
    seeds = [int(x) for x in args.seeds.split(",")]
    sections = []
    for task, runs in RUNS.items():
        if args.only and task != args.only:
            continue
        results = []
        for lab, cfg, ov in runs:
            for seed in seeds:
                ov_seed = [*ov, f"train.seed={seed}"] if seed else ov
                workdir = root / f"{task}_{_slug(lab)}_seed{seed}"
                results.append((lab, cfg, seed, ov_seed, run_one(workdir, cfg, ov_seed)))
        sections.append(table(task, results))
        sections.append(
            "```\n"
            + "\n".join(
                f"python -m train.main --config {cfg}" + (f" --set {' '.join(ov)}" if ov else "")
                for _, cfg, _, ov, _ in results
            )
            + "\n```\n"
        )
    run_lines = [*head, load_line(before, load(), idle, "wall times")]
    text = "\n".join(["# Synthetic benchmarks on the CPU", "", *run_lines, "", *sections])
    out = output_path(args, "synthetic_cpu.md")
    out.write_text(text)
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

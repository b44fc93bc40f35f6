"""Peak resident memory of starting large runs on 8 simulated CPU devices, against the
sharded train state's size.

    python benchmarks/start_memory.py [--update-results]

Three runs, each in its own process with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (mesh (1, 8, 1)), and the process's
peak resident memory (``VmHWM``) read at the moments that matter:

1. ``xlstm_large_1300m`` (1.42B parameters), setup only: the checks, the model traced
   abstractly, the init function compiled and run (parameters and AdamW moments created
   in their shards). Its train step cannot fit in 24 GB, so ``train.main`` would refuse it
   before setup; this row calls the same functions (``check_setup``, ``build_state``,
   ``fresh_state``) directly.
2. ``python -m train.main --config xlstm_large_1300m`` with ``model.num_blocks=12`` (0.81B
   parameters) and ``model.scan_layers=true``: setup, the compiled step, 3 steps and the
   final checkpoint; peak memory once the step has compiled and at the end.
3. The same without the scan: the compiled step does not fit, and the run is refused
   (exit 2) before it writes anything; peak memory at the refusal.

Writes a markdown table (scratch copy by default; ``--update-results`` for
``benchmarks/results/start_memory.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from _protocol import add_force_arg, check_idle, fmt_load, load, load_line
from _results import ROOT, add_output_args, output_path, provenance

NAME = "start_memory.md"
DEVICES = 8
RUN_SETS = [
    "mesh.fsdp=8",
    "data.seq_len=64",
    "data.tokenizer=bytes",
    "train.steps=3",
    "train.batch_size=8",
    "train.micro_batch_size=8",
    "train.eval_every=0",
    "logging.every=1",
    "checkpoint.every=1000",
    "logging.progress_bar=false",
    "logging.plot=false",
    "logging.tensorboard=false",
]


def _hwm(pid: int | str = "self") -> int | None:
    """Peak resident bytes of process ``pid`` so far (Linux ``VmHWM``)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def setup_only(config: str, sets: list[str]) -> dict:
    """Row 1, in this (child) process: setup alone, measured."""
    import jax

    from train.config import named
    from train.config.overrides import apply_overrides
    from train.loop.setup import build_state, check_setup
    from xlstm_jax.layers.sharding import activate

    cfg = apply_overrides(named.load(config), sets)
    t0 = time.perf_counter()
    mesh = check_setup(cfg)
    with activate(mesh, cfg.mesh.rules):
        setup = build_state(cfg, mesh)
        state = jax.block_until_ready(setup.fresh_state())
    leaves = jax.tree.leaves(state)
    return {
        "params": sum(x.size for x in jax.tree.leaves(state["params"])),
        "state": sum(x.nbytes for x in leaves),
        "peak": _hwm(),
        "seconds": time.perf_counter() - t0,
    }


def _env() -> dict:
    return dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )


def run_cli(sets: list[str], workdir: Path) -> dict:
    """Rows 2 and 3: ``train.main`` in a child; its peak memory when the step has compiled
    (read as that line is printed) and at the end."""
    cmd = [sys.executable, "-u", "-m", "train.main", "--config", "xlstm_large_1300m"]
    cmd += ["--workdir", str(workdir), "--set", *RUN_SETS, *sets]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out, compiled_peak, last = [], None, None

    def sample() -> None:  # VmHWM vanishes with the process: keep the newest reading
        nonlocal last
        while proc.poll() is None:
            last = _hwm(proc.pid) or last
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in proc.stdout:
        print(line, end="", flush=True)
        out.append(line)
        if line.startswith("compiled the train step"):
            compiled_peak = _hwm(proc.pid)
    proc.wait()
    sampler.join()
    text = "".join(out)
    found = re.search(r"parameters \(([\d,]+)\)", text)
    params = int(found.group(1).replace(",", "")) if found else None
    return {
        "exit": proc.returncode,
        "params": params,
        "compiled_peak": compiled_peak,
        "peak": last,
        "seconds": time.perf_counter() - t0,
        "last_line": out[-1].strip() if out else "",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child-setup", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--workdir", default="/tmp/xlstm-jax-start-memory", help="scratch runs")
    add_force_arg(p)
    add_output_args(p, NAME)
    args = p.parse_args()
    if args.child_setup:
        print(json.dumps(setup_only(args.child_setup[0], args.child_setup[1:])))
        return
    import shutil

    head = provenance()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    loads = [load()]
    idle = check_idle(args, loads[0], "wall times")
    cmd = [sys.executable, __file__, "--child-setup", "xlstm_large_1300m", "mesh.fsdp=8"]
    done = subprocess.run(cmd, env=_env(), check=True, capture_output=True, text=True)
    setup = json.loads(done.stdout.strip().splitlines()[-1])
    print(setup, flush=True)
    loads.append(load())
    scan = run_cli(["model.num_blocks=12", "model.scan_layers=true"], work / "scan")
    loads.append(load())
    plain = run_cli(["model.num_blocks=12"], work / "plain")
    loads.append(load())
    shutil.rmtree(work, ignore_errors=True)
    # The 12-block state: fp32 parameters and two AdamW moments (plus a scalar count).
    state12 = 12 * scan["params"] if scan["params"] else None

    def gb(n: int | None) -> str:
        return "-" if n is None else f"{n / 1e9:.2f}"

    def ratio(n: int | None, state: int | None) -> str:
        return "-" if n is None or not state else f"{n / state:.2f}x"

    lines = [
        "# Peak resident memory of starting large runs (8 simulated CPU devices)",
        "",
        *head,
        load_line(loads[0], loads[-1], idle, "wall times"),
        "- load average after each row: " + "; ".join(fmt_load(la) for la in loads[1:]),
        "- one process holds all 8 simulated devices, so its resident memory is the whole "
        "sharded state plus the runtime, the corpus and the compiler; GB = 10^9 bytes; peak "
        "= `VmHWM`. The state is fp32 parameters plus two AdamW moments (12 bytes per "
        "parameter).",
        "- before the sharded initialisation (the issue's measurement, the 12-block run "
        "with the eager init then `device_put`): past 21 GiB (22.5 GB, 27.7 bytes per "
        "parameter) before its train step had compiled.",
        "- 'peak in all' of the scan row includes the step's temporaries on all 8 devices "
        "(1.4 GB each: one process holds them all) and the final checkpoint's host copy; on "
        "GPUs those sit in device memory. train.main's own messages count a GB as 2^30 "
        "bytes (its 'peak RAM' below is in those units: 1 GiB = 1.074 GB).",
        "",
        "| run | parameters | state GB | exit | peak GB after setup + compile | peak / state "
        "| peak GB in all | peak / state | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| xlstm_large_1300m, setup only (init compiled and run) | "
        f"{setup['params'] / 1e9:.2f}B | {gb(setup['state'])} | 0 | {gb(setup['peak'])} "
        f"| {ratio(setup['peak'], setup['state'])} | {gb(setup['peak'])} "
        f"| {ratio(setup['peak'], setup['state'])} | {setup['seconds']:.0f} |",
    ]
    for name, r in [
        ("num_blocks=12, scan_layers=true: setup, step compiled, 3 steps, checkpoint", scan),
        ("num_blocks=12, no scan: refused after compiling (step too big)", plain),
    ]:
        lines.append(
            f"| {name} | {r['params'] / 1e9:.2f}B | {gb(state12)} | {r['exit']} "
            f"| {gb(r['compiled_peak'])} | {ratio(r['compiled_peak'], state12)} "
            f"| {gb(r['peak'])} | {ratio(r['peak'], state12)} | {r['seconds']:.0f} |"
        )
    lines += ["", "Last line of each train.main run:", ""]
    lines += [
        f"- {name}: `{r['last_line'][:300]}`" for name, r in [("scan", scan), ("no scan", plain)]
    ]
    path = output_path(args, NAME)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Forecasting throughput of the TiRex-sized forecaster on this machine: ours against
``tirex-ts`` (its torch backend) on the same weights.

    python benchmarks/forecast_speed.py [--rounds 3] [--batch 256] [--update-results]

(after ``pip install -e ".[test]"``, which brings torch and tirex-ts).

The model has TiRex's published shape (``TiRexConfig()``: patch 32, E 512, 4 heads, 12
blocks, context 2048, 9 quantiles, 35M parameters) with random weights, N(0, 0.02^2) for
matrices and N(0, 0.1^2) around the norms' 1 and biases' 0, written once as a
``model.ckpt`` that both load (ours through ``xlstm_jax.load_forecaster``, which
reads it without torch; theirs through ``TiRexZero.from_pretrained``). The workload is the
one TiRex reports: ``--batch`` series of 2048 values (random walks), horizon 32 (one
patch), one call of each library's forecast over the batch.

* ours: ``xlstm_jax.forecast`` in float32 (XLA on the CPU; the sLSTM as a
  ``lax.scan``), compiled before timing;
* tirex-ts: ``model.forecast(..., batch_size=B)``, torch backend (its sLSTM steps in
  bf16), not compiled, ``torch.inference_mode``, as many threads as cores.

Each library runs in its own process; the processes take turns for ``--rounds`` rounds and
the table gives the median and best round. The first round also compares the two median
forecasts (their gap is the reference's bf16 rounding).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._results import add_output_args, output_path, provenance  # noqa: E402

CTX, HORIZON = 2048, 32


def make_checkpoint(path: Path) -> None:
    import torch
    from tirex.models.tirex import TiRexZero

    from xlstm_jax import TiRexConfig

    c = TiRexConfig()
    mc = dict(
        input_patch_size=c.input_patch_size,
        output_patch_size=c.output_patch_size,
        quantiles=list(c.quantiles),
        block_kwargs=dict(
            embedding_dim=c.embedding_dim,
            num_heads=c.num_heads,
            num_blocks=c.num_blocks,
            ffn_proj_factor=c.ffn_proj_factor,
        ),
        input_ff_dim=c.input_ff_dim,
    )
    torch.manual_seed(0)
    model = TiRexZero(backend="torch", model_config=mc, train_ctx_len=c.train_ctx_len)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn_like(p) * 0.02)
            else:
                base = 1.0 if "norm" in name and "group_norm" not in name else 0.0
                p.copy_(base + torch.randn_like(p) * 0.1)
    hp = {"model_config": mc, "train_ctx_len": c.train_ctx_len}
    torch.save({"hyper_parameters": hp, "state_dict": model.state_dict()}, path)


def contexts(batch: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.normal(size=(batch, CTX)).cumsum(axis=1) + 100.0).astype(np.float32)


def _worker(impl: str, ckpt: str, batch: int, rounds: int) -> None:
    """One library in this process: prints a JSON line per timed round."""
    x = contexts(batch)
    if impl == "ours":
        from xlstm_jax import load_forecaster
        from xlstm_jax.models.tirex.forecast import forecast

        model = load_forecaster(ckpt, impl="xla")

        def run():
            return forecast(model, x, HORIZON, batch_size=batch).mean

    else:
        import torch
        from tirex.models.tirex import TiRexZero

        torch.set_num_threads(os.cpu_count())
        model = TiRexZero.from_pretrained(ckpt, backend="torch", device="cpu")

        def run():
            with torch.inference_mode():
                _, mean = model.forecast(
                    x, prediction_length=HORIZON, batch_size=batch, output_type="numpy"
                )
            return mean

    t0 = time.perf_counter()
    first = run()  # compiles (ours) / warms up (theirs)
    warm = {"warmup_s": time.perf_counter() - t0, "mean": np.asarray(first[:4]).tolist()}
    print(json.dumps(warm), flush=True)
    for _ in range(rounds):
        sys.stdin.readline()  # the parent says when: the two take turns
        t0 = time.perf_counter()
        run()
        print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)


def _message(proc) -> dict:
    """The worker's next JSON line (tirex-ts prints notes of its own to stdout)."""
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("a benchmark worker stopped early; see its error above")
        if line.startswith("{"):
            return json.loads(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--worker", choices=["ours", "tirex"], help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    add_output_args(ap, "forecast_speed_cpu.md")
    args = ap.parse_args()
    if args.worker:
        return _worker(args.worker, args.ckpt, args.batch, args.rounds)

    head = provenance()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "model.ckpt"
        make_checkpoint(ckpt)
        procs = {}
        for impl in ("ours", "tirex"):
            cmd = [sys.executable, __file__, "--worker", impl, "--ckpt", str(ckpt)]
            cmd += ["--batch", str(args.batch), "--rounds", str(args.rounds)]
            procs[impl] = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
        warm = {k: _message(p) for k, p in procs.items()}
        times: dict[str, list[float]] = {k: [] for k in procs}
        for r in range(args.rounds):
            for impl, p in procs.items():
                p.stdin.write("go\n")
                p.stdin.flush()
                times[impl].append(_message(p)["seconds"])
                print(f"round {r + 1}: {impl} {times[impl][-1]:.3f} s", flush=True)
        for p in procs.values():
            p.stdin.close()
            p.wait()
    a, b = np.asarray(warm["ours"]["mean"]), np.asarray(warm["tirex"]["mean"])
    gap = float(np.abs(a - b).max() / np.abs(b).max())
    import jax
    import torch

    lines = [
        "# Forecasting throughput on CPU: ours vs tirex-ts (torch backend), same weights",
        "",
        *head,
        f"- JAX {jax.__version__}, torch {torch.__version__}; TiRex shape (35M parameters, "
        f"random weights); batch {args.batch} x context {CTX}, horizon {HORIZON}",
        f"- median forecasts of the two agree to {gap:.1e} of their scale (the reference's "
        "sLSTM rounds to bf16 at every step; in float32 the two agree to ~1e-7, "
        "tests/test_tirex.py)",
        "",
        "| implementation | median s / batch | best s | series/s (median) | first call s |",
        "|---|---:|---:|---:|---:|",
    ]
    for impl, label in (("ours", "ours (XLA, fp32)"), ("tirex", "tirex-ts torch backend")):
        med, best = statistics.median(times[impl]), min(times[impl])
        lines.append(
            f"| {label} | {med:.3f} | {best:.3f} | {args.batch / med:,.0f} | "
            f"{warm[impl]['warmup_s']:.1f} |"
        )
    ratio = statistics.median(times["tirex"]) / statistics.median(times["ours"])
    lines += ["", f"Ours is {ratio:.2f}x tirex-ts's throughput (medians)."]
    out = output_path(args, "forecast_speed_cpu.md")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

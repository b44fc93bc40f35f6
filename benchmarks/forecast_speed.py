"""Forecasting throughput of the TiRex-sized forecaster on this machine: ours against
``tirex-ts`` (its torch backend) on the same weights, under the benchmark protocol.

    python benchmarks/forecast_speed.py [--batches 16,256] [--calls 3] [--rounds 3]
        [--update-results [--force]]

(after ``pip install -e ".[test]"``, which brings torch and tirex-ts).

The model has TiRex's published shape (``TiRexConfig()``: patch 32, E 512, 4 heads, 12
blocks, context 2048, 9 quantiles, 35M parameters) with random weights, N(0, 0.02^2) for
matrices and N(0, 0.1^2) around the norms' 1 and biases' 0, written once as a
``model.ckpt`` that both load (ours through ``xlstm_jax.load_forecaster``, which
reads it without torch; theirs through ``TiRexZero.from_pretrained``). The workload is the
one TiRex reports: a batch of series of 2048 values (random walks), horizon 32 (one
patch), one call of each library's forecast over the batch.

* ours: ``xlstm_jax.models.tirex.forecast.forecast`` in float32 (XLA on the CPU; the
  sLSTM as a ``lax.scan``), compiled before timing;
* tirex-ts: ``model.forecast(..., batch_size=B)``, torch backend (its sLSTM steps in
  bf16), not compiled, ``torch.inference_mode``, as many threads as cores.

The protocol (``_protocol.py``): each side runs in a fresh process per round, the sides
alternating over ``--rounds`` rounds; a process loads, warms up (ours compiles), then
times ``--calls`` forecasts and reports their median. The table gives the median over the
rounds with the spread, the speed-up per round, the load before and after, and ours as a
fraction of the machine's measured fp32 matmul peak at 2 FLOPs per weight per patch
position read (the output head counted on the last position only, which is all a forecast
of one patch computes). The first round also compares the two median forecasts (their gap
is the reference's bf16 rounding).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _protocol import (
    add_protocol_args,
    alternate,
    check_idle,
    fmt_spread,
    header,
    load,
    matmul_peak,
    spread,
)
from _results import add_output_args, output_path, provenance

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


def _side(impl: str, ckpt: str, batch: int, calls: int) -> dict:
    """One library in this process: load, warm up, time ``calls`` forecasts of the batch."""
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
    warmup = time.perf_counter() - t0
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return {
        "s_per_batch": spread(times)[0],
        "warmup_s": warmup,
        "mean": np.asarray(first[:4]).tolist(),
    }


def forecast_flops(batch: int) -> float:
    """FLOPs of one forecast of ``batch`` series: 2 per parameter per patch position for
    everything but the output head, which runs on the last position only (the norms'
    and biases' few parameters counted as weights)."""
    import jax
    from flax import nnx

    from xlstm_jax import TiRexConfig
    from xlstm_jax.models.tirex.model import TiRex

    model = nnx.eval_shape(lambda: TiRex(TiRexConfig(), rngs=nnx.Rngs(0)))

    def count(module) -> int:
        return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))

    head = count(model.output_patch_embedding)
    positions = CTX // model.config.patch_size
    return 2.0 * batch * (positions * (count(model) - head) + head)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="16,256", help="comma-separated batch sizes")
    ap.add_argument("--calls", type=int, default=3, help="timed forecasts per process")
    ap.add_argument("--side", choices=["ours", "tirex"], help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    add_protocol_args(ap)
    add_output_args(ap, "forecast_speed_cpu.md")
    args = ap.parse_args()
    if args.side:
        print(json.dumps(_side(args.side, args.ckpt, args.batch, args.calls)))
        return

    import jax
    import torch

    head = provenance()
    before = load()
    idle = check_idle(args, before)
    peak = matmul_peak()
    rows, gaps = [], []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "model.ckpt"
        make_checkpoint(ckpt)
        for batch in (int(b) for b in args.batches.split(",")):
            side = [sys.executable, __file__, "--ckpt", str(ckpt), "--batch", str(batch)]
            side += ["--calls", str(args.calls), "--side"]
            runs = alternate({"ours": [*side, "ours"], "tirex": [*side, "tirex"]}, args.rounds)
            secs = {k: [r["s_per_batch"] for r in v] for k, v in runs.items()}
            ratios = [t / o for o, t in zip(secs["ours"], secs["tirex"], strict=True)]
            frac = 100 * forecast_flops(batch) / spread(secs["ours"])[0] / (peak * 1e9)
            a = np.asarray(runs["ours"][0]["mean"])
            b = np.asarray(runs["tirex"][0]["mean"])
            gaps.append(float(np.abs(a - b).max() / np.abs(b).max()))
            rows.append(
                f"| {batch} | {fmt_spread(secs['ours'], 3)} | {fmt_spread(secs['tirex'], 3)} | "
                f"{fmt_spread(ratios, 2)}x | {batch / spread(secs['ours'])[0]:,.0f} | "
                f"{frac:.0f}% | {spread([r['warmup_s'] for r in runs['ours']])[0]:.1f} / "
                f"{spread([r['warmup_s'] for r in runs['tirex']])[0]:.1f} |"
            )
            print(rows[-1], flush=True)
    after = load()
    lines = [
        "# Forecasting throughput on CPU: ours vs tirex-ts (torch backend), same weights",
        "",
        *head,
        *header(before, after, idle, peak, args.rounds),
        f"- JAX {jax.__version__}, torch {torch.__version__}; TiRex shape (35M parameters, "
        f"random weights); batch x context {CTX}, horizon {HORIZON}; each process times "
        f"{args.calls} forecasts after a warm-up and reports their median",
        f"- median forecasts of the two agree to {max(gaps):.1e} of their scale (the "
        "reference's sLSTM rounds to bf16 at every step; in float32 the two agree to ~1e-7, "
        "tests/test_tirex.py)",
        "- ours % of peak: 2 FLOPs per weight per patch position (the output head on the "
        "last position only), against the measured matmul peak",
        "",
        "| batch | ours s / batch | tirex-ts s / batch | speed-up | ours series/s | "
        "ours % of peak | first call s (ours / tirex-ts) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]
    out = output_path(args, "forecast_speed_cpu.md")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Train-step throughput (tokens/s): our jitted step against the PyTorch reference.

Both sides train the same model config with the same batch, sequence length, loss,
AdamW (the config's hyper-parameters, weight decay by each side's own grouping) and
global-norm clipping, in float32 on the CPU. The reference is ``xlstm==2.0.6``
``xLSTMLMModel`` with its sLSTM on the ``vanilla`` backend (the only one without CUDA).

    python benchmarks/train_throughput.py [--cases tiny,125m] [--steps 5] [--rounds 3]
        [--update-results [--force]]

Each side runs in its own process, alternating, over several rounds (``_protocol.py``).

(after ``pip install -e ".[test]"``, which brings torch and the reference).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import jax
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
from flax import nnx

from train.config import ExperimentConfig, named
from train.config.overrides import apply_overrides
from train.data.batch import all_scored
from train.loop.optimizer import decay_mask, make_optimizer, make_schedule
from train.loop.step import make_train_step
from xlstm_jax import xLSTMLMModel

# name -> (config, overrides, batch, seq). The tiny run is xlstm_tiny's own training
# shape; the 125M one is the xlstm_125m model (GPT-2 vocabulary) at a CPU-sized batch.
CASES = {
    "tiny": ("xlstm_tiny", [], 16, 128),
    "125m": ("xlstm_125m", [], 2, 256),
}


def train_step(cfg: ExperimentConfig, donate: bool = True):
    """Our train step for ``cfg`` as ``train.main`` builds it: (the jitted step, a fresh
    train state). ``donate``: the step reuses the state's buffers (the training loop's
    way); off, the same state can be passed to it again (a profiler's way)."""
    model = xLSTMLMModel(cfg.model, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    sched = make_schedule(cfg.optimizer, cfg.schedule, 1000)
    tx = make_optimizer(cfg.optimizer, sched, decay_mask(params))
    state = {"params": params, "opt_state": tx.init(params)}
    step = make_train_step(graphdef, rest, tx)
    return jax.jit(step, donate_argnums=0 if donate else ()), state


def _ours(cfg: ExperimentConfig, batch: np.ndarray, steps: int) -> tuple[float, float]:
    step, state = train_step(cfg)
    x = all_scored(batch[None])
    state, out = step(state, x)  # compile + warm-up
    first = float(out["loss"])
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, out = step(state, x)
    jax.block_until_ready(out["loss"])
    return (time.perf_counter() - t0) / steps, first


def _torch_config(cfg):
    import xlstm

    m = cfg.model
    ml = m.mlstm_block.mlstm if m.mlstm_block is not None else None
    sb = m.slstm_block
    kw = dict(
        vocab_size=m.vocab_size,
        embedding_dim=m.embedding_dim,
        num_blocks=m.num_blocks,
        context_length=m.context_length,
        slstm_at=list(m.slstm_at),
        tie_weights=m.tie_weights,
        weight_decay_on_embedding=m.weight_decay_on_embedding,
    )
    if ml is not None:
        kw["mlstm_block"] = xlstm.mLSTMBlockConfig(
            mlstm=xlstm.mLSTMLayerConfig(
                conv1d_kernel_size=ml.conv1d_kernel_size,
                qkv_proj_blocksize=ml.qkv_proj_blocksize,
                num_heads=ml.num_heads,
                proj_factor=ml.proj_factor,
            )
        )
    if sb is not None:
        ff = sb.feedforward
        kw["slstm_block"] = xlstm.sLSTMBlockConfig(
            slstm=xlstm.sLSTMLayerConfig(
                backend="vanilla",
                num_heads=sb.slstm.num_heads,
                conv1d_kernel_size=sb.slstm.conv1d_kernel_size,
                bias_init=sb.slstm.bias_init,
            ),
            feedforward=None
            if ff is None
            else xlstm.FeedForwardConfig(proj_factor=ff.proj_factor, act_fn=ff.act_fn),
        )
    return xlstm.xLSTMLMModelConfig(**kw)


def _reference(cfg: ExperimentConfig, batch: np.ndarray, steps: int) -> tuple[float, float]:
    import torch
    import xlstm

    torch.manual_seed(0)
    model = xlstm.xLSTMLMModel(_torch_config(cfg))
    model.reset_parameters()
    decay, no_decay = model._create_weight_decay_optim_groups()
    o = cfg.optimizer
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": o.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=o.lr,
        betas=(o.b1, o.b2),
        eps=o.eps,
    )
    x = torch.from_numpy(batch.astype(np.int64))

    def step() -> float:
        logits = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        return loss.item()

    first = step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps, first


def _measure(side: str, case: str, steps: int) -> dict:
    """One side of one case, in this process: seconds per step and the first loss."""
    config_name, overrides, b, s = CASES[case]
    cfg = apply_overrides(named.load(config_name), [*overrides, "model.dtype=float32"])
    cfg = dataclasses.replace(cfg, name=config_name)
    batch = np.random.default_rng(0).integers(0, 256, size=(b, s + 1), dtype=np.int32)
    if side == "ours":
        secs, first = _ours(cfg, batch, steps)
    else:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        secs, first = _reference(cfg, batch, steps)
    n = sum(
        x.size
        for x in jax.tree.leaves(
            nnx.state(
                nnx.eval_shape(lambda c=cfg: xLSTMLMModel(c.model, rngs=nnx.Rngs(0))), nnx.Param
            )
        )
    )
    return {"s_per_step": secs, "first_loss": first, "params": n, "tokens": b * s}


def main() -> None:
    """Runs the cases under the benchmark protocol and writes the markdown table."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cases", default="tiny,125m")
    p.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    p.add_argument("--side", choices=["ours", "ref"], help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    add_protocol_args(p)
    add_output_args(p, "train_throughput_cpu.md")
    args = p.parse_args()
    if args.side:
        print(json.dumps(_measure(args.side, args.case, args.steps)))
        return

    import torch
    import xlstm

    head = provenance()
    before = load()
    idle = check_idle(args, before)
    peak = matmul_peak()
    rows = []
    for name in args.cases.split(","):
        config_name, _, b, s = CASES[name]
        side = [sys.executable, __file__, "--case", name, "--steps", str(args.steps), "--side"]
        runs = alternate({"ours": [*side, "ours"], "ref": [*side, "ref"]}, args.rounds)
        tok = {k: [r["tokens"] / r["s_per_step"] for r in v] for k, v in runs.items()}
        n = runs["ours"][0]["params"]
        ratios = [a / r for a, r in zip(tok["ours"], tok["ref"], strict=True)]
        # About 6 FLOPs per parameter per token (forward and backward matmuls).
        frac = [6 * n * t / (peak * 1e9) for t in tok["ours"]]
        row = (
            f"| {config_name} | {n / 1e6:.1f}M | {b} x {s} | {fmt_spread(tok['ours'])} | "
            f"{fmt_spread(tok['ref'])} | {fmt_spread(ratios, 2)}x | "
            f"{100 * spread(frac)[0]:.1f}% | "
            f"{runs['ours'][0]['first_loss']:.3f} / {runs['ref'][0]['first_loss']:.3f} |"
        )
        print(row, flush=True)
        rows.append(row)
    after = load()
    lines = [
        "# Train-step throughput on the CPU: xlstm-jax vs the PyTorch reference",
        "",
        *head,
        *header(before, after, idle, peak, args.rounds),
        "",
        f"JAX {jax.__version__}, torch "
        f"{torch.__version__}, xlstm {xlstm.__version__}. float32; one step = forward, "
        f"backward, global-norm clipping and AdamW; each process times {args.steps} steps "
        f"after a warm-up step (ours: the jitted `train.loop.step.make_train_step`; "
        f"reference: eager `xlstm.xLSTMLMModel`, sLSTM backend `vanilla`, torch using every "
        f"core). Speed-up: per round, ours over the reference. Peak fraction: ours at 6 "
        f"FLOPs per parameter per token against the measured matmul peak.",
        "",
        "| config | params | batch x seq | ours tok/s | reference tok/s | speed-up | "
        "ours % of peak | first loss (ours / ref) |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    out = output_path(args, "train_throughput_cpu.md")
    out.write_text("\n".join(lines + rows) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

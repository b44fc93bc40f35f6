"""Decode and prefill throughput on this machine: ours vs the PyTorch reference.

    python benchmarks/decode.py [--models tiny,125m] [--batches 1,16] [--rounds 3]
        [--update-results [--force]]

For each model (the ``xlstm_tiny`` and ``xlstm_125m`` configs, run in float32 on the CPU)
and batch size (1, 16):
* ours: prefill a context of L tokens (chunkwise, one jitted call), then time a jitted
  ``lax.scan`` of N greedy decode steps from that state (median of repeats);
* reference: ``xLSTMLMModel.step()`` in a Python loop (its decoding API), after a short
  step-by-step prefill, with ``torch.no_grad()``;
* prefill tokens/s against length: our jitted forward with state vs the reference forward.

Decode cost per token does not depend on the context (the state has a fixed size); the
table shows it by measuring after contexts of 128 to 8192 tokens where the prefill fits
the time budget (``--max-prefill-tokens``).

Each (model, batch) is measured under the benchmark protocol (``_protocol.py``): ours and
the reference each in a fresh process per round, alternating over ``--rounds`` rounds;
cells are the median over rounds (lowest-highest), the speed-up is taken within each
round, and ours is stated as a fraction of the measured fp32 matmul peak (about 2 FLOPs
per parameter per token, for decode and prefill alike: the state-size terms are small).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
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

from xlstm_jax import xLSTMLMModel

CONTEXTS = (128, 512, 2048, 8192)


def model_config(name: str):
    from configs import xlstm_125m, xlstm_tiny

    cfg = {"tiny": xlstm_tiny, "125m": xlstm_125m}[name].get_config().model
    return dataclasses.replace(cfg, dtype="float32", param_dtype="float32")


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ours(cfg, batch: int, n_decode: int, contexts, max_prefill_tokens: int, repeats: int):
    """Our decode tokens/s after each context that fits ``max_prefill_tokens``, our prefill
    tokens/s of that context, and the parameter count, in this process."""
    model = nnx.jit(lambda: xLSTMLMModel(cfg, rngs=nnx.Rngs(0)))()
    graphdef, params = nnx.split(model)

    @jax.jit
    def prefill(params, tokens):
        m = nnx.merge(graphdef, params)
        logits, state = m.with_state(tokens, m.init_state(tokens.shape[0]))
        return logits[:, -1], state

    @jax.jit
    def decode(params, last, state):
        m = nnx.merge(graphdef, params)

        def step(carry, _):
            last, state = carry
            tok = jnp.argmax(last, axis=-1).astype(jnp.int32)[:, None]
            logits, state = m.with_state(tok, state)
            return (logits[:, 0], state), tok[:, 0]

        (_, state), toks = jax.lax.scan(step, (last, state), None, length=n_decode)
        return toks, state

    rows, prefill_rows = [], []  # [L, tokens/s]
    rng = np.random.default_rng(0)
    for L in contexts:
        if L * batch > max_prefill_tokens:
            continue
        tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (batch, L)), jnp.int32)
        jax.block_until_ready(prefill(params, tokens))  # compile
        t_pre = median_time(lambda t=tokens: jax.block_until_ready(prefill(params, t)), 1)
        last, state = prefill(params, tokens)
        jax.block_until_ready(decode(params, last, state))  # compile
        t_dec = median_time(
            lambda la=last, s=state: jax.block_until_ready(decode(params, la, s)), repeats
        )
        rows.append([L, batch * n_decode / t_dec])
        prefill_rows.append([L, batch * L / t_pre])
    n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return {"decode": rows, "prefill": prefill_rows, "params": int(n)}


def reference(name: str, batch: int, n_decode: int, prefill_lengths, repeats: int) -> dict:
    """The reference's decode tokens/s (one number: its step() cost does not depend on the
    context) and its prefill tokens/s for each length, in this process."""
    import torch
    import xlstm

    torch.set_num_threads(os.cpu_count())
    cfg = model_config(name)
    torch.manual_seed(0)
    model = xlstm.xLSTMLMModel(reference_config(xlstm, cfg, max([*prefill_lengths, 8])))
    model.reset_parameters()
    model.eval()
    rng = np.random.default_rng(0)
    with torch.no_grad():
        state, logits = None, None
        for _ in range(8):  # a short context built with step() itself
            tok = torch.from_numpy(rng.integers(0, cfg.vocab_size, (batch, 1)))
            logits, state = model.step(tok, state)

        def run():
            nonlocal logits, state
            for _ in range(n_decode):
                tok = logits[:, -1].argmax(-1, keepdim=True)
                logits, state = model.step(tok, state)

        run()  # warm-up
        t_dec = median_time(run, repeats)
        pre = []
        for L in prefill_lengths:
            x = torch.from_numpy(rng.integers(0, cfg.vocab_size, (batch, L)))
            model(x)
            t = median_time(lambda x=x: model(x), 1)
            pre.append([L, batch * L / t])
    return {"decode": batch * n_decode / t_dec, "prefill": pre}


def reference_config(xlstm, cfg, context_length: int):
    """The reference config equal to ours (vanilla sLSTM backend: no CUDA here)."""
    m = cfg.mlstm_block.mlstm
    mb = xlstm.mLSTMBlockConfig(
        mlstm=xlstm.mLSTMLayerConfig(
            conv1d_kernel_size=m.conv1d_kernel_size,
            qkv_proj_blocksize=m.qkv_proj_blocksize,
            num_heads=m.num_heads,
            proj_factor=m.proj_factor,
        )
    )
    sb = None
    if cfg.slstm_block is not None:
        s, ff = cfg.slstm_block.slstm, cfg.slstm_block.feedforward
        sb = xlstm.sLSTMBlockConfig(
            slstm=xlstm.sLSTMLayerConfig(
                backend="vanilla", num_heads=s.num_heads, conv1d_kernel_size=s.conv1d_kernel_size
            ),
            feedforward=xlstm.FeedForwardConfig(proj_factor=ff.proj_factor, act_fn=ff.act_fn),
        )
    return xlstm.xLSTMLMModelConfig(
        mlstm_block=mb,
        slstm_block=sb,
        context_length=context_length,
        num_blocks=cfg.num_blocks,
        embedding_dim=cfg.embedding_dim,
        slstm_at=list(cfg.slstm_at),
        vocab_size=cfg.vocab_size,
        tie_weights=cfg.tie_weights,
    )


def _side(args: argparse.Namespace) -> dict:
    """One side of one (model, batch) in this process: the protocol's side command."""
    batch = int(args.batches)
    if args.side == "ours":
        contexts = [int(x) for x in args.contexts.split(",")]
        cfg = model_config(args.models)
        return ours(cfg, batch, args.decode_tokens, contexts, args.max_prefill_tokens, args.repeats)
    lengths = [int(x) for x in args.reference_prefill.split(",")]
    lengths = [L for L in lengths if L * batch <= args.max_prefill_tokens]
    return reference(args.models, batch, args.decode_tokens, lengths, args.repeats)


def _pct(params: int, tps: list[float], peak: float) -> str:
    """Ours as a fraction of the matmul peak: about 2 FLOPs per parameter per token."""
    return f"{100 * spread([2 * params * t / (peak * 1e9) for t in tps])[0]:.2f}%"


def _rows(name: str, batch: int, runs: dict[str, list[dict]], peak: float):
    """The decode and prefill table rows of one (model, batch) from its rounds."""
    mine, theirs = runs["ours"], runs["ref"]
    n = mine[0]["params"]
    ref_dec = [r["decode"] for r in theirs]
    decode, prefill = [], []
    for i, (L, _) in enumerate(mine[0]["decode"]):
        tps = [r["decode"][i][1] for r in mine]
        ratios = [a / b for a, b in zip(tps, ref_dec, strict=True)]
        decode.append(
            f"| {name} | {batch} | {L} | {fmt_spread(tps)} | {fmt_spread(ref_dec)} | "
            f"{fmt_spread(ratios, 1)}x | {_pct(n, tps, peak)} |"
        )
    ref_pre = [dict(r["prefill"]) for r in theirs]
    for i, (L, _) in enumerate(mine[0]["prefill"]):
        tps = [r["prefill"][i][1] for r in mine]
        ref, ratio = "-", "-"
        if L in ref_pre[0]:
            ref_tps = [d[L] for d in ref_pre]
            ref = fmt_spread(ref_tps)
            ratio = fmt_spread([a / b for a, b in zip(tps, ref_tps, strict=True)], 1) + "x"
        prefill.append(
            f"| {name} | {batch} | {L} | {fmt_spread(tps)} | {ref} | {ratio} | "
            f"{_pct(n, tps, peak)} |"
        )
    return decode, prefill


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="tiny,125m")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats in each process")
    p.add_argument(
        "--contexts",
        default=",".join(map(str, CONTEXTS)),
        help="context lengths before decoding (ours; each also a prefill length)",
    )
    p.add_argument(
        "--max-prefill-tokens",
        type=int,
        default=16384,
        help="skip contexts whose prefill (batch x L) exceeds this",
    )
    p.add_argument("--reference-prefill", default="128,512,1024")
    add_protocol_args(p)
    add_output_args(p, "decode_cpu.md")
    p.add_argument("--side", choices=["ours", "ref"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        print(json.dumps(_side(args)))
        return
    import torch

    head = provenance()
    before = load()
    idle = check_idle(args, before)
    peak = matmul_peak()
    decode, prefill = [], []
    for name in args.models.split(","):
        for batch in args.batches.split(","):
            print(f"[{name} batch {batch}]", flush=True)
            side = [sys.executable, __file__, "--models", name, "--batches", batch]
            side += ["--decode-tokens", str(args.decode_tokens), "--repeats", str(args.repeats)]
            side += ["--contexts", args.contexts, "--reference-prefill", args.reference_prefill]
            side += ["--max-prefill-tokens", str(args.max_prefill_tokens), "--side"]
            runs = alternate({"ours": [*side, "ours"], "ref": [*side, "ref"]}, args.rounds)
            rows, pre = _rows(name, int(batch), runs, peak)
            print("\n".join(rows + pre), flush=True)
            decode += rows
            prefill += pre
    after = load()
    lines = [
        "# Decode and prefill throughput (CPU)",
        "",
        *head,
        *header(before, after, idle, peak, args.rounds),
        f"- JAX {jax.__version__} ({jax.default_backend()}); torch {torch.__version__}",
        "- float32 on both sides; reference sLSTM backend 'vanilla'; decode = greedy, "
        f"{args.decode_tokens} tokens after the context, each process the median of "
        f"{args.repeats} timings",
        "- speed-up: ours over the reference within each round; % of peak: ours at 2 FLOPs "
        "per parameter per token (every parameter, embedding included; the state-size "
        "terms are small) against the measured matmul peak",
        "",
        "| model | batch | context | ours decode tok/s | reference step() tok/s | speed-up "
        "| ours % of peak |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    note = [
        "",
        "The reference's step() cost does not depend on the context either (fixed-size "
        "state); it is measured after an 8-token context built with step().",
    ]
    prefill_head = [
        "",
        "## Prefill tokens/s against length",
        "",
        "| model | batch | length | ours (chunkwise, jit) | reference forward (parallel) "
        "| speed-up | ours % of peak |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    out = output_path(args, "decode_cpu.md")
    out.write_text("\n".join(lines + decode + note + prefill_head + prefill) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

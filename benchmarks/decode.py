"""Decode and prefill throughput on this machine: ours vs the PyTorch reference.

    python benchmarks/decode.py [--models tiny,125m] [--update-results]

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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
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

    rows, prefill_rows = [], []
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
        rows.append((L, batch * n_decode / t_dec))
        prefill_rows.append((L, batch * L / t_pre))
    return rows, prefill_rows


def reference(name: str, batch: int, n_decode: int, prefill_lengths, repeats: int):
    """Reference numbers, measured in a fresh process (no JAX thread pool beside torch)."""
    cmd = [
        sys.executable,
        __file__,
        "--reference-json",
        json.dumps(
            {
                "name": name,
                "batch": batch,
                "n_decode": n_decode,
                "prefill": prefill_lengths,
                "repeats": repeats,
            }
        ),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    return res["decode"], [tuple(x) for x in res["prefill"]]


def _reference_worker(spec: dict) -> None:
    import torch
    import xlstm

    torch.set_num_threads(os.cpu_count())
    cfg = model_config(spec["name"])
    batch, n_decode, repeats = spec["batch"], spec["n_decode"], spec["repeats"]
    torch.manual_seed(0)
    model = xlstm.xLSTMLMModel(reference_config(xlstm, cfg, max(spec["prefill"] + [8])))
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
        for L in spec["prefill"]:
            x = torch.from_numpy(rng.integers(0, cfg.vocab_size, (batch, L)))
            model(x)
            t = median_time(lambda x=x: model(x), 1)
            pre.append((L, batch * L / t))
    print(json.dumps({"decode": batch * n_decode / t_dec, "prefill": pre}))


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="tiny,125m")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--max-prefill-tokens",
        type=int,
        default=16384,
        help="skip contexts whose prefill (batch x L) exceeds this",
    )
    p.add_argument("--reference-prefill", default="128,512,1024")
    add_output_args(p, "decode_cpu.md")
    p.add_argument("--reference-json", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.reference_json:
        _reference_worker(json.loads(args.reference_json))
        return
    import torch

    lines = [
        "# Decode and prefill throughput (CPU)",
        "",
        *provenance(),
        f"- JAX {jax.__version__} ({jax.default_backend()}); torch {torch.__version__}",
        "- float32 on both sides; reference sLSTM backend 'vanilla'; decode = greedy, "
        f"{args.decode_tokens} tokens after the context, median of {args.repeats}",
        "",
        "| model | batch | context | ours decode tok/s | reference step() tok/s | speed-up |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    prefill_lines = [
        "",
        "## Prefill tokens/s against length",
        "",
        "| model | batch | length | ours (chunkwise, jit) | reference forward (parallel) |",
        "|---|---:|---:|---:|---:|",
    ]
    ref_lengths = [int(x) for x in args.reference_prefill.split(",")]
    for name in args.models.split(","):
        cfg = model_config(name)
        for batch in (int(b) for b in args.batches.split(",")):
            print(f"[{name} batch {batch}] ours ...", flush=True)
            rows, pre = ours(
                cfg, batch, args.decode_tokens, CONTEXTS, args.max_prefill_tokens, args.repeats
            )
            print(f"[{name} batch {batch}] reference ...", flush=True)
            ref_lengths_b = [L for L in ref_lengths if L * batch <= args.max_prefill_tokens]
            ref_tps, ref_pre = reference(
                name, batch, args.decode_tokens, ref_lengths_b, args.repeats
            )
            for L, tps in rows:
                lines.append(
                    f"| {name} | {batch} | {L} | {tps:,.0f} | {ref_tps:,.0f} | "
                    f"{tps / ref_tps:.1f}x |"
                )
                print(lines[-1], flush=True)
            ref_pre = dict(ref_pre)
            for L, tps in pre:
                r = f"{ref_pre[L]:,.0f}" if L in ref_pre else "-"
                prefill_lines.append(f"| {name} | {batch} | {L} | {tps:,.0f} | {r} |")
                print(prefill_lines[-1], flush=True)
    note = [
        "",
        "The reference's step() cost does not depend on the context either (fixed-size "
        "state); it is measured after an 8-token context built with step().",
    ]
    out = output_path(args, "decode_cpu.md")
    out.write_text("\n".join(lines + note + prefill_lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""GPU check and benchmark of the Pallas kernels: correctness against the XLA reference, then
forward and forward+backward timings, written as a markdown table to benchmarks/results/.

    PYTHONPATH=. python benchmarks/gpu_check.py             # on a CUDA GPU (well under 5 min)
    PYTHONPATH=. python benchmarks/gpu_check.py --dry-run   # anywhere: interpret mode, tiny shapes

One section per kernel (``SECTIONS``); each returns its markdown lines.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import pallas_kernels as pk
from pallas_kernels.slstm import block_sizes as slstm_tiles
from pallas_kernels.slstm import kernel as slstm_kernel

RESULTS = Path(__file__).resolve().parent / "results"
# Norm-relative error bounds for the GPU correctness check (outputs and gradients).
CHECK_BOUND = {"float32": 1e-4, "bfloat16": 3e-2}


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def time_ms(fn: Callable, *args, reps: int, warmup: int = 2) -> float:
    """Median wall time in ms of ``fn(*args)`` (compiled by the warm-up calls)."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------
# sLSTM
# ---------------------------------------------------------------------------------------------


def _slstm_inputs(B, S, NH, DH, dtype, seed=0):
    ks = jax.random.split(jax.random.key(seed), 6)
    gx = jax.random.normal(ks[0], (B, S, 4, NH, DH), jnp.float32).astype(dtype)
    R = (jax.random.normal(ks[1], (NH, DH, 4, DH)) / np.sqrt(DH)).astype(dtype)
    bias = jax.random.normal(ks[2], (NH, 4, DH)).astype(dtype)
    n0 = jnp.where(jax.random.bernoulli(ks[4], 0.5, (B, NH, DH)), 0.0, 1.0)
    state = (
        jax.random.normal(ks[3], (B, NH, DH)) * n0,
        jax.random.normal(ks[5], (B, NH, DH)) * n0,
        n0,
        jnp.zeros((B, NH, DH)),
    )
    return gx, R, bias, state


def _slstm_fn(impl, interpret, block_sizes=None):
    """(gx, R, bias, state) -> (y, last state) for one implementation."""

    def run(gx, R, bias, state):
        if impl == "pallas" and block_sizes is not None:
            return slstm_kernel.slstm_pallas(
                gx, R, bias, state, interpret=interpret, block_sizes=block_sizes
            )
        return pk.slstm(
            gx, R, bias, initial_state=state, return_last_state=True, impl=impl, interpret=interpret
        )

    return run


def _slstm_value_and_grads(run, w):
    def loss(gx, R, bias, state):
        ys, last = run(gx, R, bias, state)
        return jnp.sum(ys.astype(jnp.float32) * w) + jnp.sum(last[1]), (ys, last)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True))


def slstm_check(shapes, interpret) -> list[str]:
    """Pallas vs XLA (fp32 math, full-precision matmuls) in fp32 and bf16: norm-relative errors."""
    rows = ["| dtype | B, S, NH, DH | y | last c | dgates_x | dR | dbias | dstate0 | ok |"]
    rows.append("|---|---|---|---|---|---|---|---|---|")
    for dtype in (jnp.float32, jnp.bfloat16):
        for B, S, NH, DH in shapes:
            gx, R, bias, state = _slstm_inputs(B, S, NH, DH, dtype, seed=S + DH)
            w = jax.random.normal(jax.random.key(1), (B, S, NH, DH))
            with jax.default_matmul_precision("float32"):
                g_ref, (y_ref, l_ref) = _slstm_value_and_grads(_slstm_fn("xla", False), w)(
                    gx, R, bias, state
                )
            g_pal, (y_pal, l_pal) = _slstm_value_and_grads(_slstm_fn("pallas", interpret), w)(
                gx, R, bias, state
            )
            line = _check_row(
                dtype, f"{B}, {S}, {NH}, {DH}", (y_pal, l_pal[1], g_pal), (y_ref, l_ref[1], g_ref)
            )
            rows.append(line)
            print(line, flush=True)
    return rows


def _check_row(dtype, shape: str, got, want) -> str:
    """One correctness-table row: norm-relative errors of (output, a final state, grads),
    where grads ends with the tuple of initial-state grads (reported as their worst)."""

    def err(a, b):
        return rel_err(
            np.asarray(jnp.asarray(a, jnp.float32)), np.asarray(jnp.asarray(b, jnp.float32))
        )

    (out, state, grads), (out_ref, state_ref, grads_ref) = got, want
    errs = [
        err(out, out_ref),
        err(state, state_ref),
        *(err(a, b) for a, b in zip(grads[:-1], grads_ref[:-1], strict=True)),
        max(err(a, b) for a, b in zip(grads[-1], grads_ref[-1], strict=True)),
    ]
    ok = all(e < CHECK_BOUND[jnp.dtype(dtype).name] for e in errs)
    return (
        f"| {jnp.dtype(dtype).name} | {shape} | "
        + " | ".join(f"{e:.1e}" for e in errs)
        + f" | {'yes' if ok else 'NO'} |"
    )


# Timing shared by the PyTorch reference scripts below (run in subprocesses): median
# milliseconds of fwd() and of its backward, after two warm-up calls each.
_TORCH_TIMING = textwrap.dedent(
    """
    import json, sys, time, torch
    def median_ms(fwd, reps):
        def fwdbwd():
            fwd().float().sum().backward()
        out = {}
        for name, fn in (("fwd", fwd), ("fwdbwd", fwdbwd)):
            for _ in range(2):
                fn()
            torch.cuda.synchronize()
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter(); fn(); torch.cuda.synchronize()
                ts.append((time.perf_counter() - t0) * 1e3)
            out[name] = sorted(ts)[len(ts) // 2]
        return out
    """
)


def _run_torch(script: str, args: list[str], timeout_s: int, what: str) -> tuple[dict, str]:
    """Runs ``_TORCH_TIMING + script`` with ``args``; returns its ``RESULT<key>=<json>``
    lines as {key: value} (those printed before a timeout too) and the reason to report
    for a missing key."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _TORCH_TIMING + script, *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        stdout, tail = proc.stdout, (proc.stderr or proc.stdout).strip().splitlines()
        why = "unavailable: " + (tail[-1][:120] if tail else f"exit code {proc.returncode}")
    except subprocess.TimeoutExpired as err:
        stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        why = f"timed out after {timeout_s}s ({what})"
    found = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT"):
            key, val = line[len("RESULT") :].split("=", 1)
            found[key] = json.loads(val)
    return found, why


_XLSTM_CUDA = textwrap.dedent(
    """
    from xlstm.blocks.slstm.cell import sLSTMCell, sLSTMCellConfig
    B, S, NH, DH, reps = (int(a) for a in sys.argv[1:6])
    cfg = sLSTMCellConfig(hidden_size=NH * DH, num_heads=NH, backend="cuda", batch_size=B,
                          dtype="bfloat16", enable_automatic_mixed_precision=True)
    cell = sLSTMCell(cfg).cuda()
    x = torch.randn(B, S, 4 * NH * DH, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    print("RESULT=" + json.dumps(median_ms(lambda: cell(x)[0], reps)))
    """
)


def xlstm_cuda_ms(B, S, NH, DH, reps, timeout_s) -> dict | str:
    """The reference's CUDA sLSTM kernel (torch, compiled on first use) in a subprocess."""
    found, why = _run_torch(
        _XLSTM_CUDA, [str(a) for a in (B, S, NH, DH, reps)], timeout_s, "kernel build"
    )
    return found.get("", why)


def slstm_bench(shapes, interpret, reps, variants, xlstm_timeout) -> list[str]:
    """Forward and forward+backward times in bf16: lax.scan path vs Pallas (vs xlstm CUDA)."""
    rows = [
        "| B, S, NH, DH | implementation | fwd ms | fwd+bwd ms | fwd speed-up | fwd+bwd speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for B, S, NH, DH in shapes:
        gx, R, bias, state = _slstm_inputs(B, S, NH, DH, jnp.bfloat16)
        w = jax.random.normal(jax.random.key(1), (B, S, NH, DH))
        impls = [("lax.scan (XLA)", _slstm_fn("xla", False))]
        impls += [(f"Pallas {label}", _slstm_fn("pallas", interpret, bs)) for label, bs in variants]
        base = None
        for label, run in impls:
            fwd = jax.jit(lambda *a, run=run: run(*a)[0])
            fb = _slstm_value_and_grads(run, w)
            try:
                t_f = time_ms(fwd, gx, R, bias, state, reps=reps)
                t_fb = time_ms(fb, gx, R, bias, state, reps=reps)
            except Exception as err:  # report a variant that fails to build, keep going
                line = f"| {B}, {S}, {NH}, {DH} | {label} | failed: {type(err).__name__} | | | |"
                print(line, str(err)[:300], flush=True)
                rows.append(line)
                continue
            base = base or (t_f, t_fb)
            line = (
                f"| {B}, {S}, {NH}, {DH} | {label} | {t_f:.2f} | {t_fb:.2f} | "
                f"{base[0] / t_f:.2f}x | {base[1] / t_fb:.2f}x |"
            )
            rows.append(line)
            print(line, flush=True)
        if xlstm_timeout > 0:
            ref = xlstm_cuda_ms(B, S, NH, DH, reps, xlstm_timeout)
            if isinstance(ref, dict):
                line = (
                    f"| {B}, {S}, {NH}, {DH} | xlstm CUDA (torch) | {ref['fwd']:.2f} | "
                    f"{ref['fwdbwd']:.2f} | {base[0] / ref['fwd']:.2f}x | "
                    f"{base[1] / ref['fwdbwd']:.2f}x |"
                )
            else:
                line = f"| {B}, {S}, {NH}, {DH} | xlstm CUDA (torch) | {ref} | | | |"
            rows.append(line)
            print(line, flush=True)
    return rows


def slstm_section(args) -> list[str]:
    if args.dry_run:
        check_shapes = [(3, 5, 1, 16)]
        bench_shapes = [(2, 8, 2, 16)]
    else:
        check_shapes = [(16, 256, 4, 256), (16, 256, 16, 64)]
        bench_shapes = [(16, 2048, 4, 256), (16, 2048, 16, 64)]
    variants = [("default", slstm_tiles.DEFAULT_BLOCK_SIZES)]
    if args.tune:
        variants += [
            ("warps=4", slstm_tiles.BlockSizes(num_warps=4)),
            ("dh_tile=32", slstm_tiles.BlockSizes(dh_tile=32)),
            ("R streamed", slstm_tiles.BlockSizes(r_on_chip_max_bytes=0)),
        ]
    lines = ["## sLSTM", "", "Correctness, Pallas vs XLA reference (norm-relative errors):", ""]
    lines += slstm_check(check_shapes, args.dry_run)
    lines += ["", f"Timings, bf16, median of {args.reps} (`block_until_ready`):", ""]
    xlstm_timeout = 0 if args.dry_run or args.skip_xlstm_cuda else args.xlstm_timeout
    lines += slstm_bench(bench_shapes, args.dry_run, args.reps, variants, xlstm_timeout)
    return lines + [""]


# ---------------------------------------------------------------------------------------------
# mLSTM
# ---------------------------------------------------------------------------------------------


def _mlstm_inputs(B, NH, S, DQ, DV, dtype, seed=0):
    ks = jax.random.split(jax.random.key(seed), 8)
    q = jax.random.normal(ks[0], (B, NH, S, DQ), jnp.float32).astype(dtype)
    k = jax.random.normal(ks[1], (B, NH, S, DQ), jnp.float32).astype(dtype)
    v = jax.random.normal(ks[2], (B, NH, S, DV), jnp.float32).astype(dtype)
    i = jax.random.normal(ks[3], (B, NH, S))
    f = jax.random.normal(ks[4], (B, NH, S)) + 3.0
    state = (
        jax.random.normal(ks[5], (B, NH, DQ, DV)),
        jnp.abs(jax.random.normal(ks[6], (B, NH, DQ))),
        jax.random.normal(ks[7], (B, NH)),
    )
    return q, k, v, i, f, state


def _mlstm_fn(impl, L, interpret):
    """(q, k, v, i, f, state) -> (h, last state) for one implementation."""

    def run(q, k, v, i, f, state):
        return pk.mlstm_chunkwise(
            q,
            k,
            v,
            i,
            f,
            chunk_size=L,
            initial_state=state,
            return_last_state=True,
            impl=impl,
            interpret=interpret,
        )

    return run


def _mlstm_value_and_grads(run, w):
    def loss(q, k, v, i, f, state):
        h, last = run(q, k, v, i, f, state)
        return jnp.sum(h.astype(jnp.float32) * w) + sum(jnp.sum(s) for s in last), (h, last)

    return jax.jit(jax.grad(loss, argnums=tuple(range(6)), has_aux=True))


def mlstm_check(shapes, interpret) -> list[str]:
    """Pallas vs XLA (fp32 math, full-precision matmuls) in fp32 and bf16: norm-relative errors."""
    rows = ["| dtype | B, NH, S, DQK, DV, L | h | last C | dq | dk | dv | di | df | dstate0 | ok |"]
    rows.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for dtype in (jnp.float32, jnp.bfloat16):
        for B, NH, S, DQ, DV, L in shapes:
            args = _mlstm_inputs(B, NH, S, DQ, DV, dtype, seed=S + DQ + L)
            w = jax.random.normal(jax.random.key(1), (B, NH, S, DV))
            with jax.default_matmul_precision("float32"):
                g_ref, (h_ref, l_ref) = _mlstm_value_and_grads(_mlstm_fn("xla", L, False), w)(*args)
            g_pal, (h_pal, l_pal) = _mlstm_value_and_grads(_mlstm_fn("pallas", L, interpret), w)(
                *args
            )
            line = _check_row(
                dtype,
                f"{B}, {NH}, {S}, {DQ}, {DV}, {L}",
                (h_pal, l_pal[0], g_pal),
                (h_ref, l_ref[0], g_ref),
            )
            rows.append(line)
            print(line, flush=True)
    return rows


def mlstm_flops(B, NH, S, DQ, DV, L) -> float:
    """Forward FLOPs of the chunkwise algorithm (matmuls only, the causal L x L blocks counted
    in full, as computed): per chunk 2 L^2 (DQK + DV) intra-chunk, 2 L DQK DV for q C and
    2 L DQK DV for the state update. The backward is counted as 2x the forward."""
    return B * NH * S * (2.0 * L * (DQ + DV) + 4.0 * DQ * DV)


def attention_flops(B, NH, S, D) -> float:
    """Causal attention forward FLOPs (half of 4 B NH S^2 D); the backward as 2.5x."""
    return 2.0 * B * NH * S * S * D


def matmul_tflops(n: int, reps: int) -> float:
    """Measured bf16 matmul rate (n x n x n, fp32 accumulation), TFLOP/s."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    mm = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    return 2.0 * n**3 / (time_ms(mm, a, a, reps=reps) * 1e-3) / 1e12


_TFLA = textwrap.dedent(
    """
    from mlstm_kernels.torch.chunkwise.triton_xl_chunk import mlstm_chunkwise__xl_chunk as tfla
    reps = int(sys.argv[1])
    for spec in sys.argv[2:]:
        B, NH, S, DQ, DV, L = (int(x) for x in spec.split(","))
        kw = dict(device="cuda", dtype=torch.bfloat16)
        q, k = (torch.randn(B, NH, S, DQ, requires_grad=True, **kw) for _ in range(2))
        v = torch.randn(B, NH, S, DV, requires_grad=True, **kw)
        i, f = (torch.randn(B, NH, S, requires_grad=True, **kw) for _ in range(2))
        def fwd():
            return tfla(q, k, v, i, f, chunk_size=L, autocast_kernel_dtype=torch.bfloat16)
        print("RESULT" + spec + "=" + json.dumps(median_ms(fwd, reps)), flush=True)
    """
)


def tfla_ms(shapes, reps, timeout_s) -> dict:
    """The mlstm_kernels TFLA Triton kernels (PyTorch) in a subprocess, all shapes in one run;
    returns {shape: {"fwd": ms, "fwdbwd": ms} or a reason string}."""
    specs = [",".join(map(str, s)) for s in shapes]
    found, why = _run_torch(_TFLA, [str(reps), *specs], timeout_s, "TFLA")
    return {s: found.get(sp, why) for s, sp in zip(shapes, specs, strict=True)}


def mlstm_bench(shapes, interpret, reps, peak, tfla_timeout) -> list[str]:
    """Forward and forward+backward times in bf16: Pallas vs XLA chunkwise vs cuDNN attention
    (32 heads x 128, causal, same B and S) vs TFLA (mlstm_kernels)."""
    rows = [
        "| B, NH, S, DQK, DV, L | implementation | fwd ms | fwd+bwd ms | fwd TFLOP/s | "
        "fwd+bwd TFLOP/s | Pallas fwd+bwd speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    tfla = tfla_ms(shapes, reps, tfla_timeout) if tfla_timeout > 0 else {}
    done_attention = set()
    for B, NH, S, DQ, DV, L in shapes:
        args = _mlstm_inputs(B, NH, S, DQ, DV, jnp.bfloat16)
        w = jax.random.normal(jax.random.key(1), (B, NH, S, DV), jnp.bfloat16)
        fl = mlstm_flops(B, NH, S, DQ, DV, L)
        results = []
        # The XLA baseline once per S (its time hardly depends on L), to keep the script short.
        impls = [("Pallas", "pallas")] + ([("XLA chunkwise", "xla")] if shapes[0][-1] == L else [])
        for label, impl in impls:
            run = _mlstm_fn(impl, L, interpret and impl == "pallas")
            fwd = jax.jit(lambda *a, run=run: run(*a)[0])
            fb = _mlstm_value_and_grads(run, w)
            try:
                t_f, t_fb = time_ms(fwd, *args, reps=reps), time_ms(fb, *args, reps=reps)
                results.append((label, t_f, t_fb, fl, 3 * fl))
            except Exception as err:  # report a path that fails to build or run, keep going
                results.append((label, f"failed: {type(err).__name__}", None, fl, 3 * fl))
                print(label, str(err)[:300], flush=True)
        if S not in done_attention and not interpret:
            done_attention.add(S)
            results.append(attention_times(B, S, reps))
        ref = tfla.get((B, NH, S, DQ, DV, L))
        if isinstance(ref, dict):
            results.append(("TFLA (mlstm_kernels)", ref["fwd"], ref["fwdbwd"], fl, 3 * fl))
        elif ref is not None:
            results.append(("TFLA (mlstm_kernels)", ref, None, fl, 3 * fl))
        pallas_fb = results[0][2]
        for label, t_f, t_fb, fl_f, fl_fb in results:
            if t_fb is None:
                line = f"| {B}, {NH}, {S}, {DQ}, {DV}, {L} | {label} | {t_f} | | | | |"
            else:
                speed = f"{t_fb / pallas_fb:.2f}x" if isinstance(pallas_fb, float) else ""
                line = (
                    f"| {B}, {NH}, {S}, {DQ}, {DV}, {L} | {label} | {t_f:.2f} | {t_fb:.2f} | "
                    f"{fl_f / t_f / 1e9:.1f} | {fl_fb / t_fb / 1e9:.1f} | {speed} |"
                )
            rows.append(line)
            print(line, flush=True)
    rows += ["", f"Measured bf16 matmul rate: {peak:.0f} TFLOP/s (the roof for the columns above)."]
    return rows


def attention_times(B, S, reps):
    """cuDNN flash attention, causal, 32 heads x 128, bf16: (label, fwd ms, fwd+bwd ms, fwd
    flops, fwd+bwd flops), with the backward counted as 2.5x the forward (FA convention)."""
    NA, D = 32, 128
    ks = jax.random.split(jax.random.key(2), 3)
    q, k, v = (jax.random.normal(kk, (B, S, NA, D), jnp.bfloat16) for kk in ks)
    att = functools.partial(jax.nn.dot_product_attention, is_causal=True, implementation="cudnn")
    fwd = jax.jit(att)
    fb = jax.jit(jax.grad(lambda q, k, v: jnp.sum(att(q, k, v).astype(jnp.float32)), (0, 1, 2)))
    label = "cuDNN attention (32 x 128)"
    fl = attention_flops(B, NA, S, D)
    try:
        return (
            label,
            time_ms(fwd, q, k, v, reps=reps),
            time_ms(fb, q, k, v, reps=reps),
            fl,
            3.5 * fl,
        )
    except Exception as err:  # cuDNN missing or shape unsupported: report, keep going
        return (label, f"failed: {type(err).__name__}: {str(err)[:80]}", None, fl, 3.5 * fl)


def mlstm_section(args) -> list[str]:
    if args.dry_run:
        check_shapes = [(1, 1, 40, 16, 32, 16)]
        bench_shapes = [(1, 1, 32, 16, 16, 16)]
        peak = 0.0
    else:
        check_shapes = [(2, 4, 512, 128, 256, 64), (1, 2, 1000, 64, 96, 128)]
        bench_shapes = [
            (65536 // S, 16, S, 128, 256, L) for S in (2048, 8192, 32768) for L in (64, 128)
        ]
        peak = matmul_tflops(8192, args.reps)
    lines = ["## mLSTM", "", "Correctness, Pallas vs XLA reference (norm-relative errors):", ""]
    lines += mlstm_check(check_shapes, args.dry_run)
    lines += ["", f"Timings, bf16, median of {args.reps} (`block_until_ready`):", ""]
    tfla_timeout = 0 if args.dry_run or args.skip_tfla else args.tfla_timeout
    lines += mlstm_bench(bench_shapes, args.dry_run, args.reps, peak, tfla_timeout)
    lines += [
        "",
        "TFLOP/s: mLSTM counts the chunkwise matmuls (`mlstm_flops`, backward = 2x forward); "
        "attention counts the causal half of 4 B NH S^2 D, backward = 2.5x forward. "
        "Speed-up column: that row's fwd+bwd time over the Pallas one (> 1: Pallas is faster).",
    ]
    return lines + [""]


SECTIONS: dict[str, Callable] = {"slstm": slstm_section, "mlstm": mlstm_section}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="interpret mode, tiny shapes (CPU)")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated sections")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default 20)")
    p.add_argument("--tune", action="store_true", help="also time a few block-size variants")
    p.add_argument("--skip-xlstm-cuda", action="store_true", help="skip the torch reference")
    p.add_argument("--xlstm-timeout", type=int, default=150, help="seconds for its build+run")
    p.add_argument("--skip-tfla", action="store_true", help="skip the mlstm_kernels TFLA kernels")
    p.add_argument("--tfla-timeout", type=int, default=100, help="seconds for all TFLA shapes")
    p.add_argument("--out", default=None, help="markdown file (default: benchmarks/results/)")
    args = p.parse_args(argv)
    args.reps = args.reps or (2 if args.dry_run else 20)
    dev = jax.devices()[0]
    if not args.dry_run and dev.platform != "gpu":
        print("No GPU found: run with --dry-run (interpret mode) on this machine.")
        return 2
    t0 = time.time()
    header = [
        "# GPU check: Pallas kernels vs the XLA reference"
        + (" (dry run: interpret mode on CPU, timings meaningless)" if args.dry_run else ""),
        "",
        f"- device: {dev.device_kind} ({dev.platform})",
        f"- jax {jax.__version__}, date {datetime.date.today().isoformat()}",
        "- command: `PYTHONPATH=. python benchmarks/gpu_check.py "
        + " ".join(argv if argv is not None else sys.argv[1:])
        + "`",
        "",
    ]
    lines = list(header)
    for name in args.sections.split(","):
        lines += SECTIONS[name](args)
    lines.append(f"Total time: {time.time() - t0:.0f} s.")
    text = "\n".join(lines) + "\n"
    out = args.out
    if out is None and not args.dry_run:
        slug = "".join(c if c.isalnum() else "_" for c in dev.device_kind.lower())
        out = RESULTS / f"gpu_check_{slug}.md"
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

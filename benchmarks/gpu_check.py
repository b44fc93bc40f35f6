"""GPU check and benchmark: the Pallas kernels against the XLA reference (correctness),
kernel times, and the model's train step and decoding, written as one markdown report.

    PYTHONPATH=. python benchmarks/gpu_check.py --quick     # on a GPU: < 4 min on an H200
    PYTHONPATH=. python benchmarks/gpu_check.py             # more shapes, block-size variants
    PYTHONPATH=. python benchmarks/gpu_check.py --dry-run   # anywhere: interpret mode, tiny

The report (device, JAX version, machine, date, command) goes to a scratch copy,
``runs/benchmarks/gpu_<device>_<date>.md``; ``--update-results`` writes it to
``benchmarks/results/`` instead, ``--out`` anywhere. Every row is isolated: a compile error,
``RESOURCE_EXHAUSTED`` shared memory, a NaN or a mismatch is written into its row and the
script goes on; rows that would overrun the time budget (``--budget-s``) are marked skipped.

Times: kernel time from CUPTI (``jax.experimental.mosaic.gpu.profiler.measure``, the sum of
the kernels a call launches) where JAX offers it, and the device-synchronised wall clock
(``block_until_ready``), medians over ``--reps`` calls after a warm-up that compiles. Rates
are set against the card's measured bf16 matmul rate and device-to-device copy bandwidth.

The PyTorch comparisons run in subprocesses when their packages import: the reference's
CUDA sLSTM (``xlstm``), TFLA (``mlstm_kernels``) and FlashRNN (``flashrnn``); on a machine
without them, install their wheels first (all three are pure-Python wheels that build
their CUDA code on first use). Nothing here imports a training-only package (no grain).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from _results import add_output_args, output_path, provenance

import pallas_kernels as pk
from pallas_kernels import dispatch, mosaic
from pallas_kernels.slstm import block_sizes as slstm_tiles
from pallas_kernels.slstm import triton_scan as slstm_kernel

# Norm-relative error bounds for the GPU correctness check (outputs and gradients).
CHECK_BOUND = {"float32": 1e-4, "bfloat16": 3e-2}


class Budget:
    """Wall-clock budget of the whole run: rows check it before they start."""

    def __init__(self, seconds: float):
        self.end = time.time() + seconds

    def left(self) -> float:
        return self.end - time.time()

    def allows(self, seconds: float) -> bool:
        return self.left() > seconds


def failure(err: BaseException) -> str:
    """A table cell for an exception: its type and first line (e.g. RESOURCE_EXHAUSTED)."""
    first = (str(err).strip().splitlines() or [""])[0]
    return f"failed: {type(err).__name__}: {first[:120]}".replace("|", "/")


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def _cupti():
    try:
        from jax.experimental.mosaic.gpu import profiler

        return profiler.measure
    except Exception:  # noqa: BLE001 - no Mosaic GPU profiler here: wall clock only
        return None


@dataclasses.dataclass
class Timing:
    wall_ms: float
    kernel_ms: float | None  # CUPTI, None where unavailable

    @property
    def best_ms(self) -> float:
        return self.kernel_ms if self.kernel_ms is not None else self.wall_ms

    def cells(self) -> str:
        kernel = f"{self.kernel_ms:.3f}" if self.kernel_ms is not None else "-"
        return f"{kernel} | {self.wall_ms:.3f}"


def measure(fn: Callable, *args, reps: int, warmup: int = 2, cupti: bool = True) -> Timing:
    """Median kernel (CUPTI) and wall-clock milliseconds of ``fn(*args)`` (compiled by the
    warm-up calls)."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    walls = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        walls.append((time.perf_counter() - t0) * 1e3)
    kernel = None
    profile = _cupti() if cupti and jax.devices()[0].platform == "gpu" else None
    if profile is not None:
        try:
            _, ms = profile(fn, iterations=reps)(*args)
            ms = ms if isinstance(ms, list) else [ms]
            ms = [m for m in ms if m is not None]
            kernel = statistics.median(ms) if ms else None
        except Exception:  # noqa: BLE001 - CUPTI busy or unsupported: wall clock stands
            kernel = None
    return Timing(statistics.median(walls), kernel)


# ---------------------------------------------------------------------------------------------
# The card: measured bf16 matmul rate and copy bandwidth (the roofs of the rate columns).
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Roofs:
    tflops: float  # bf16 matmul, TFLOP/s
    gbps: float  # device-to-device copy, GB/s (bytes read + written)


def measure_roofs(args) -> tuple[Roofs, list[str]]:
    if args.dry_run:
        return Roofs(0.0, 0.0), ["## Device", "", "(dry run: no roofs measured)", ""]
    n = 8192
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    mm = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    t_mm = measure(mm, a, a, reps=args.reps)
    x = jax.random.normal(jax.random.key(1), (256 * 1024 * 1024,), jnp.float32)  # 1 GiB
    cp = jax.jit(lambda x: x + 1.0)
    t_cp = measure(cp, x, reps=args.reps)
    roofs = Roofs(
        2.0 * n**3 / (t_mm.best_ms * 1e-3) / 1e12, 2 * x.nbytes / (t_cp.best_ms * 1e-3) / 1e9
    )
    lines = [
        "## Device",
        "",
        f"- bf16 matmul {n}^3 (fp32 accumulation): {roofs.tflops:.0f} TFLOP/s "
        f"(kernel ms | wall ms: {t_mm.cells()})",
        f"- copy of 1 GiB (read + write): {roofs.gbps:.0f} GB/s (kernel ms | wall ms: "
        f"{t_cp.cells()})",
        "",
    ]
    return roofs, lines


# ---------------------------------------------------------------------------------------------
# Correctness rows (shared by the sLSTM and mLSTM sections).
# ---------------------------------------------------------------------------------------------


def _value_and_grads(run, w, nargs):
    """jit(grad) of a linear loss of the first output and of every final state."""

    def loss(*a):
        out, last = run(*a)
        return jnp.sum(out.astype(jnp.float32) * w) + sum(jnp.sum(s) for s in last), (out, last)

    return jax.jit(jax.grad(loss, argnums=tuple(range(nargs)), has_aux=True))


def check_row(
    label: str, dtype, ref_run, pallas_run, args, w, names, last: int, pallas_vg=None
) -> str:
    """Pallas vs XLA (full-precision matmuls in the reference) for outputs, the final state
    ``last`` (its index) and every gradient; an exception or a non-finite value fails the
    row. ``pallas_vg``: ``_value_and_grads(pallas_run, w, len(args))`` built by the caller,
    whose compile then serves its timing too."""
    cols = len(names) + 1
    pallas_vg = pallas_vg or _value_and_grads(pallas_run, w, len(args))
    try:
        with jax.default_matmul_precision("float32"):
            g_ref, (o_ref, l_ref) = _value_and_grads(ref_run, w, len(args))(*args)
        g_pal, (o_pal, l_pal) = pallas_vg(*args)
        got = [o_pal, l_pal[last], *g_pal]
        want = [o_ref, l_ref[last], *g_ref]
        errs = []
        for a, b in zip(got, want, strict=True):
            a_leaves = [np.asarray(x, np.float32) for x in jax.tree.leaves(a)]
            b_leaves = [np.asarray(x, np.float32) for x in jax.tree.leaves(b)]
            if not all(np.isfinite(x).all() for x in a_leaves):
                errs.append(float("nan"))
                continue
            errs.append(max(rel_err(x, y) for x, y in zip(a_leaves, b_leaves, strict=True)))
    except Exception as err:  # noqa: BLE001 - one failing configuration, not the run
        return f"| {jnp.dtype(dtype).name} | {label} | {failure(err)} |" + " |" * (cols - 1)
    ok = all(np.isfinite(e) and e < CHECK_BOUND[jnp.dtype(dtype).name] for e in errs)
    cells = " | ".join("NaN" if not np.isfinite(e) else f"{e:.1e}" for e in errs)
    return f"| {jnp.dtype(dtype).name} | {label} | {cells} | {'yes' if ok else 'NO'} |"


# ---------------------------------------------------------------------------------------------
# PyTorch comparisons, each in a subprocess (a missing package or a failed CUDA build is a
# row that says so).
# ---------------------------------------------------------------------------------------------

# Median milliseconds of fwd() and of its backward, after two warm-up calls each.
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


def run_torch(script: str, args: list[str], timeout_s: int, what: str) -> tuple[dict, str]:
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
    return found, why.replace("|", "/")


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

_FLASHRNN = textwrap.dedent(
    """
    from flashrnn.flashrnn import flashrnn
    B, S, NH, DH, reps = (int(a) for a in sys.argv[1:6])
    kw = dict(device="cuda", dtype=torch.bfloat16)
    Wx = torch.randn(B, S, 4, NH, DH, requires_grad=True, **kw)
    R = (torch.randn(4, NH, DH, DH, **kw) / DH**0.5).requires_grad_()
    b = torch.randn(4, NH, DH, requires_grad=True, **kw)
    def fwd():
        return flashrnn(Wx, R, b, function="slstm", backend="cuda_fused", dtype="bfloat16")[0]
    print("RESULT=" + json.dumps(median_ms(fwd, reps)))
    """
)

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


def torch_row(label: str, shape: str, found: dict | str, base: tuple | None, cols: int) -> str:
    """A table row of ``cols`` cells for a PyTorch comparison (wall-clock times only)."""
    if not isinstance(found, dict):
        return f"| {shape} | {label} | {found} |" + " |" * (cols - 3)
    speed = f"{found['fwdbwd'] / base[1]:.2f}x" if base is not None else ""
    times = f"- / {found['fwd']:.3f} | - / {found['fwdbwd']:.3f}"
    return f"| {shape} | {label} | {times} |" + " |" * (cols - 5) + f" {speed} |"


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


def slstm_flops(B, S, NH, DH) -> float:
    """Forward matmul FLOPs of the recurrence (y_{t-1} R per step); backward counted 2x."""
    return 2.0 * B * S * NH * DH * 4 * DH


def slstm_section(args, roofs: Roofs, budget: Budget) -> list[str]:
    if args.dry_run:
        check_shapes, bench_shapes = [(3, 5, 1, 16)], [(2, 8, 2, 16)]
    elif args.quick:
        check_shapes, bench_shapes = [(16, 256, 4, 256)], [(16, 2048, 4, 256)]
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
    names = ["y", "last c", "dgates_x", "dR", "dbias", "dstate0"]
    lines = ["## sLSTM", "", "Correctness, Pallas vs XLA (norm-relative errors):", ""]
    lines += ["| dtype | B, S, NH, DH | " + " | ".join(names) + " | ok |"]
    lines += ["|---|---|" + "---|" * (len(names) + 1)]
    for dtype in (jnp.float32, jnp.bfloat16):
        for B, S, NH, DH in check_shapes:
            args_ = _slstm_inputs(B, S, NH, DH, dtype, seed=S + DH)
            w = jax.random.normal(jax.random.key(1), (B, S, NH, DH))
            row = check_row(
                f"{B}, {S}, {NH}, {DH}",
                dtype,
                _slstm_fn("xla", False),
                _slstm_fn("pallas", args.dry_run),
                args_,
                w,
                names,
                last=1,  # c
            )
            lines.append(row)
            print(row, flush=True)
    lines += [
        "",
        f"Times, bf16, median of {args.reps}: kernel (CUPTI) / wall ms; TFLOP/s of the "
        "recurrent matmuls from the best time.",
        "",
        "| B, S, NH, DH | implementation | fwd ms | fwd+bwd ms | fwd TFLOP/s | "
        "fwd+bwd TFLOP/s | fwd+bwd vs Pallas |",
        "|---|---|---|---|---|---|---|",
    ]
    for B, S, NH, DH in bench_shapes:
        shape = f"{B}, {S}, {NH}, {DH}"
        gx, R, bias, state = _slstm_inputs(B, S, NH, DH, jnp.bfloat16)
        w = jax.random.normal(jax.random.key(1), (B, S, NH, DH))
        fl = slstm_flops(B, S, NH, DH)
        impls = [
            (f"Pallas {label}", _slstm_fn("pallas", args.dry_run, bs)) for label, bs in variants
        ]
        impls += [("lax.scan (XLA)", _slstm_fn("xla", False))]
        base = None
        for label, run in impls:
            if not budget.allows(30):
                lines.append(f"| {shape} | {label} | skipped (time budget) | | | | |")
                continue
            try:
                fwd = jax.jit(lambda *a, run=run: run(*a)[0])
                t_f = measure(fwd, gx, R, bias, state, reps=args.reps)
                t_fb = measure(_value_and_grads(run, w, 4), gx, R, bias, state, reps=args.reps)
            except Exception as err:  # noqa: BLE001 - record and go on
                lines.append(f"| {shape} | {label} | {failure(err)} | | | | |")
                print(lines[-1], flush=True)
                continue
            base = base or (t_f.best_ms, t_fb.best_ms)
            lines.append(
                f"| {shape} | {label} | {t_f.cells().replace(' | ', ' / ')} | "
                f"{t_fb.cells().replace(' | ', ' / ')} | {fl / t_f.best_ms / 1e9:.1f} | "
                f"{3 * fl / t_fb.best_ms / 1e9:.1f} | {t_fb.best_ms / base[1]:.2f}x |"
            )
            print(lines[-1], flush=True)
        # The CUDA sLSTMs build their extensions on first use (minutes): not in --quick.
        torch_ok = not (args.dry_run or args.skip_torch or args.quick)
        if torch_ok and budget.allows(args.torch_timeout):
            spec = [str(a) for a in (B, S, NH, DH, args.reps)]
            for label, script in (("xlstm CUDA (torch)", _XLSTM_CUDA), ("FlashRNN", _FLASHRNN)):
                found, why = run_torch(script, spec, args.torch_timeout, f"{label} build")
                lines.append(torch_row(label, shape, found.get("", why), base, 7))
                print(lines[-1], flush=True)
    peak = f"{roofs.tflops:.0f}" if roofs.tflops else "-"
    lines += ["", f"Measured bf16 matmul roof: {peak} TFLOP/s.", ""]
    return lines


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


def mlstm_flops(B, NH, S, DQ, DV, L) -> float:
    """Forward FLOPs of the chunkwise algorithm (matmuls only, the causal L x L blocks counted
    in full, as computed): per chunk 2 L^2 (DQK + DV) intra-chunk, 2 L DQK DV for q C and
    2 L DQK DV for the state update. The backward is counted as 2x the forward."""
    return B * NH * S * (2.0 * L * (DQ + DV) + 4.0 * DQ * DV)


def mlstm_bytes(B, NH, S, DQ, DV, dtype_bytes=2) -> float:
    """Bytes the forward must move at least: q, k, v in, h out, the fp32 gates."""
    return B * NH * S * ((2 * DQ + 2 * DV) * dtype_bytes + 8)


def attention_flops(B, NH, S, D) -> float:
    """Causal attention forward FLOPs (half of 4 B NH S^2 D); the backward as 2.5x."""
    return 2.0 * B * NH * S * S * D


def attention_row(B, S, reps, shape: str, base) -> str:
    """cuDNN flash attention, causal, 32 heads x 128, bf16."""
    NA, D = 32, 128
    ks = jax.random.split(jax.random.key(2), 3)
    label = "cuDNN attention (32 x 128)"
    try:
        q, k, v = (jax.random.normal(kk, (B, S, NA, D), jnp.bfloat16) for kk in ks)
        att = functools.partial(
            jax.nn.dot_product_attention, is_causal=True, implementation="cudnn"
        )
        fwd = jax.jit(att)
        fb = jax.jit(jax.grad(lambda q, k, v: jnp.sum(att(q, k, v).astype(jnp.float32)), (0, 1, 2)))
        t_f, t_fb = measure(fwd, q, k, v, reps=reps), measure(fb, q, k, v, reps=reps)
    except Exception as err:  # noqa: BLE001 - cuDNN missing or shape unsupported
        return f"| {shape} | {label} | {failure(err)} | | | | | |"
    fl = attention_flops(B, NA, S, D)
    speed = f"{t_fb.best_ms / base[1]:.2f}x" if base else ""
    return (
        f"| {shape} | {label} | {t_f.cells().replace(' | ', ' / ')} | "
        f"{t_fb.cells().replace(' | ', ' / ')} | {fl / t_f.best_ms / 1e9:.1f} | "
        f"{3.5 * fl / t_fb.best_ms / 1e9:.1f} | | {speed} |"
    )


MOSAIC_LABEL = "Pallas (Mosaic GPU)"


def mosaic_skip_reason(dry_run: bool) -> str | None:
    """Why the Mosaic GPU rows cannot run here (None when they can: JAX >= 0.11.2 and an
    sm_90+ GPU, or the interpreter in a dry run)."""
    reason = mosaic.jax_reason()
    if reason is not None:
        return f"JAX {jax.__version__} has no usable Mosaic GPU API (needs >= 0.11.2)"
    if not (dry_run or dispatch.on_hopper_or_newer()):
        return "needs a CUDA GPU of compute capability 9.0+"
    return None


def mosaic_check_rows(shapes, args, names) -> list[str]:
    """The Mosaic GPU kernels (bf16: wgmma) against XLA, one correctness row per shape."""
    rows, why = [], mosaic_skip_reason(args.dry_run)
    for B, NH, S, DQ, DV, L in shapes:
        label = f"{B}, {NH}, {S}, {DQ}, {DV}, {L} (Mosaic)"
        if why is not None:
            rows.append(f"| bfloat16 | {label} | skipped: {why} |" + " |" * len(names))
        else:
            args_ = _mlstm_inputs(B, NH, S, DQ, DV, jnp.bfloat16, seed=S + DQ + L)
            w = jax.random.normal(jax.random.key(1), (B, NH, S, DV))
            rows.append(
                check_row(
                    label,
                    jnp.bfloat16,
                    _mlstm_fn("xla", L, False),
                    _mlstm_fn("mosaic", L, args.dry_run),
                    args_,
                    w,
                    names,
                    last=0,  # C
                )
            )
        print(rows[-1], flush=True)
    return rows


def mlstm_section(args, roofs: Roofs, budget: Budget) -> list[str]:
    # Mosaic kernels take chunks of 64 or 128: their own check shape in a dry run (the
    # interpreter costs about a second per CTA: two chunks, one head).
    if args.dry_run:
        check_shapes = [(1, 1, 40, 16, 32, 16)]
        mosaic_shapes = [(1, 1, 67, 16, 32, 64)]
        bench_shapes = [(1, 1, 32, 16, 16, 16)]
    elif args.quick:
        check_shapes = [(2, 4, 512, 128, 256, 64)]
        mosaic_shapes = check_shapes
        bench_shapes = [(8, 16, 8192, 128, 256, 64), (8, 16, 8192, 128, 256, 128)]
    else:
        check_shapes = [(2, 4, 512, 128, 256, 64), (1, 2, 1000, 64, 96, 128)]
        mosaic_shapes = check_shapes
        bench_shapes = [
            (65536 // S, 16, S, 128, 256, L) for S in (2048, 8192, 32768) for L in (64, 128)
        ]
    names = ["h", "last C", "dq", "dk", "dv", "di", "df", "dstate0"]
    lines = [
        "## mLSTM (chunkwise)",
        "",
        "Correctness, Pallas (Triton; rows marked Mosaic: the Mosaic GPU kernels) vs XLA "
        "(norm-relative errors):",
        "",
    ]
    lines += ["| dtype | B, NH, S, DQK, DV, L | " + " | ".join(names) + " | ok |"]
    lines += ["|---|---|" + "---|" * (len(names) + 1)]
    for dtype in (jnp.float32, jnp.bfloat16):
        for B, NH, S, DQ, DV, L in check_shapes:
            args_ = _mlstm_inputs(B, NH, S, DQ, DV, dtype, seed=S + DQ + L)
            w = jax.random.normal(jax.random.key(1), (B, NH, S, DV))
            row = check_row(
                f"{B}, {NH}, {S}, {DQ}, {DV}, {L}",
                dtype,
                _mlstm_fn("xla", L, False),
                _mlstm_fn("pallas", L, args.dry_run),
                args_,
                w,
                names,
                last=0,  # C
            )
            lines.append(row)
            print(row, flush=True)
    lines += mosaic_check_rows(mosaic_shapes, args, names)
    lines += [
        "",
        f"Times, bf16, median of {args.reps}: kernel (CUPTI) / wall ms; TFLOP/s from the best "
        "time; fwd GB/s counts q, k, v, h and the gates once.",
        "",
        "| B, NH, S, DQK, DV, L | implementation | fwd ms | fwd+bwd ms | fwd TFLOP/s | "
        "fwd+bwd TFLOP/s | fwd GB/s | fwd+bwd vs Pallas |",
        "|---|---|---|---|---|---|---|---|",
    ]
    tfla = {}
    if not args.dry_run and not args.skip_torch and budget.allows(args.torch_timeout + 60):
        specs = [",".join(map(str, s)) for s in bench_shapes]
        found, why = run_torch(_TFLA, [str(args.reps), *specs], args.torch_timeout, "TFLA")
        tfla = {s: found.get(sp, why) for s, sp in zip(bench_shapes, specs, strict=True)}
    attention_done = set()
    for B, NH, S, DQ, DV, L in bench_shapes:
        shape = f"{B}, {NH}, {S}, {DQ}, {DV}, {L}"
        args_ = _mlstm_inputs(B, NH, S, DQ, DV, jnp.bfloat16)
        w = jax.random.normal(jax.random.key(1), (B, NH, S, DV), jnp.bfloat16)
        fl, nbytes = mlstm_flops(B, NH, S, DQ, DV, L), mlstm_bytes(B, NH, S, DQ, DV)
        base = None
        # The XLA baseline once per S (its time hardly depends on L), to keep the run short;
        # Mosaic at every shape, in --quick at the first chunk size only (a dry run's chunk
        # of 16 is below its 64: the check row above covers it there).
        first_L = bench_shapes[0][-1] == L
        impls = [("Pallas (Triton)", "pallas")]
        impls += [(MOSAIC_LABEL, "mosaic")] if first_L or not args.quick else []
        impls += [("XLA chunkwise", "xla")] if first_L else []
        for label, impl in impls:
            why = mosaic_skip_reason(False) if impl == "mosaic" else None
            if impl == "mosaic" and args.dry_run:
                why = "dry run: chunk 16 < 64, see the check row"
            if why is not None:
                lines.append(f"| {shape} | {label} | skipped: {why} | | | | | |")
                continue
            if not budget.allows(30):
                lines.append(f"| {shape} | {label} | skipped (time budget) | | | | | |")
                continue
            run = _mlstm_fn(impl, L, args.dry_run and impl == "pallas")
            try:
                fwd = jax.jit(lambda *a, run=run: run(*a)[0])
                t_f = measure(fwd, *args_, reps=args.reps)
                t_fb = measure(_value_and_grads(run, w, 6), *args_, reps=args.reps)
            except Exception as err:  # noqa: BLE001 - record and go on
                lines.append(f"| {shape} | {label} | {failure(err)} | | | | | |")
                print(lines[-1], flush=True)
                continue
            base = base or (t_f.best_ms, t_fb.best_ms)
            lines.append(
                f"| {shape} | {label} | {t_f.cells().replace(' | ', ' / ')} | "
                f"{t_fb.cells().replace(' | ', ' / ')} | {fl / t_f.best_ms / 1e9:.1f} | "
                f"{3 * fl / t_fb.best_ms / 1e9:.1f} | {nbytes / t_f.best_ms / 1e6:.0f} | "
                f"{t_fb.best_ms / base[1]:.2f}x |"
            )
            print(lines[-1], flush=True)
        if S not in attention_done and not args.dry_run and budget.allows(30):
            attention_done.add(S)
            lines.append(attention_row(B, S, args.reps, shape, base))
            print(lines[-1], flush=True)
        ref = tfla.get((B, NH, S, DQ, DV, L))
        if ref is not None:
            lines.append(torch_row("TFLA (mlstm_kernels)", shape, ref, base, 8))
            print(lines[-1], flush=True)
    peak = f"{roofs.tflops:.0f} TFLOP/s, {roofs.gbps:.0f} GB/s" if roofs.tflops else "-"
    lines += [
        "",
        f"Measured roofs: {peak}. mLSTM TFLOP/s count the chunkwise matmuls (`mlstm_flops`, "
        "backward = 2x forward); attention counts the causal half of 4 B NH S^2 D, backward = "
        "2.5x forward. Last column: that row's fwd+bwd time over the Pallas one (> 1: Pallas "
        "is faster). The Mosaic rows' backward runs its state recursions as Mosaic kernels "
        "and its intra-chunk terms in XLA (pallas_kernels/mlstm/mosaic_chunkwise.py).",
        "",
    ]
    return lines


# ---------------------------------------------------------------------------------------------
# mLSTM at the xLSTM-7B shapes
# ---------------------------------------------------------------------------------------------

# (B, NH, S, DQK, DV, L): one mLSTM layer of xLSTM-7B (embedding 4096, 8 heads; q/k heads of
# 256, v heads of 512) at S 8192, and the batches of its decode step. Dry run: the 7B ratio
# DV = 2 DQK at interpret-mode size.
MLSTM_7B = (1, 8, 8192, 256, 512, 64)
MLSTM_7B_DRY = (1, 2, 40, 32, 64, 16)
STEP_7B_BATCHES = (1, 16)


def _step_fn(impl, interpret):
    """(q, k, v, i, f, state) -> (h, new state): ``pk.mlstm_step``."""
    return jax.jit(functools.partial(pk.mlstm_step, impl=impl, interpret=interpret))


def step_rows(B, NH, DQ, DV, reps: int, dry_run: bool, budget: Budget) -> list[str]:
    """The decode step, bf16 q/k/v and an fp32 state: Pallas vs XLA errors (h, new C, n, m;
    norm-relative), then each one's time and state bandwidth (C and n read and written)."""
    shape = f"{B}, {NH}, {DQ}, {DV}"
    q, k, v, i, f, state = _mlstm_inputs(B, NH, 1, DQ, DV, jnp.bfloat16, seed=B)
    args_ = (q[:, :, 0], k[:, :, 0], v[:, :, 0], i[..., 0], f[..., 0], state)
    nbytes = 2 * 4 * B * NH * DQ * (DV + 1)
    rows, base = [], None
    for label, impl in (("Pallas (Triton)", "pallas"), ("XLA", "xla")):
        if not budget.allows(20):
            rows.append(f"| {shape} | {label} | skipped (time budget) | | | | | | | |")
            continue
        try:
            fn = _step_fn(impl, dry_run and impl == "pallas")
            errs = ["", "", "", ""]
            ok = ""
            if impl == "pallas":
                with jax.default_matmul_precision("float32"):
                    want = jax.tree.leaves(_step_fn("xla", False)(*args_))
                got = jax.tree.leaves(fn(*args_))
                vals = [
                    rel_err(a, b) if np.isfinite(np.asarray(a, np.float32)).all() else np.nan
                    for a, b in zip(got, want, strict=True)
                ]
                errs = ["NaN" if not np.isfinite(e) else f"{e:.1e}" for e in vals]
                good = all(np.isfinite(e) and e < CHECK_BOUND["bfloat16"] for e in vals)
                ok = "yes" if good else "NO"
            t = measure(fn, *args_, reps=reps)
        except Exception as err:  # noqa: BLE001 - record and go on
            rows.append(f"| {shape} | {label} | {failure(err)} | | | | | | | |")
            continue
        base = base or t.best_ms
        rows.append(
            f"| {shape} | {label} | {' | '.join(errs)} | {ok} | "
            f"{t.cells().replace(' | ', ' / ')} | {nbytes / t.best_ms / 1e6:.0f} | "
            f"{t.best_ms / base:.2f}x |"
        )
    return rows


def mlstm_7b_section(args, roofs: Roofs, budget: Budget) -> list[str]:
    """One xLSTM-7B mLSTM layer: the chunkwise form (fwd+bwd, bf16) checked and timed, Pallas
    against XLA, and the decode step at batches 1 and 16."""
    B, NH, S, DQ, DV, L = MLSTM_7B_DRY if args.dry_run else MLSTM_7B
    steps = (1, 2) if args.dry_run else STEP_7B_BATCHES
    shape = f"{B}, {NH}, {S}, {DQ}, {DV}, {L}"
    names = ["h", "last C", "dq", "dk", "dv", "di", "df", "dstate0"]
    lines = [
        "## mLSTM at the xLSTM-7B shapes (8 heads, DQK 256, DV 512)",
        "",
        *(
            ["(dry run: the 7B ratio DV = 2 DQK at interpret-mode size)", ""]
            if args.dry_run
            else []
        ),
        "Chunkwise, bf16: Pallas vs XLA (norm-relative errors):",
        "",
        "| dtype | B, NH, S, DQK, DV, L | " + " | ".join(names) + " | ok |",
        "|---|---|" + "---|" * (len(names) + 1),
    ]
    args_ = _mlstm_inputs(B, NH, S, DQ, DV, jnp.bfloat16, seed=7)
    w = jax.random.normal(jax.random.key(1), (B, NH, S, DV), jnp.bfloat16)
    pallas = _mlstm_fn("pallas", L, args.dry_run)
    pallas_vg = _value_and_grads(pallas, w, 6)
    if budget.allows(60):
        row = check_row(
            shape, jnp.bfloat16, _mlstm_fn("xla", L, False), pallas, args_, w, names, 0, pallas_vg
        )
    else:
        row = f"| bfloat16 | {shape} | skipped (time budget) |" + " |" * len(names)
    lines.append(row)
    print(row, flush=True)
    lines += [
        "",
        f"Times, bf16, median of {args.reps}: kernel (CUPTI) / wall ms; TFLOP/s as in the mLSTM "
        "section.",
        "",
        "| B, NH, S, DQK, DV, L | implementation | fwd ms | fwd+bwd ms | fwd TFLOP/s | "
        "fwd+bwd TFLOP/s | fwd GB/s | fwd+bwd vs Pallas |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fl, nbytes = mlstm_flops(B, NH, S, DQ, DV, L), mlstm_bytes(B, NH, S, DQ, DV)
    base = None
    for label, run, fwd_bwd in (
        ("Pallas (Triton)", pallas, pallas_vg),
        (MOSAIC_LABEL, _mlstm_fn("mosaic", L, False), None),
        ("XLA chunkwise", _mlstm_fn("xla", L, False), None),
    ):
        # Mosaic at the 7B shapes in the full run only (--quick keeps its time).
        why = None
        if label == MOSAIC_LABEL:
            why = "dry run: chunk 16 < 64" if args.dry_run else mosaic_skip_reason(False)
            why = why or ("--quick" if args.quick else None)
        if why is not None:
            lines.append(f"| {shape} | {label} | skipped: {why} | | | | | |")
            continue
        if not budget.allows(30):
            lines.append(f"| {shape} | {label} | skipped (time budget) | | | | | |")
            continue
        try:
            fwd = jax.jit(lambda *a, run=run: run(*a)[0])
            t_f = measure(fwd, *args_, reps=args.reps)
            t_fb = measure(fwd_bwd or _value_and_grads(run, w, 6), *args_, reps=args.reps)
        except Exception as err:  # noqa: BLE001 - record and go on
            lines.append(f"| {shape} | {label} | {failure(err)} | | | | | |")
            print(lines[-1], flush=True)
            continue
        base = base or (t_f.best_ms, t_fb.best_ms)
        lines.append(
            f"| {shape} | {label} | {t_f.cells().replace(' | ', ' / ')} | "
            f"{t_fb.cells().replace(' | ', ' / ')} | {fl / t_f.best_ms / 1e9:.1f} | "
            f"{3 * fl / t_fb.best_ms / 1e9:.1f} | {nbytes / t_f.best_ms / 1e6:.0f} | "
            f"{t_fb.best_ms / base[1]:.2f}x |"
        )
        print(lines[-1], flush=True)
    lines += [
        "",
        f"Decode step (`pk.mlstm_step`), bf16 q/k/v, fp32 state, median of {args.reps}: Pallas "
        "vs XLA errors (norm-relative), time, and the state's bytes (C and n read and written) "
        "per time:",
        "",
        "| B, NH, DQK, DV | implementation | h | new C | new n | new m | ok | step ms | "
        "state GB/s | vs Pallas |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for Bs in steps:
        for row in step_rows(Bs, NH, DQ, DV, args.reps, args.dry_run, budget):
            lines.append(row)
            print(row, flush=True)
    return lines + [""]


# ---------------------------------------------------------------------------------------------
# The model: a train step of the 125M xLSTM, and batch-1 decoding.
# ---------------------------------------------------------------------------------------------


def _model_config(args, impl: str):
    """The 125M recipe's model (bf16 compute, fp32 parameters) with every layer on ``impl``;
    the tiny model in a dry run."""
    from configs import xlstm_125m, xlstm_tiny

    cfg = (xlstm_tiny if args.dry_run else xlstm_125m).get_config().model
    mb = cfg.mlstm_block
    sb = cfg.slstm_block
    mb = dataclasses.replace(mb, mlstm=dataclasses.replace(mb.mlstm, impl=impl))
    if sb is not None:
        sb = dataclasses.replace(sb, slstm=dataclasses.replace(sb.slstm, impl=impl))
    return dataclasses.replace(cfg, mlstm_block=mb, slstm_block=sb)


def train_step_row(args, impl: str, roofs: Roofs) -> str:
    import optax
    from flax import nnx

    from train.data.batch import all_scored
    from train.loop.step import make_train_step
    from xlstm_jax import xLSTMLMModel

    B, S = (2, 32) if args.dry_run else (8, 2048)
    try:
        cfg = _model_config(args, impl)
        model = xLSTMLMModel(cfg, rngs=nnx.Rngs(0))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        params = nnx.to_pure_dict(params)
        n_params = sum(x.size for x in jax.tree.leaves(params))
        tx = optax.adamw(1e-4)
        state = {"params": params, "opt_state": tx.init(params)}
        step = jax.jit(make_train_step(graphdef, rest, tx), donate_argnums=0)
        tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, B, S + 1))
        batch = jax.device_put(all_scored(tokens.astype(np.int32)))
        t0 = time.perf_counter()
        state, out = step(state, batch)
        jax.block_until_ready(out["loss"])
        compile_s = time.perf_counter() - t0
        walls = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            state, out = step(state, batch)
            jax.block_until_ready(out["loss"])
            walls.append(time.perf_counter() - t0)
        loss = float(out["loss"])
    except Exception as err:  # noqa: BLE001 - record and go on
        return f"| {impl} | {failure(err)} | | | | |"
    sec = statistics.median(walls)
    tps = B * S / sec
    mfu = f"{6 * n_params * tps / (roofs.tflops * 1e12):.1%}" if roofs.tflops else "-"
    return (
        f"| {impl} | {n_params / 1e6:.1f}M ({cfg.dtype}), {B} x {S} | {sec * 1e3:.1f} | "
        f"{tps:,.0f} | {mfu} | compile {compile_s:.0f} s, loss {loss:.3f} |"
    )


def decode_row(args, impl: str) -> str:
    from flax import nnx

    from xlstm_jax import generate, xLSTMLMModel

    new = 16 if args.dry_run else 256
    try:
        model = xLSTMLMModel(_model_config(args, impl), rngs=nnx.Rngs(0))
        prompt = [[1, 2, 3, 4, 5, 6, 7, 8]]
        generate(model, prompt, new, temperature=0.0)  # compile
        t0 = time.perf_counter()
        generate(model, prompt, new, temperature=0.0)
        sec = time.perf_counter() - t0
    except Exception as err:  # noqa: BLE001 - record and go on
        return f"| {impl} | {failure(err)} | |"
    return f"| {impl} | {new} tokens in {sec * 1e3:.0f} ms | {new / sec:,.0f} |"


def model_section(args, roofs: Roofs, budget: Budget) -> list[str]:
    lines = [
        "## The model",
        "",
        f"Train step (forward, backward, AdamW), median of {args.reps} steps after the "
        "compiling one; MFU = 6 x parameters x tokens/s over the measured bf16 matmul rate:",
        "",
        "| impl | model, batch x seq | step ms | tokens/s | MFU | notes |",
        "|---|---|---|---|---|---|",
    ]
    impls = ["xla"] if args.dry_run else ["pallas", "xla"]
    for impl in impls:
        if not budget.allows(60):
            lines.append(f"| {impl} | skipped (time budget) | | | | |")
            continue
        lines.append(train_step_row(args, impl, roofs))
        print(lines[-1], flush=True)
    lines += ["", "Greedy decoding, batch 1, after an 8-token prompt:", ""]
    lines += ["| impl | what | tokens/s |", "|---|---|---|"]
    for impl in impls:
        if not budget.allows(30):
            lines.append(f"| {impl} | skipped (time budget) | |")
            continue
        lines.append(decode_row(args, impl))
        print(lines[-1], flush=True)
    return lines + [""]


SECTIONS: dict[str, Callable] = {
    "slstm": slstm_section,
    "mlstm": mlstm_section,
    "mlstm_7b": mlstm_7b_section,
    "model": model_section,
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="the headline shapes only (< 4 min)")
    p.add_argument("--dry-run", action="store_true", help="interpret mode, tiny shapes (CPU)")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated sections")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default 20)")
    p.add_argument("--tune", action="store_true", help="also time block-size variants")
    p.add_argument("--skip-torch", action="store_true", help="skip the PyTorch comparisons")
    p.add_argument("--torch-timeout", type=int, default=120, help="seconds per torch script")
    p.add_argument("--budget-s", type=float, default=None, help="time budget (quick: 210)")
    add_output_args(p, "gpu_<device>_<date>.md")
    args = p.parse_args(argv)
    args.reps = args.reps or (2 if args.dry_run else 10 if args.quick else 20)
    budget = Budget(args.budget_s or (210 if args.quick else 3600))
    dev = jax.devices()[0]
    if not args.dry_run and dev.platform != "gpu":
        print("No GPU found: run with --dry-run (interpret mode) on this machine.")
        return 2
    t0 = time.time()
    lines = [
        "# GPU check: Pallas kernels vs the XLA reference"
        + (" (dry run: interpret mode on CPU, timings meaningless)" if args.dry_run else ""),
        "",
        f"- device: {dev.device_kind} ({dev.platform}), {jax.device_count()} device(s); "
        f"JAX {jax.__version__}",
        *provenance(["benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
        "",
    ]
    roofs, roof_lines = measure_roofs(args)
    lines += roof_lines
    for name in args.sections.split(","):
        try:
            lines += SECTIONS[name](args, roofs, budget)
        except Exception as err:  # noqa: BLE001 - a broken section must not lose the rest
            lines += [f"## {name}", "", failure(err), ""]
    lines.append(f"Total time: {time.time() - t0:.0f} s.")
    text = "\n".join(lines) + "\n"
    slug = "".join(c if c.isalnum() else "_" for c in dev.device_kind.lower()).strip("_")
    out = output_path(args, f"gpu_{slug}_{datetime.date.today().isoformat()}.md")
    out.write_text(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

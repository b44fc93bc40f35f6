"""Where the time of one compiled call goes on this machine: XLA's executed operations,
traced with ``jax.profiler`` and grouped.

    python benchmarks/profile_step.py --what train --config xlstm_tiny [--batch 16 --seq 128]
    python benchmarks/profile_step.py --what forecast [--batch 16]
        [--calls 3] [--top 15] [--update-results [--force]]

``--what train`` profiles the jitted train step of ``train.loop.step.make_train_step``
(forward, backward, clipping, AdamW) for a config, in float32; ``--what forecast`` one
TiRex-shaped forecast (``TiRexConfig()``, random weights, contexts of 2048 values, one
patch ahead). After a warm-up call, ``--calls`` calls run under the profiler. Each
executed XLA operation (an XLA:CPU thunk: a fusion, a matmul, a loop) is one event of the
trace; the compiled program's HLO gives each its source operation (``op_name``
metadata), so the table can say which operations of the model the time went to.

The table gives: wall time per call; XLA operations executed per call (a loop body counts
once per iteration) and the mean time of one; the operations' summed time (on 2 cores
two may run at once, and a loop's time includes its body's, so it is not the wall time);
the top operations by time; and the time grouped by the kind of source operation
(``dot_general``, ``transpose``, ``add_any`` of the gradient, ...). Grouping is by the
last component of ``op_name``, so e.g. a transpose inserted by the backward of an einsum
counts as ``transpose``.

Writes a markdown table (``profile_train_<config>_cpu.md`` or ``profile_forecast_cpu.md``:
a scratch copy in ``runs/benchmarks/`` by default, ``--update-results`` for
``benchmarks/results/``, refused on a busy machine unless ``--force``).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import tempfile
import time

import jax
import numpy as np
from _protocol import add_force_arg, check_idle, load, load_line
from _results import add_output_args, output_path, provenance

# Trace events that are the runtime's own bookkeeping, not XLA operations.
_RUNTIME = re.compile(r"Thunk|Execute|Pjit|^\$|ThreadPool|Await|PjRt")


def _train_call(config: str, batch: int, seq: int):
    from train_throughput import train_step

    from train.config import named
    from train.config.overrides import apply_overrides
    from train.data.batch import all_scored

    cfg = apply_overrides(named.load(config), ["model.dtype=float32"])
    step, state = train_step(cfg, donate=False)
    tokens = np.random.default_rng(0).integers(0, 256, size=(batch, seq + 1), dtype=np.int32)
    x = all_scored(tokens[None])
    return step, (state, x), f"train step of `{config}`, batch {batch} x {seq} tokens"


def _forecast_call(batch: int):
    from flax import nnx

    from xlstm_jax import TiRexConfig
    from xlstm_jax.models.tirex.forecast import _next_patches
    from xlstm_jax.models.tirex.model import TiRex

    model = TiRex(TiRexConfig(), rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(0)
    ctx = (rng.normal(size=(batch, 2048)).cumsum(axis=1) + 100.0).astype(np.float32)

    def call(state, ctx):
        return _next_patches(nnx.merge(graphdef, state), ctx, 1)

    what = f"TiRex-shaped forecast (35M parameters), batch {batch} x 2048 values, horizon 32"
    return jax.jit(call), (state, ctx), what


def _op_names(compiled_text: str) -> dict[str, str]:
    """Instruction name -> its ``op_name`` metadata, from the compiled HLO text."""
    names = {}
    for line in compiled_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]+)\"", line)
        if m:
            names[m.group(1)] = m.group(2)
    return names


def _events(trace_dir: str) -> list[dict]:
    path = sorted(glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True))[-1]
    with gzip.open(path) as f:
        trace = json.load(f)
    return [
        e for e in trace["traceEvents"] if e.get("ph") == "X" and not _RUNTIME.search(e["name"])
    ]


def _kind(op_name: str) -> str:
    """The source operation's kind: the last path component, without its arguments."""
    last = op_name.rsplit("/", 1)[-1]
    return re.sub(r"\(.*", "", last) or "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--what", choices=["train", "forecast"], default="train")
    ap.add_argument("--config", default="xlstm_tiny", help="with --what train")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128, help="with --what train")
    ap.add_argument("--calls", type=int, default=3, help="profiled calls after a warm-up")
    ap.add_argument("--top", type=int, default=15, help="operations listed by time")
    add_force_arg(ap)
    add_output_args(ap, "profile_train_<config>_cpu.md or profile_forecast_cpu.md")
    args = ap.parse_args()
    name = (
        f"profile_train_{args.config}_cpu.md" if args.what == "train" else "profile_forecast_cpu.md"
    )

    head = provenance()
    before = load()
    idle = check_idle(args, before, what="timings")
    if args.what == "train":
        fn, inputs, what = _train_call(args.config, args.batch, args.seq)
    else:
        fn, inputs, what = _forecast_call(args.batch)
    names = _op_names(fn.lower(*inputs).compile().as_text())
    jax.block_until_ready(fn(*inputs))
    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(args.calls):
                t0 = time.perf_counter()
                jax.block_until_ready(fn(*inputs))
                walls.append(time.perf_counter() - t0)
        events = _events(tmp)
    after = load()

    n = args.calls
    by_op, by_kind = collections.Counter(), collections.Counter()
    for e in events:
        by_op[e["name"]] += e["dur"]
        by_kind[_kind(names.get(e["name"], "?"))] += e["dur"]
    total_ms = sum(by_op.values()) / 1e3 / n
    count = len(events) / n
    wall_ms = 1e3 * float(np.median(walls))
    lines = [
        f"# Profile on the CPU: {what}",
        "",
        *head,
        load_line(before, after, idle),
        f"- JAX {jax.__version__}; {n} profiled calls after a warm-up, figures per call",
        "",
        f"- wall time per call (median, under the profiler): {wall_ms:.1f} ms",
        f"- XLA operations executed per call: {count:,.0f} (a loop body once per "
        f"iteration), {1e3 * wall_ms / max(count, 1):.1f} us of wall time each on average",
        f"- the operations' summed time: {total_ms:.1f} ms (operations may overlap on the "
        "cores; a loop's time includes its body's)",
        "",
        "## Time by kind of source operation",
        "",
        "| source operation | ms per call | share of the summed time |",
        "|---|---:|---:|",
    ]
    for kind, us in by_kind.most_common():
        if us / 1e3 / n >= 0.05:
            lines.append(
                f"| `{kind}` | {us / 1e3 / n:.1f} | {100 * us / 1e3 / n / total_ms:.0f}% |"
            )
    lines += [
        "",
        f"## The {args.top} operations that took longest",
        "",
        "| XLA operation | ms per call | source (`op_name`) |",
        "|---|---:|---|",
    ]
    for op, us in by_op.most_common(args.top):
        source = names.get(op, "?").replace("|", "\\|")
        lines.append(f"| `{op}` | {us / 1e3 / n:.1f} | `{source[:120]}` |")
    out = output_path(args, name)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Compile time and memory of a config's train step with ``model.scan_layers`` off and on.

    python benchmarks/scan_compile.py [--config xlstm_7b] [--devices 8] \
        [--seq-lens 8192 64] [--batch 8] [--update-results [--force]]

Re-executes itself with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` and, for
scan off then on, traces (``lower``) and compiles the real train step (AdamW, the config's
dtypes, remat per block, FSDP over the N devices) on abstract inputs: nothing is allocated
or run. Reports the seconds of each phase, the compiled module's memory analysis per
device, and the machine's load average before and after each compilation (the machine may
be shared: the seconds are wall-clock). A short sequence (64) makes the activations
negligible, so the difference of the temporaries there is what stacking the blocks'
parameters (and their gradients) for the scan costs. Writes a markdown table (scratch
copy by default; ``--update-results`` for ``benchmarks/results/scan_compile.md``).
"""

from __future__ import annotations

import argparse
import sys
import time

from _protocol import add_force_arg, check_idle, fmt_load, load, load_line
from _results import add_output_args, output_path, provenance, rerun_with_devices


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def _compile(cfg, scan: bool, seq_len: int, batch: int, devices: int) -> dict:
    import dataclasses

    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from train.data.batch import Batch
    from train.loop.optimizer import decay_mask, make_optimizer, make_schedule
    from train.loop.step import make_train_step, state_shardings
    from xlstm_jax.layers.sharding import activate, make_mesh
    from xlstm_jax.registry import family_of

    model_cfg = dataclasses.replace(cfg.model, remat=True, scan_layers=scan)
    abstract = nnx.eval_shape(lambda: family_of(model_cfg).model(model_cfg, rngs=nnx.Rngs(0)))
    graphdef, param_state, rest = nnx.split(abstract, nnx.Param, ...)
    params = nnx.to_pure_dict(param_state)
    tx = make_optimizer(
        cfg.optimizer, make_schedule(cfg.optimizer, cfg.schedule, 1000), decay_mask(params)
    )
    state = {"params": params, "opt_state": jax.eval_shape(tx.init, params)}
    shape = (1, batch, seq_len + 1)
    tokens = Batch(jax.ShapeDtypeStruct(shape, jnp.int32), jax.ShapeDtypeStruct(shape, bool))
    mesh = make_mesh((1, devices, 1))
    row = {"scan": scan, "seq_len": seq_len, "load_before": fmt_load(load())}
    with activate(mesh):
        shard = state_shardings(tx, param_state, state["opt_state"], mesh)
        batch_sharding = NamedSharding(mesh, P(None, ("data", "fsdp")))
        step = jax.jit(
            make_train_step(graphdef, rest, tx),
            in_shardings=(shard, Batch(batch_sharding, batch_sharding)),
            out_shardings=(shard, NamedSharding(mesh, P())),
            donate_argnums=0,
        )
        t0 = time.perf_counter()
        lowered = step.lower(state, tokens)
        t1 = time.perf_counter()
        compiled = lowered.compile()
        t2 = time.perf_counter()
    mem = compiled.memory_analysis()
    row.update(
        lower_s=t1 - t0,
        compile_s=t2 - t1,
        args=mem.argument_size_in_bytes,
        out=mem.output_size_in_bytes,
        temp=mem.temp_size_in_bytes,
        hlo_chars=len(compiled.as_text()),
        load_after=fmt_load(load()),
        n_params=sum(x.size for x in jax.tree.leaves(params)),
    )
    print(
        f"seq_len {seq_len}, scan_layers={scan}: lower {row['lower_s']:.1f} s, "
        f"compile {row['compile_s']:.1f} s, "
        f"args {_gib(row['args'])} GiB, temp {_gib(row['temp'])} GiB "
        f"(load {row['load_before']} -> {row['load_after']})",
        flush=True,
    )
    return row


def measure(args, out, before, idle: bool) -> None:
    import jax

    from train.config import named

    cfg = named.load(args.config)
    head = provenance([a for a in sys.argv if a != "--child"])
    rows = [
        _compile(cfg, scan, seq_len, args.batch, args.devices)
        for seq_len in args.seq_lens
        for scan in (False, True)
    ]
    lines = [
        f"# Compile time of the {args.config} train step, model.scan_layers off and on",
        "",
        *head,
        load_line(before, load(), idle, "compile times"),
        f"- JAX {jax.__version__}, {args.devices} simulated CPU devices, mesh (data, fsdp, "
        f"tensor) = (1, {args.devices}, 1); {rows[0]['n_params'] / 1e6:.1f}M parameters, "
        f"{cfg.model.dtype} compute, {cfg.model.param_dtype} parameters, AdamW, remat per "
        f"block; global batch {args.batch} sequences of seq_len + 1 tokens",
        "- abstract: lowered and compiled on the CPU, never run; memory is the compiled "
        "module's analysis per device (CPU temporaries ignore remat: compare the two rows, "
        "not with a GPU).",
        "- seconds are wall-clock, one compile per row in one process, under the load shown "
        "(1 / 5 / 15 min load averages; about 1 is this script on one core).",
        "",
        "| seq_len | scan_layers | trace + lower s | compile s | arguments GiB | outputs GiB | "
        "temporaries GiB | optimized HLO (chars) | load before | load after |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seq_len']} | {str(r['scan']).lower()} | {r['lower_s']:.1f} | "
            f"{r['compile_s']:.1f} | "
            f"{_gib(r['args'])} | {_gib(r['out'])} | {_gib(r['temp'])} | {r['hlo_chars']:,} "
            f"| {r['load_before']} | {r['load_after']} |"
        )
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="xlstm_7b", help="a config name from configs/")
    p.add_argument("--devices", type=int, default=8, help="simulated CPU devices (FSDP)")
    p.add_argument("--seq-lens", type=int, nargs="+", default=[8192, 64])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    add_force_arg(p)
    add_output_args(p, "scan_compile.md")
    args = p.parse_args()
    before = load()
    # Before the child starts: a busy machine spawns none.
    idle = check_idle(args, before, "compile times")
    if not args.child:
        rerun_with_devices(args.devices)
    measure(args, output_path(args, "scan_compile.md"), before, idle)


if __name__ == "__main__":
    main()

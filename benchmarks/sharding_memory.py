"""Per-device memory of a config's train step on N simulated devices, per mesh.

    python benchmarks/sharding_memory.py [--seq-len 2048] [--batch 8] [--meshes 8,1,1 1,8,1 ...]
    python benchmarks/sharding_memory.py --config xlstm_7b --devices 64 --seq-len 8192 \
        --batch 64 --meshes 1,64,1 1,16,4

Re-executes itself with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` and, for
each (data, fsdp, tensor) mesh, lowers and compiles the real train step (AdamW, bf16
compute, fp32 parameters) on abstract inputs (nothing is allocated) and reads the
compiled module's memory analysis: the bytes one device holds for arguments (parameters,
optimizer state, batch), outputs and temporaries. Writes a markdown table (scratch copy
by default; ``--update-results`` for ``benchmarks/results/sharding_memory.md``, or
``sharding_memory_CONFIG_N.md`` for another config or device count).
"""

from __future__ import annotations

import argparse
import sys
import time

from _protocol import add_force_arg, check_idle, load, load_line
from _results import add_output_args, output_path, provenance, rerun_with_devices


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def measure(
    meshes, seq_len: int, batch: int, out: str, config: str, devices: int, before, idle: bool
) -> None:
    import dataclasses

    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from train.config import named
    from train.data.batch import Batch
    from train.loop.optimizer import decay_mask, make_optimizer, make_schedule
    from train.loop.step import make_train_step, state_shardings
    from xlstm_jax.layers.sharding import activate, make_mesh
    from xlstm_jax.registry import family_of

    cfg = named.load(config)
    model_cfg = dataclasses.replace(cfg.model, remat=True)
    abstract = nnx.eval_shape(lambda: family_of(model_cfg).model(model_cfg, rngs=nnx.Rngs(0)))
    graphdef, param_state, rest = nnx.split(abstract, nnx.Param, ...)
    params = nnx.to_pure_dict(param_state)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    tx = make_optimizer(
        cfg.optimizer, make_schedule(cfg.optimizer, cfg.schedule, 1000), decay_mask(params)
    )
    state = {"params": params, "opt_state": jax.eval_shape(tx.init, params)}
    step = make_train_step(graphdef, rest, tx)
    shape = (1, batch, seq_len + 1)
    tokens = Batch(jax.ShapeDtypeStruct(shape, jnp.int32), jax.ShapeDtypeStruct(shape, bool))
    rows = []
    for sizes in meshes:
        mesh = make_mesh(sizes)
        t0 = time.perf_counter()
        with activate(mesh):
            shard = state_shardings(tx, param_state, state["opt_state"], mesh)
            batch_sharding = NamedSharding(mesh, P(None, ("data", "fsdp")))
            compiled = (
                jax.jit(
                    step,
                    in_shardings=(shard, Batch(batch_sharding, batch_sharding)),
                    out_shardings=(shard, NamedSharding(mesh, P())),
                    donate_argnums=0,
                )
                .lower(state, tokens)
                .compile()
            )
        mem = compiled.memory_analysis()
        secs = time.perf_counter() - t0
        args_b, out_b, tmp_b = (
            mem.argument_size_in_bytes,
            mem.output_size_in_bytes,
            mem.temp_size_in_bytes,
        )
        alias = getattr(mem, "alias_size_in_bytes", 0)
        total = args_b + out_b + tmp_b - alias
        rows.append((sizes, args_b, out_b, tmp_b, alias, total, secs))
        print(
            f"mesh {sizes}: args {_gib(args_b)} GiB, out {_gib(out_b)} GiB, temp "
            f"{_gib(tmp_b)} GiB, aliased {_gib(alias)} GiB ({secs:.0f} s to compile)",
            flush=True,
        )
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    lines = [
        f"# Per-device memory of the {config} train step (compiled memory analysis)",
        "",
        *provenance([a for a in sys.argv if a != "--child"]),
        load_line(before, load(), idle, "compile times"),
        f"- JAX {jax.__version__}, {devices} simulated CPU "
        f"devices (`--xla_force_host_platform_device_count={devices}`)",
        f"- model: {config} ({n_params / 1e6:.1f}M parameters), fp32 parameters + AdamW "
        f"state = {_gib(state_bytes)} GiB in total; bf16 compute; remat per block",
        f"- step: global batch {batch} x {seq_len + 1} tokens (one micro-batch)",
        "- CPU compilation: the absolute temporaries differ from a GPU build; the arguments "
        "column (parameters + optimizer state + batch per device) is layout-exact.",
        "",
        "| mesh (data, fsdp, tensor) | arguments GiB | outputs GiB | temporaries GiB | "
        "donated (aliased) GiB | total GiB | compile s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for sizes, a, o, t, al, tot, secs in rows:
        lines.append(
            f"| {sizes} | {_gib(a)} | {_gib(o)} | {_gib(t)} | {_gib(al)} | {_gib(tot)} "
            f"| {secs:.0f} |"
        )
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="xlstm_350m", help="a config name from configs/")
    p.add_argument("--devices", type=int, default=8, help="simulated CPU devices")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--meshes", nargs="+", default=["8,1,1", "1,8,1", "2,2,2", "1,4,2", "2,4,1"])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    add_force_arg(p)
    args, _ = p.parse_known_args()
    name = (
        "sharding_memory.md"
        if (args.config, args.devices) == ("xlstm_350m", 8)
        else f"sharding_memory_{args.config}_{args.devices}.md"
    )
    add_output_args(p, name)
    args = p.parse_args()
    before = load()
    # Before the child starts: a busy machine spawns none.
    idle = check_idle(args, before, "compile times")
    meshes = [tuple(int(x) for x in m.split(",")) for m in args.meshes]
    if not args.child:
        rerun_with_devices(args.devices)
    out = output_path(args, name)
    measure(meshes, args.seq_len, args.batch, out, args.config, args.devices, before, idle)


if __name__ == "__main__":
    main()

"""Per-device memory of the sharded initialisation of the train state, against the state.

    python benchmarks/init_memory.py [--configs xlstm_large_1300m xlstm_7b] [--devices 8 64]

For each device count, re-executes itself with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` and, for each config, lowers and
compiles ``train.loop.setup.init_state``'s jitted function (the one ``build_state`` runs:
parameters and AdamW state created straight into their FSDP shards, mesh (1, N, 1)) on
abstract inputs, so nothing is allocated. It reads the compiled module's memory analysis
(the bytes one device holds for outputs and temporaries; there are no arguments) and sets
it against one device's shards of the state. The goal is at most 1.1x. Writes a markdown
table (scratch copy by default; ``--update-results`` for
``benchmarks/results/init_memory.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from _protocol import add_force_arg, check_idle, load, load_line
from _results import add_output_args, output_path, provenance

NAME = "init_memory.md"


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def measure(config: str) -> dict:
    """One config on this process's devices: the init's memory per device and the state's."""
    import jax
    import numpy as np
    from flax import nnx

    from train.config import named
    from train.loop.optimizer import decay_mask, make_optimizer, make_schedule
    from train.loop.setup import init_state
    from xlstm_jax.layers.sharding import activate, make_mesh
    from xlstm_jax.registry import family_of

    cfg = named.load(config)
    n = jax.device_count()
    mesh = make_mesh((1, n, 1))

    def make_model():
        return family_of(cfg.model).model(cfg.model, rngs=nnx.Rngs(cfg.train.seed))

    param_state = nnx.state(nnx.eval_shape(make_model), nnx.Param)
    params = nnx.to_pure_dict(param_state)
    schedule = make_schedule(cfg.optimizer, cfg.schedule, cfg.train.steps)
    tx = make_optimizer(cfg.optimizer, schedule, decay_mask(params))
    t0 = time.perf_counter()
    with activate(mesh, cfg.mesh.rules):
        init, shardings, abstract = init_state(make_model, param_state, tx, mesh, cfg.mesh.rules)
        compiled = init.lower().compile()
    secs = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    shard_bytes = sum(
        int(np.prod(sh.shard_shape(x.shape))) * x.dtype.itemsize
        for x, sh in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings), strict=True)
    )
    total_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract))
    return {
        "config": config,
        "devices": n,
        "params": sum(x.size for x in jax.tree.leaves(params)),
        "state": total_bytes,
        "shard": shard_bytes,
        "args": mem.argument_size_in_bytes,
        "out": mem.output_size_in_bytes,
        "temp": mem.temp_size_in_bytes,
        "compile_s": secs,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["xlstm_large_1300m", "xlstm_7b"])
    p.add_argument("--devices", nargs="+", type=int, default=[8, 64])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    add_force_arg(p)
    add_output_args(p, NAME)
    args = p.parse_args()
    if args.child:
        for config in args.configs:
            print(json.dumps(measure(config)), flush=True)
        return
    head = provenance()
    before = load()
    idle = check_idle(args, before, "compile times")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rows = []
    for n in args.devices:
        env = dict(
            os.environ,
            XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
            JAX_PLATFORMS="cpu",
            PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""),
        )
        cmd = [sys.executable, __file__, "--child", "--configs", *args.configs]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            r = json.loads(line)
            rows.append(r)
            print(r, flush=True)
    after = load()
    lines = [
        "# Per-device memory of the sharded initialisation of the train state",
        "",
        *head,
        load_line(before, after, idle, "compile times"),
        "- the function `train.loop.setup.init_state` jits (what `build_state` runs): fp32 "
        "parameters + AdamW moments created in their shards, mesh (data, fsdp, tensor) = "
        "(1, N, 1), compiled for N simulated CPU devices; `compiled.memory_analysis()` per "
        "device (outputs + temporaries; the function has no arguments) against one device's "
        "shards of the state. Goal: at most 1.1x.",
        "- compiled with XLA:CPU's memory-optimised scheduler (`train.loop.setup.memory_first`,"
        " what `init_state` asks for on CPU meshes). With XLA:CPU's default scheduler, which "
        "computed every parameter's random-number counters before consuming them, the same "
        "function needed 1.33x (xlstm_7b) to 1.36x (xlstm_large_1300m): this table at commit "
        "105fa5b. A GPU's figure is not measured here (no GPU was available).",
        "",
        "| config | parameters | devices | state GiB (all) | state GiB / device | "
        "outputs GiB | temporaries GiB | init / state | compile s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        used = r["args"] + r["out"] + r["temp"]
        lines.append(
            f"| {r['config']} | {r['params'] / 1e9:.2f}B | {r['devices']} | {_gib(r['state'])} "
            f"| {_gib(r['shard'])} | {_gib(r['out'])} | {_gib(r['temp'])} "
            f"| {used / r['shard']:.3f} | {r['compile_s']:.0f} |"
        )
    path = output_path(args, NAME)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

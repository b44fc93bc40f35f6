"""The smallest FSDP mesh on which each shipped language-model recipe starts, on 40 GB
and 80 GB GPUs: computed from ``train.loop.memory.estimate_memory`` (ideal sharding),
not compiled and not run on GPUs.

    python benchmarks/recipe_meshes.py [--configs xlstm_125m ...] [--update-results]

For each recipe, as shipped (its micro-batch, sequence length, dtypes and remat), the mesh
(data, fsdp, tensor) = (1, N, 1) for N = 1, 2, 4, ... up to the micro-batch (the batch
axis is split over data x fsdp, so N must divide it): the smallest N whose estimate per
device fits, once as estimated (a lower bound: ``check_estimate_fits`` refuses below it)
and once with the activations doubled (compiled CPU steps need about twice the
estimate's activations). Nothing is allocated or compiled; the model is only traced for
its parameter count. Writes a markdown table (scratch copy by default;
``--update-results`` for ``benchmarks/results/recipe_meshes.md``).
"""

from __future__ import annotations

import argparse

from _results import add_output_args, output_path, provenance

NAME = "recipe_meshes.md"
RECIPES = [
    "xlstm_125m",
    "xlstm_350m",
    "xlstm_760m",
    "xlstm_1300m",
    "xlstm_large_165m",
    "xlstm_large_1300m",
    "xlstm_large_2700m",
    "xlstm_7b",
]
GPUS = {"40 GB": 40 * 10**9, "80 GB": 80 * 10**9}


def smallest(cfg, n: int, capacity: int, act_factor: int) -> tuple[int | None, int]:
    """The smallest fsdp size (power of two dividing the micro-batch) that fits, and the
    bytes per device there (or at the largest size tried)."""
    from train.loop.memory import estimate_memory

    size, need = 1, 0
    while cfg.train.micro % size == 0:
        mem = estimate_memory(cfg, n, (1, size, 1))
        need = mem["total"] + (act_factor - 1) * mem["activations"]
        if need <= capacity:
            return size, need
        size *= 2
    return None, need


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=RECIPES)
    add_output_args(p, NAME)
    args = p.parse_args()
    head = provenance()
    from train.config import named
    from train.loop.setup import count_params

    rows = []
    for name in args.configs:
        cfg = named.load(name)
        n = count_params(cfg)
        cells = []
        for capacity in GPUS.values():
            for factor in (1, 2):
                size, need = smallest(cfg, n, capacity, factor)
                cells.append(
                    f"{size} ({need / 1e9:.1f} GB)"
                    if size
                    else f"> {cfg.train.micro} (micro-batch; {need / 1e9:.1f} GB at it)"
                )
        tc = cfg.train
        rows.append(
            f"| {name} | {n / 1e9:.2f}B | {tc.micro} x {cfg.data.seq_len} | "
            f"{cfg.model.param_dtype}/{cfg.model.dtype} | {cfg.model.remat} | "
            + " | ".join(cells)
            + " |"
        )
        print(rows[-1], flush=True)
    lines = [
        "# Smallest FSDP mesh per recipe on 40 GB and 80 GB GPUs (computed, not run on GPUs)",
        "",
        *head,
        "- computed from `train.loop.memory.estimate_memory` (ideal sharding: parameters, "
        "gradients, AdamW state and updates over fsdp, activations of the micro-batch over "
        "fsdp), mesh (data, fsdp, tensor) = (1, N, 1), N a power of two dividing the "
        "recipe's micro-batch; GB = 10^9 bytes, the whole card (no runtime reserve). "
        "Not compiled, not run on GPUs: 'estimate' is the lower bound below which a run is "
        "refused; 'x2 act.' doubles the activations, as compiled CPU steps need.",
        "",
        "| recipe | parameters | micro-batch x seq | params/compute | remat | 40 GB: N "
        "(estimate) | 40 GB: N (x2 act.) | 80 GB: N (estimate) | 80 GB: N (x2 act.) |",
        "|---|---:|---|---|---|---:|---:|---:|---:|",
        *rows,
    ]
    path = output_path(args, NAME)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

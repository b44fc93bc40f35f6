"""Loading the xLSTM-7B from a local folder: time and peak memory against the weights' size.

    python benchmarks/load_pretrained.py [--folder /tmp/xlstm_7b_random_bf16]
        [--update-results [--force]]

Writes a random checkpoint of the 7B's shapes once, in Hugging Face's layout and bfloat16
(``config.json``, 5 GiB shards and their index), generating it tensor by tensor with NumPy
so the whole model is never in memory, and reuses it on later runs. Then loads it with
``load_pretrained(folder, dtype="bfloat16", param_dtype="bfloat16")`` in a fresh process,
once from a cold page cache (the files' cached pages dropped first with
``posix_fadvise(DONTNEED)``) and once warm, and records the load time and that process's
peak resident memory (its own ``ru_maxrss``, reported when loaded) against the
weights' bytes. The goal: peak <= 1.2x the weights.

The tensor names and shapes are written out here from transformers' ``xLSTMForCausalLM``
(single layout), not taken from our converter, so the load also checks the converter.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import ml_dtypes
import numpy as np
from _protocol import add_force_arg, check_idle, load, load_line
from _results import add_output_args, output_path, provenance

from xlstm_jax.formats.safetensors import SafetensorsWriter

# xLSTM-7B (NX-AI/xLSTM-7b).
SEVEN_B = dict(
    embedding_dim=4096,
    num_heads=8,
    num_blocks=32,
    vocab_size=50304,
    qk_dim_factor=0.5,
    v_dim_factor=1.0,
    ffn_proj_factor=2.667,
    ffn_round_up_to_multiple_of=64,
)
SHARD_BYTES = 5 * 2**30
GOAL = 1.2


def hf_layout(c: dict):
    """(name, shape) of every tensor of transformers' ``xLSTMForCausalLM`` state dict."""
    E, NH, V = c["embedding_dim"], c["num_heads"], c["vocab_size"]
    qk, v = int(E * c["qk_dim_factor"]), int(E * c["v_dim_factor"])
    m = c["ffn_round_up_to_multiple_of"]
    F = math.ceil(E * c["ffn_proj_factor"] / m) * m
    yield "backbone.embeddings.weight", (V, E)
    for b in range(c["num_blocks"]):
        p = f"backbone.blocks.{b}."
        yield p + "norm_mlstm.weight", (E,)
        for name, rows in (("q", qk), ("k", qk), ("v", v), ("ogate_preact", v)):
            yield p + f"mlstm_layer.{name}.weight", (rows, E)
        for gate in ("igate_preact", "fgate_preact"):
            yield p + f"mlstm_layer.{gate}.weight", (NH, E)
            yield p + f"mlstm_layer.{gate}.bias", (NH,)
        yield p + "mlstm_layer.multihead_norm.weight", (v,)
        yield p + "mlstm_layer.out_proj.weight", (E, v)
        yield p + "norm_ffn.weight", (E,)
        yield p + "ffn.proj_up_gate.weight", (F, E)
        yield p + "ffn.proj_up.weight", (F, E)
        yield p + "ffn.proj_down.weight", (E, F)
    yield "backbone.out_norm.weight", (E,)
    yield "lm_head.weight", (V, E)


def hf_config(c: dict) -> dict:
    return {
        "architectures": ["xLSTMForCausalLM"],
        "model_type": "xlstm",
        "hidden_size": c["embedding_dim"],
        "num_hidden_layers": c["num_blocks"],
        **{k: v for k, v in c.items() if k not in ("embedding_dim", "num_blocks")},
        "dtype": "bfloat16",
    }


def write_checkpoint(folder: Path, c: dict) -> None:
    """The random bfloat16 checkpoint, one tensor in memory at a time; written to a hidden
    folder and renamed, so ``folder`` exists only when complete."""
    tmp = folder.with_name(f".{folder.name}.partial")
    tmp.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    layout = list(hf_layout(c))
    weight_map, shard, writer = {}, 0, None
    t0 = time.perf_counter()
    for n, (name, shape) in enumerate(layout):
        value = (0.02 * rng.standard_normal(shape, np.float32)).astype(ml_dtypes.bfloat16)
        if writer is None or writer.nbytes + value.nbytes > SHARD_BYTES:
            if writer is not None:
                writer.close()
            shard += 1
            writer = SafetensorsWriter(
                tmp / f"shard-{shard}", metadata={"format": "pt"}, header_reserve=2**16
            )
        writer.add(name, value)
        weight_map[name] = shard
        print(f"\rwriting {n + 1}/{len(layout)} tensors", end="", flush=True)
    writer.close()
    names = {k: f"model-{k:05d}-of-{shard:05d}.safetensors" for k in range(1, shard + 1)}
    for k, name in names.items():
        os.replace(tmp / f"shard-{k}", tmp / name)
    total = sum((tmp / name).stat().st_size for name in names.values())
    index = {
        "metadata": {"total_size": total},
        "weight_map": {t: names[k] for t, k in weight_map.items()},
    }
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (tmp / "config.json").write_text(json.dumps(hf_config(c), indent=2))
    os.replace(tmp, folder)
    print(f"\nwrote {folder} in {time.perf_counter() - t0:.0f} s")


def weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("model-*.safetensors"))


def tensor_bytes(folder: Path) -> int:
    """The weights' bytes: every tensor's size, from the headers."""
    total = 0
    for path in weight_files(folder):
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        total += sum(e["data_offsets"][1] - e["data_offsets"][0] for e in header.values())
    return total


def drop_page_cache(folder: Path) -> None:
    """Asks the kernel to drop the files' cached pages (no privileges needed)."""
    for path in weight_files(folder):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def current_rss() -> int:
    """This process's resident bytes now (``ru_maxrss`` cannot give a baseline: Linux
    carries the parent's high-water mark across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(folder: str) -> None:
    """Runs in the fresh process: load, wait for every array, report."""
    import jax
    from flax import nnx

    from xlstm_jax.models.xlstm_large.checkpoint import load_pretrained

    base = current_rss()
    t0 = time.perf_counter()
    model = load_pretrained(folder, dtype="bfloat16", param_dtype="bfloat16")
    jax.block_until_ready(nnx.state(model, nnx.Param))
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    result = {
        "seconds": seconds,
        "baseline_rss": base,
        "peak_rss": peak,
        "param_bytes": sum(x.nbytes for x in leaves),
        "dtypes": sorted({str(x.dtype) for x in leaves}),
    }
    print(json.dumps(result))


def measure(folder: Path) -> dict:
    """One load in a fresh process: its time, baseline and peak RSS (bytes)."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(folder)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--folder",
        default="/tmp/xlstm_7b_random_bf16",
        help="where the random checkpoint is written once and reused (~14 GB)",
    )
    add_force_arg(p)
    add_output_args(p, "load_pretrained_cpu.md")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child)
        return
    import jax

    head = provenance()
    before = load()
    # Before writing the checkpoint: a busy machine is refused.
    idle = check_idle(args, before, "load times")
    folder = Path(args.folder)
    if not folder.exists():
        write_checkpoint(folder, SEVEN_B)
    elif json.loads((folder / "config.json").read_text()) != hf_config(SEVEN_B):
        raise SystemExit(f"{folder} holds another checkpoint; remove it or pass --folder.")
    weights = tensor_bytes(folder)
    rows = []
    for cache in ("cold", "warm"):
        if cache == "cold":
            drop_page_cache(folder)
        print(f"loading ({cache} page cache) ...", flush=True)
        r = measure(folder)
        assert r["dtypes"] == ["bfloat16"] and r["param_bytes"] == weights, r
        ratio = r["peak_rss"] / weights
        rows.append(
            f"| {cache} | {r['seconds']:.1f} | {weights / 2**30:.2f} | "
            f"{r['peak_rss'] / 2**30:.2f} | {r['baseline_rss'] / 2**30:.2f} | {ratio:.3f}x |"
        )
        print(rows[-1], flush=True)
    after = load()
    shapes = ", ".join(f"{k} {v}" for k, v in SEVEN_B.items())
    lines = [
        "# Loading the xLSTM-7B checkpoint (CPU)",
        "",
        *head,
        load_line(before, after, idle, "load times"),
        f"- JAX {jax.__version__} ({jax.default_backend()}), NumPy {np.__version__}",
        f"- checkpoint: random weights of the 7B's shapes ({shapes}), bfloat16, Hugging Face "
        f"layout in {len(weight_files(folder))} shards of <= 5 GiB",
        '- `load_pretrained(folder, dtype="bfloat16", param_dtype="bfloat16")` in a fresh '
        "process; peak RSS = that process's `ru_maxrss`, which includes the interpreter and "
        "imports (the baseline: its RSS just before the load); the goal is peak <= "
        f"{GOAL}x the weights",
        "- cold: the files' cached pages dropped first (`posix_fadvise(DONTNEED)`); warm: "
        "straight after",
        "",
        "| page cache | load time (s) | weights (GiB) | peak RSS (GiB) | baseline RSS (GiB) "
        "| peak / weights |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
    ]
    out = output_path(args, "load_pretrained_cpu.md")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

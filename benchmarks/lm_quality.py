"""The xLSTM paper's language-modelling comparison in miniature, on this machine.

xLSTM[1:0], xLSTM[7:1], the xLSTM-7B block and the Llama baseline (``configs/_quality.py``)
at matched size, trained on the same tokens of the built-in corpus (this Python's standard
library), as bytes and as a 4096-token BPE learnt on the training documents (both ship
offline). Each model gets its own best learning rate from a small sweep (seed 0, judged on
the validation loss), then further seeds at that rate. Reported: validation loss, tokens/s,
FLOPs per token, and length extrapolation as in the paper (trained at context S, evaluated
on windows of S, 2S, 4S and 8S tokens; loss per position).

    python benchmarks/lm_quality.py --quick            # under 10 minutes: one size, one LR
    python benchmarks/lm_quality.py [--corpora bytes,bpe] [--sizes small] [--update-results]

Each run is a fresh process (``--one``) training with ``train.main``'s loop into
``--root/CORPUS_SIZE_ARCH_lrLR_seedN`` and writing ``result.json`` there; a run whose
result exists is read back, not redone (``--fresh`` redoes it), so an interrupted
benchmark resumes. Wall times and tokens/s are the runs' own; other work on the machine
slows them (the table records the load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _protocol import add_force_arg, check_idle, load, load_line
from _results import ROOT, add_output_args, machine, output_path, provenance

sys.path.insert(0, str(ROOT))

from configs._quality import ARCHS, LABELS, quality_config  # noqa: E402

QUICK = dict(corpora="bytes", sizes="small", lrs="3e-3", seeds="0", steps=60, batch=8, seq=128)
# The sweep runs in this order (the table sorts it): the likeliest best rate first.
FULL = dict(
    corpora="bytes,bpe",
    sizes="small",
    lrs="3e-3,1e-2,1e-3",
    seeds="0,1",
    steps=250,
    batch=16,
    seq=256,
)
EXTRAPOLATE = (1, 2, 4, 8)  # evaluation lengths, in training contexts
EVAL_WINDOWS = 16  # validation windows of the longest length (8S + 1 tokens)


def _slug(corpus, size, arch, lr, seed) -> str:
    return f"{corpus}_{size}_{arch}_lr{lr:g}_seed{seed}"


def run_one(spec: dict) -> dict:
    """Trains one model (``spec``: corpus, size, arch, lr, seed, steps, batch, seq, root)
    and evaluates it; returns what ``result.json`` holds."""
    import jax
    import numpy as np
    from _lm_eval import (
        cut_windows,
        flops_per_token,
        position_loss,
        prepare_corpus,
        val_windows,
        vocab_size,
    )

    from train.config import DataConfig
    from train.config.overrides import apply_overrides
    from train.data.text.corpus import load_corpus
    from train.data.text.tokenizer import load_tokenizer
    from train.loop.driver import train
    from train.loop.run import NonFiniteLossError
    from train.runs.load import load_run

    root = Path(spec["root"])
    path, tokenizer = prepare_corpus(spec["corpus"], root)
    data = DataConfig(path=path, tokenizer=tokenizer, seq_len=spec["seq"])
    cfg = quality_config(
        spec["arch"],
        spec["size"],
        data,
        vocab_size(path),
        spec["lr"],
        spec["steps"],
        spec["batch"],
        seed=spec["seed"],
    )
    quiet = ["logging.progress_bar=false", "logging.tensorboard=false", "logging.plot=false"]
    cfg = apply_overrides(cfg, quiet)
    workdir = root / _slug(*(spec[k] for k in ("corpus", "size", "arch", "lr", "seed")))
    t0 = time.time()
    try:
        summary = train(cfg, workdir)
    except NonFiniteLossError:  # a rate too high for the model: the sweep says "diverged"
        keep = ("corpus", "size", "arch", "lr", "seed", "steps", "batch", "seq")
        return {**{k: spec[k] for k in keep}, "finite": False, "wall_s": time.time() - t0}
    wall = time.time() - t0
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    model = load_run(workdir).model
    val = load_corpus(data, load_tokenizer(tokenizer)).val
    seq = spec["seq"]
    # The same targets at every length: each longest window cut into pieces of k * S
    # (+ 1) tokens, so a length's loss differs from another's only by the context it reads.
    windows = val_windows(val, max(EXTRAPOLATE) * seq, EVAL_WINDOWS)
    extrapolation = {
        str(k): position_loss(model, cut_windows(windows, k * seq)).tolist() for k in EXTRAPOLATE
    }
    steady = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][1:]  # after compiling
    return {
        **{k: v for k, v in spec.items() if k != "root"},
        "num_params": summary["num_params"],
        "val_loss": summary.get("val_loss"),
        "curve": [(r["step"], r["val_loss"]) for r in records if "val_loss" in r],
        "tokens_per_s": statistics.median(steady) if steady else None,
        "flops_per_token": flops_per_token(model, seq),
        "wall_s": wall,
        "extrapolation": extrapolation,
        "jax": jax.__version__,
        "finite": bool(np.isfinite(summary.get("val_loss") or np.nan)),
    }


def _result(spec: dict, fresh: bool, report_only: bool = False) -> dict | None:
    """One run's result: read back, or trained now in a fresh process (None: not run yet,
    and ``report_only``)."""
    name = _slug(*(spec[k] for k in ("corpus", "size", "arch", "lr", "seed")))
    path = Path(spec["root"]) / name / "result.json"
    if path.exists() and not fresh:
        res = json.loads(path.read_text())
        budget = ("steps", "batch", "seq")
        if any(res[k] != spec[k] for k in budget):
            raise SystemExit(
                f"error: {path} holds a run of another budget "
                f"({', '.join(f'{k} {res[k]}' for k in budget)}); use another --root, or "
                "--fresh to redo it with this one."
            )
        return res
    if report_only:
        return None
    if fresh and path.parent.exists():
        import shutil

        shutil.rmtree(path.parent)
    print(f"run {name}", flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, __file__, "--one", json.dumps(spec)]
    before = load()[0]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    # The load each run met (the report gives their range): a benchmark read back from
    # earlier runs would otherwise record only the load of writing the report.
    res = {**json.loads(done.stdout.strip().splitlines()[-1]), "load_start": before}
    res["load_end"] = load()[0]
    path.write_text(json.dumps(res) + "\n")
    if res["finite"]:
        print(f"  val_loss {res['val_loss']:.4f}, {res['tokens_per_s']:.0f} tok/s", flush=True)
    else:
        print(f"  diverged after {res['wall_s']:.0f} s", flush=True)
    return res


def run_all(args, settings: dict) -> dict[tuple[str, str], dict]:
    """Every (corpus, size): the LR sweep at seed 0, then the other seeds at each model's
    best rate. Returns {(corpus, size): {"sweep": {arch: [result]}, "best": {arch: [result
    per seed]}}}."""
    out = {}
    seeds = [int(s) for s in settings["seeds"].split(",")]
    lrs = [float(x) for x in settings["lrs"].split(",")]
    archs = args.archs.split(",")
    for corpus in settings["corpora"].split(","):
        for size in settings["sizes"].split(","):
            base = dict(corpus=corpus, size=size, root=str(Path(args.root).absolute()))
            base.update(steps=settings["steps"], batch=settings["batch"], seq=settings["seq"])
            # Rate-major: an interrupted sweep leaves every model with the same rates done.
            sweep = {arch: [] for arch in archs}
            for lr in lrs:
                for arch in archs:
                    spec = {**base, "arch": arch, "lr": lr, "seed": seeds[0]}
                    sweep[arch].append(_result(spec, args.fresh, args.report_only))
            sweep = {a: [r for r in runs if r] for a, runs in sweep.items() if any(runs)}
            best = {}
            for arch, runs in sweep.items():
                finite = [r for r in runs if r["finite"]]
                if not finite:  # every rate diverged: the sweep table says so
                    continue
                top = min(finite, key=lambda r: r["val_loss"])
                more = [
                    _result(
                        {**base, "arch": arch, "lr": top["lr"], "seed": s},
                        args.fresh,
                        args.report_only,
                    )
                    for s in seeds[1:]
                ]
                best[arch] = [top] + [r for r in more if r]
            if sweep:
                out[(corpus, size)] = {"sweep": sweep, "best": best}
    return out


def main() -> None:
    """Runs the comparison and writes the tables and plots."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one size, one LR, bytes: < 10 min")
    p.add_argument("--corpora", help="comma-separated: bytes, bpe")
    p.add_argument("--sizes", help="comma-separated: small, medium (configs/_quality.py)")
    p.add_argument("--archs", default=",".join(ARCHS), help="comma-separated")
    p.add_argument("--lrs", help="the learning-rate sweep, comma-separated")
    p.add_argument("--seeds", help="comma-separated; the first one runs the sweep")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--seq", type=int, help="training context S")
    p.add_argument("--root", default="runs/lm_quality", help="the runs go here")
    p.add_argument("--fresh", action="store_true", help="redo runs that have results")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: the report of the runs that have results (a partial sweep says so)",
    )
    p.add_argument("--one", help=argparse.SUPPRESS)
    add_force_arg(p)
    add_output_args(p, "lm_quality_cpu.md (lm_quality_quick_cpu.md with --quick)")
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    settings = dict(QUICK if args.quick else FULL)
    for k in settings:
        if getattr(args, k) is not None:
            settings[k] = getattr(args, k)
    if args.quick and args.root == "runs/lm_quality":
        args.root = "runs/lm_quality_quick"
    from _lm_report import write_report

    head = provenance()
    before = load()
    if not args.report_only:
        idle = check_idle(args, before, "wall times and tokens/s")
    results = run_all(args, settings)
    name = "lm_quality_quick_cpu.md" if args.quick else "lm_quality_cpu.md"
    out = output_path(args, name)
    if args.report_only:  # the machine's state now says nothing of the runs'
        lines = [
            f"- machine: {machine()}",
            *head[1:],
            "- written from the results of earlier runs (--report-only)",
        ]
    else:
        lines = [*head, load_line(before, load(), idle, "wall times and tokens/s")]
    text = write_report(out, results, settings, lines, LABELS)
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

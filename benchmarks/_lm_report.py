"""The tables and plots of ``lm_quality.py``: results in, markdown and PNG files out."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np


def _mean_spread(values: list[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    lo, hi = min(values), max(values)
    return f"{statistics.mean(values):.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def _sweep_table(sweep: dict, labels: dict, planned: list[float]) -> list[str]:
    lrs = sorted({r["lr"] for runs in sweep.values() for r in runs} | set(planned))
    head = ["model", "params", *[f"LR {lr:g}" for lr in lrs]]
    rows = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(lrs)]
    for arch, runs in sweep.items():
        by_lr = {r["lr"]: r for r in runs}
        finite = [r["val_loss"] for r in runs if r["finite"]]
        best = min(finite) if finite else None
        params = next((f"{r['num_params'] / 1e6:.2f}M" for r in runs if r["finite"]), "-")
        cells = []
        for lr in lrs:
            r = by_lr.get(lr)
            if r is None:
                cells.append("not run")
            elif not r["finite"]:
                cells.append("diverged")
            else:
                text = f"{r['val_loss']:.4f}"
                cells.append(f"**{text}**" if r["val_loss"] == best else text)
        rows.append(f"| {labels[arch]} | {params} | " + " | ".join(cells) + " |")
    return rows


def _result_table(best: dict, labels: dict, settings: dict) -> list[str]:
    tokens = settings["steps"] * settings["batch"] * settings["seq"]
    head = (
        "| model | params | LR | seeds | val loss (mean, lowest-highest) | tokens/s "
        "| FLOPs/token | training FLOPs | wall time per run |"
    )
    rows = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for arch, runs in best.items():
        r0 = runs[0]
        tps = statistics.median(r["tokens_per_s"] for r in runs)
        wall = statistics.median(r["wall_s"] for r in runs)
        rows.append(
            f"| {labels[arch]} | {r0['num_params'] / 1e6:.2f}M | {r0['lr']:g} | {len(runs)} | "
            f"**{_mean_spread([r['val_loss'] for r in runs])}** | {tps:,.0f} | "
            f"{r0['flops_per_token'] / 1e6:.1f}M | {tokens * r0['flops_per_token']:.2e} | "
            f"{wall:.0f} s |"
        )
    return rows


def _extrapolation_table(best: dict, labels: dict, settings: dict) -> list[str]:
    seq = settings["seq"]
    lengths = sorted(int(k) for k in next(iter(best.values()))[0]["extrapolation"])
    head = [
        "model",
        *[f"{k}S = {k * seq}" for k in lengths],
        f"positions {seq}-{lengths[-1] * seq} of the longest",
    ]
    rows = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for arch, runs in best.items():
        cells = []
        for k in lengths:
            cells.append(f"{np.mean([np.mean(r['extrapolation'][str(k)]) for r in runs]):.4f}")
        longest = np.mean([r["extrapolation"][str(lengths[-1])] for r in runs], axis=0)
        cells.append(f"{np.mean(longest[seq:]):.4f}")
        rows.append(f"| {labels[arch]} | " + " | ".join(cells) + " |")
    return rows


def _plot(path: Path, best: dict, labels: dict, settings: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_step = settings["batch"] * settings["seq"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for arch, runs in best.items():
        r = runs[0]
        steps = np.array([s for s, _ in r["curve"]], float)
        loss = np.array([v for _, v in r["curve"]])
        axes[0].plot(steps * per_step, loss, marker="o", label=labels[arch])
        axes[1].plot(steps * per_step * r["flops_per_token"], loss, marker="o", label=labels[arch])
        ks = sorted(int(x) for x in r["extrapolation"])
        at = [np.mean([np.mean(q["extrapolation"][str(k)]) for q in runs]) for k in ks]
        axes[2].plot([k * settings["seq"] for k in ks], at, marker="o", label=labels[arch])
    axes[0].set(xlabel="training tokens", ylabel="validation loss (nats)", title="loss vs tokens")
    axes[1].set(xlabel="training FLOPs", xscale="log", title="loss vs FLOPs")
    axes[2].set(
        xlabel="evaluation context (tokens)",
        xscale="log",
        ylabel="loss of the same tokens (nats)",
        title=f"length extrapolation (trained at {settings['seq']})",
    )
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _load_range(results: dict) -> str:
    # Every run once: the best-rate lists repeat their seed-0 run from the sweep.
    runs = [r for res in results.values() for rs in res["sweep"].values() for r in rs]
    runs += [r for res in results.values() for rs in res["best"].values() for r in rs[1:]]
    loads = [r["load_start"] for r in runs if "load_start" in r]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "not recorded"


def write_report(out: Path, results: dict, settings: dict, lines: list[str], labels: dict) -> str:
    """Writes ``out`` (markdown) and one PNG per (corpus, size) beside it; returns the text."""
    tokens = settings["steps"] * settings["batch"] * settings["seq"]
    parts = [
        "# Language-model quality in miniature (CPU)",
        "",
        *lines,
        f"- budget per run: {settings['steps']} steps x {settings['batch']} x "
        f"{settings['seq']} tokens = {tokens:,} tokens; LR sweep {settings['lrs']} at seed "
        f"{settings['seeds'].split(',')[0]}; seeds at the best LR: {settings['seeds']}",
        f"- the runs' 1-minute load at their starts: {_load_range(results)} (other work "
        "slows the tokens/s and wall times, not the losses)",
        "- FLOPs per token: 3x XLA's count of the compiled forward (logits included); "
        "tokens/s: the training loop's median after compiling",
        "",
    ]
    for (corpus, size), res in results.items():
        png = out.with_name(f"{out.stem}_{corpus}_{size}.png")
        _plot(png, res["best"], labels, settings, f"{corpus}, {size}")
        parts += [f"## {corpus}, {size}", "", "Validation loss of the LR sweep:", ""]
        planned = [float(x) for x in settings["lrs"].split(",")]
        parts += _sweep_table(res["sweep"], labels, planned)
        parts += ["", "At each model's best LR:", ""]
        parts += _result_table(res["best"], labels, settings)
        parts += [
            "",
            f"Length extrapolation (trained at S = {settings['seq']}): mean loss of "
            "the same validation tokens read in windows of each length (the longest "
            "windows cut into pieces); the last column: positions past S in the "
            "longest windows:",
            "",
        ]
        parts += _extrapolation_table(res["best"], labels, settings)
        parts += ["", f"![{corpus}, {size}]({png.name})", ""]
    text = "\n".join(parts)
    out.write_text(text)
    return text

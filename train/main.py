"""Command line: ``python -m train.main --config NAME [--workdir DIR] [--set key=value ...]``.

Exit codes: 0 done (or stopped at ``train.stop_after``), 1 a run-time failure (no
readable checkpoint, a non-finite loss or state, a full or read-only disk), 2 a bad command
line, config, data source, tokenizer, workdir, ``--resume-step`` or a step that cannot fit
in memory (found before anything is written), 130/143
interrupted by SIGINT/SIGTERM after saving a checkpoint. Errors are one paragraph on stderr
(``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from train.cli import make_parser
from train.errors import run_command

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = make_parser(
        "python -m train.main",
        "Train a model from a named config (rerun the same command to resume).",
        [
            "python -m train.main --config xlstm_tiny",
            "python -m train.main --config xlstm_tiny --workdir runs/t --set train.steps=50",
            "python -m train.main --config parity_xlstm01 --set train.seed=1",
            "python -m train.main --config xlstm_large_tiny --init-from runs/xlstm_large_tiny "
            "--workdir runs/finetune",
        ],
        [
            "0 done, or stopped at train.stop_after",
            "2 a bad command line, config, data source, tokenizer, workdir, --resume-step, or a "
            "step that cannot fit in memory: found before anything is written",
            "1 a run-time failure: no readable checkpoint, a non-finite loss or state, a full "
            "or read-only disk (the last good checkpoint is kept)",
            "130/143 interrupted by SIGINT/SIGTERM, after saving a checkpoint",
        ],
    )
    p.add_argument("--config", required=True, help="a config name from configs/, e.g. xlstm_tiny")
    p.add_argument("--workdir", help="output folder (default: runs/CONFIG)")
    p.add_argument(
        "--resume-step",
        type=int,
        help="resume from this checkpoint step instead of the newest intact one (newer "
        "checkpoints are moved to WORKDIR/set_aside/, never deleted)",
    )
    p.add_argument(
        "--init-from",
        metavar="PATH",
        help="fine-tune: start from these weights (a train.main run folder, a Hugging "
        "Face / reference xLSTM-7B-family checkpoint folder, a TiRex model.ckpt, or a "
        "TiRex-2 checkpoint folder, whose config the run adopts); the same as --set "
        "train.init_from=PATH",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config fields, e.g. --set train.steps=100 data.seq_len=256 (default: none)",
    )
    dist = p.add_argument_group(
        "multi-process (multi-host) training",
        "Under SLURM with more than one task, jax.distributed is initialised from the job's "
        "environment; elsewhere give all three flags to every process.",
    )
    dist.add_argument("--coordinator-address", help="HOST:PORT of process 0's coordinator")
    dist.add_argument("--num-processes", type=int, help="total number of processes")
    dist.add_argument("--process-id", type=int, help="this process's index, 0-based")
    return p


def _init_distributed(args: argparse.Namespace) -> None:
    """Starts JAX's distributed runtime when launched as several processes."""
    given = [args.coordinator_address, args.num_processes, args.process_id]
    slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
    if not any(x is not None for x in given) and not slurm:
        return
    import jax

    # CPU processes talk over Gloo (GPUs use NCCL regardless of this setting).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if any(x is None for x in given) and not slurm:
        from xlstm_jax.layers.config import ConfigError

        raise ConfigError(
            "multi-process training needs --coordinator-address, --num-processes and "
            "--process-id together (or a SLURM job, whose environment provides them)."
        )
    if all(x is not None for x in given):
        jax.distributed.initialize(
            coordinator_address=args.coordinator_address,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    else:
        jax.distributed.initialize()  # reads the SLURM environment


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; returns the process exit code."""
    args = _parser().parse_args(argv)

    def body() -> int:
        _init_distributed(args)
        # Imports after parsing so --help is instant; the config errors need no JAX work.
        from train.config import named
        from train.config.overrides import apply_overrides
        from train.loop import train

        overrides = list(args.overrides)
        if args.init_from:
            overrides.append(f"train.init_from={args.init_from}")
        cfg = apply_overrides(named.load(args.config), overrides)
        workdir = Path(args.workdir or Path("runs") / args.config)
        try:
            summary = train(cfg, workdir, resume_step=args.resume_step)
        except KeyboardInterrupt:
            # A second Ctrl-C: the step still running on the device would keep a normal
            # exit waiting for it, so leave at once (the loop has already closed its files).
            print("aborted without saving.", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(130)
        if summary["status"] == "interrupted":
            return 128 + summary["signal"]
        losses = "".join(f", {k} {summary[k]:.4f}" for k in ("loss", "val_loss") if k in summary)
        peak = f", peak RAM {summary['peak_rss'] / 2**30:.2f} GB" if "peak_rss" in summary else ""
        print(
            f"{summary['status']}: step {summary['step']}{losses}, {summary['seconds']:.0f} s"
            f"{peak}; outputs in {workdir}"
        )
        return 0

    return run_command(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

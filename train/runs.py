"""Reading a finished (or interrupted) training run back: its config, tokenizer and model.

    run = load_run("runs/xlstm_tiny")
    run.model(tokens)                       # the latest checkpoint's parameters

Only the parameters are read from the checkpoint (not the optimizer state).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from flax import nnx

from train.checkpoint import Checkpointer
from train.config import ConfigError, ExperimentConfig
from train.models import build_model
from train.overrides import from_dict, to_dict
from train.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer

__all__ = ["Run", "load_run"]


@dataclass(frozen=True)
class Run:
    """A training run's model (latest checkpoint), tokenizer, checkpoint step and config."""

    model: nnx.Module
    tokenizer: ByteTokenizer | HFTokenizer
    step: int
    config: ExperimentConfig


def load_run(workdir: str | Path, step: int | None = None, say=None) -> Run:
    """Loads the run in ``workdir`` (a ``python -m train.main`` output folder): its newest
    checkpoint that reads back intact (checksums compared), or checkpoint ``step``.

    Args:
        workdir: the run's folder.
        step: a checkpoint step to load instead of the newest intact one.
        say: where notes on skipped (unreadable) checkpoints go (default: stderr).

    Raises:
        ConfigError: the folder is not a run, its config.json is damaged, or it holds no
            checkpoint yet (the message says how to make one).
        CheckpointError: no checkpoint (or not ``step``) can be read; nothing is moved.
    """
    workdir = Path(workdir)
    cfg_path = workdir / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(
            f"{workdir} is not a training run (no config.json); train one first, e.g. "
            f"python -m train.main --config xlstm_tiny --workdir {workdir}"
        )
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"{cfg_path} cannot be read ({e}). Rerunning the training command that made the "
            f"run (python -m train.main --config NAME --workdir {workdir}) rewrites it."
        ) from e
    cfg = from_dict(ExperimentConfig, raw)
    if not (workdir / "checkpoints").is_dir():
        raise ConfigError(_no_checkpoint(workdir, cfg))
    ckpt = Checkpointer(
        workdir / "checkpoints", keep=cfg.checkpoint.keep, async_save=False, create=False
    )
    try:
        abstract = nnx.eval_shape(lambda: build_model(cfg.model, nnx.Rngs(0)))
        graphdef, param_state, rest = nnx.split(abstract, nnx.Param, ...)
        restored = ckpt.restore_latest(
            {"params": nnx.to_pure_dict(param_state)},
            to_dict(cfg.model),
            say or (lambda m: print(m, file=sys.stderr)),
            step=step,
        )
    finally:
        ckpt.close()
    if restored is None:
        raise ConfigError(_no_checkpoint(workdir, cfg))
    found, state, _ = restored
    nnx.replace_by_pure_dict(param_state, state["params"])
    model = nnx.merge(graphdef, param_state, rest)
    return Run(model, load_tokenizer(cfg.data.tokenizer), found, cfg)


def _no_checkpoint(workdir: Path, cfg: ExperimentConfig) -> str:
    return (
        f"{workdir / 'checkpoints'} holds no checkpoint yet; train first (rerun "
        f"python -m train.main --config {cfg.name} --workdir {workdir}) and try again."
    )

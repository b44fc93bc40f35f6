"""Reading a finished (or interrupted) training run back: its config, tokenizer and model.

    run = load_run("runs/xlstm_tiny")
    run.model(tokens)                       # the latest checkpoint's parameters

Only the parameters are read from the checkpoint (not the optimizer state).
"""

from __future__ import annotations

import json
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


def load_run(workdir: str | Path) -> Run:
    """Loads the run in ``workdir`` (a ``python -m train.main`` output folder).

    Raises:
        ConfigError: the folder is not a run, or holds no checkpoint yet (the message says
            how to make one).
        CheckpointError: the latest checkpoint cannot be read.
    """
    workdir = Path(workdir)
    cfg_path = workdir / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(
            f"{workdir} is not a training run (no config.json); train one first, e.g. "
            f"python -m train.main --config xlstm_tiny --workdir {workdir}"
        )
    cfg = from_dict(ExperimentConfig, json.loads(cfg_path.read_text()))
    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.checkpoint.keep, async_save=False)
    try:
        step = ckpt.latest_step()
        if step is None:
            raise ConfigError(
                f"{workdir / 'checkpoints'} holds no checkpoint yet; train first (rerun "
                f"python -m train.main --config {cfg.name} --workdir {workdir}) and try again."
            )
        abstract = nnx.eval_shape(lambda: build_model(cfg.model, nnx.Rngs(0)))
        graphdef, param_state, rest = nnx.split(abstract, nnx.Param, ...)
        params, _ = ckpt.restore_params(step, nnx.to_pure_dict(param_state), to_dict(cfg.model))
    finally:
        ckpt.close()
    nnx.replace_by_pure_dict(param_state, params)
    model = nnx.merge(graphdef, param_state, rest)
    return Run(model, load_tokenizer(cfg.data.tokenizer), step, cfg)

"""Where a run starts: its newest intact checkpoint (resuming), the weights it fine-tunes
from (``train.init_from``), or the fresh initialisation; and the ``config.json`` that
then describes the run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jax

from train.config.overrides import config_diff, to_dict
from train.config.schema import ConfigError, ExperimentConfig
from train.files import atomic_write_text
from train.loop.setup import TrainSetup
from train.runs.checkpoint import Checkpointer
from train.runs.load import initial_params
from xlstm_jax.formats.jsonfile import read_json
from xlstm_jax.registry import family_of

__all__ = ["restore", "write_config"]


def restore(
    setup: TrainSetup,
    ckpt: Checkpointer,
    resume_step: int | None,
    say: Callable[[str], None],
) -> int:
    """Fills ``setup.state`` (None from ``build_state``) with the checkpoint to resume from
    (the newest intact one, or ``resume_step``: newer ones are then set aside) or, when
    there is none, with the weights of ``train.init_from``, or else with the fresh random
    initialisation; returns the step the data resumes at (0 afresh). Each is created
    straight into its shards; the random state only when nothing else fills it.

    ``ckpt`` is closed when this raises.
    """
    tc = setup.cfg.train
    # Restoring onto this run's shardings: a checkpoint from any mesh fits any other.
    abstract_state = setup.abstract_state
    lead = jax.process_index() == 0
    try:
        restored = ckpt.restore_latest(
            abstract_state, to_dict(setup.cfg.model), say, step=resume_step, set_aside_newer=lead
        )
    except BaseException:
        ckpt.close()
        raise
    if restored is not None:
        step_restored, setup.state, meta = restored
        start = int(meta["data_position"])
        say(f"resumed from {ckpt.directory / str(step_restored)} (step {start})")
        if tc.init_from:
            say(f"note: train.init_from={tc.init_from} is ignored: the run resumes instead.")
        return start
    try:
        if not tc.init_from:
            setup.state = setup.fresh_state()
            return 0
        # Each tensor is read into its shards (each host reads its devices' slices where
        # the format allows); setup.param_state stays abstract (filled on a copy).
        params = initial_params(
            tc.init_from,
            jax.tree.map(lambda x: x, setup.param_state),
            say,
            shardings=setup.shardings["params"],
            family=family_of(setup.cfg.model),
        )
    except BaseException:
        ckpt.close()
        raise
    # The AdamW moments are born in their shards, like the fresh initialisation's.
    init = jax.jit(setup.tx.init, out_shardings=setup.shardings["opt_state"])
    setup.state = {"params": params, "opt_state": init(params)}
    say(f"initialised the weights from {tc.init_from} (fine-tuning)")
    return 0


def write_config(cfg: ExperimentConfig, workdir: Path, say: Callable[[str], None]) -> None:
    """Writes ``WORKDIR/config.json`` (with the model's family tag), first saying how it
    differs from the one a previous run in this workdir left."""
    path = workdir / "config.json"
    new = to_dict(cfg)
    if path.exists():
        try:
            old = read_json(path, ConfigError, "")
        except ConfigError:
            old = None
            say(f"note: {path} was unreadable (a half-written file?); writing it afresh.")
        diff = config_diff(old, new) if isinstance(old, dict) else []
        if diff:
            say("config differs from the previous run in this workdir:\n  " + "\n  ".join(diff))
    atomic_write_text(path, json.dumps(new, indent=2) + "\n")

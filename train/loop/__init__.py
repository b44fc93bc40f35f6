"""The training loop: ``train(config, workdir)`` runs (or resumes) one training run.

    from train.loop import train
    summary = train(cfg, "runs/xlstm_tiny")   # {"status", "step", "loss", "val_loss", ...}

Modules: ``driver`` (``train``: the phases in order), ``setup``, ``restore``, ``compile``,
``run``, ``finish`` (the phases), ``hooks`` (what runs after a step), ``step`` (the train
step and the state's shardings), ``optimizer``, ``memory`` (estimates and measurements),
``report`` (the start-up lines).
"""

from train.loop.driver import NonFiniteLossError, train

__all__ = ["NonFiniteLossError", "train"]

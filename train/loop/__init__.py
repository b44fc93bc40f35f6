"""The training loop: ``train(config, workdir)`` runs (or resumes) one training run.

    from train.loop import train
    summary = train(cfg, "runs/xlstm_tiny")   # {"status", "step", "loss", "val_loss", ...}

Modules: ``driver`` (``train``: the phases in order), ``setup``, ``restore``, ``compile``,
``run``, ``finish`` (the phases), ``hooks`` (what runs after a step), ``step`` (the train
step and the state's shardings), ``optimizer``, ``memory`` (estimates and measurements),
``report`` (the start-up lines).
"""

__all__ = ["NonFiniteLossError", "train"]


def __getattr__(name: str):
    # Resolved on first use: importing a piece of the loop (``train.loop.step``, which the
    # GPU check runs on a machine without the data packages) must not import the driver
    # and with it grain, orbax and the data sources.
    if name in __all__:
        from train.loop import driver

        return getattr(driver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The trainer's reader of forecaster runs for ``xlstm_jax.load_forecaster``, registered
in ``pyproject.toml`` under the entry-point group ``xlstm_jax.run_loaders`` (the library
knows no trainer: dependencies point one way)."""

from __future__ import annotations

from pathlib import Path

from flax import nnx

__all__ = ["load_forecaster_run"]


def load_forecaster_run(folder: str | Path, *, shardings: dict | None = None) -> nnx.Module:
    """The model of the forecaster run in ``folder`` at its newest intact checkpoint
    (``train.runs.load.load_run``); every error a ``ForecastError`` naming the fix."""
    from train.config.schema import ConfigError
    from train.runs.checkpoint import CheckpointError
    from train.runs.load import load_run
    from xlstm_jax.layers.config import ForecastError

    try:
        return load_run(folder, task="forecast", shardings=shardings).model
    except (ConfigError, CheckpointError) as err:
        raise ForecastError(str(err)) from None

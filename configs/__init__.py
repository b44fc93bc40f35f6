"""Named training configs: ``configs/NAME.py`` defines ``get_config() -> ExperimentConfig``.

``python -m train.main --config NAME`` resolves NAME here. The recipes follow the xLSTM
paper (Beck et al. 2024); see ``shared/reference/targets.md`` and ``docs/training.md``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from train.config import ConfigError, ExperimentConfig

__all__ = ["available", "load"]


def available() -> list[str]:
    """Names of the shipped configs (the ``.py`` files in this folder)."""
    here = Path(__file__).parent
    return sorted(p.stem for p in here.glob("*.py") if not p.stem.startswith("_"))


def load(name: str) -> ExperimentConfig:
    """Builds the named config.

    Raises:
        ConfigError: no config of that name; the message lists the available ones.
    """
    if name not in available():
        raise ConfigError(f"unknown config '{name}'; available configs: {', '.join(available())}.")
    return importlib.import_module(f"configs.{name}").get_config()

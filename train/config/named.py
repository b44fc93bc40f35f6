"""Named training configs: ``configs/NAME.py`` defines ``get_config() -> ExperimentConfig``.

``python -m train.main --config NAME`` resolves NAME here, by module name at run time:
``train`` does not import the ``configs`` package (which imports only the config schemas),
so the two never import each other.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from train.config.schema import ConfigError, ExperimentConfig

__all__ = ["available", "load"]

PACKAGE = "configs"


def _folder() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the '{PACKAGE}' package of named configs is not importable; run from the "
            "repository root or install the project (pip install -e .)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def available() -> list[str]:
    """Names of the shipped configs (the ``.py`` files of ``configs/`` not starting with _)."""
    return sorted(p.stem for p in _folder().glob("*.py") if not p.stem.startswith("_"))


def load(name: str) -> ExperimentConfig:
    """Builds the named config.

    Raises:
        ConfigError: no config of that name; the message lists the available ones.
    """
    names = available()
    if name not in names:
        raise ConfigError(f"unknown config '{name}'; available configs: {', '.join(names)}.")
    cfg = importlib.import_module(f"{PACKAGE}.{name}").get_config()
    if not isinstance(cfg, ExperimentConfig):
        raise ConfigError(
            f"configs/{name}.py: get_config() returned {type(cfg).__name__}, not an "
            "ExperimentConfig."
        )
    return cfg

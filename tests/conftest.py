"""Shared test fixtures and the one tolerance table."""

from __future__ import annotations

import os

import numpy as np
import pytest

# Parity tests must not silently skip in CI: there, a missing torch/xlstm is an error.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Tolerances keyed by dtype: (atol, rtol). Never loosened to make a test pass.
TOL = {
    "float64": (1e-10, 1e-10),
    "float32": (1e-5, 1e-5),
    "bfloat16": (2e-2, 2e-2),
}


def require_reference():
    """Imports torch and xlstm; skips locally but fails in CI when they are missing."""
    try:
        import torch
        import xlstm
    except ImportError as err:  # pragma: no cover - depends on the environment
        if IN_CI:
            raise RuntimeError("torch/xlstm are required in CI (pip install -e '.[test]')") from err
        pytest.skip(f"PyTorch reference not installed: {err}")
    return torch, xlstm


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def rel_err(a, b) -> float:
    """||a - b|| / ||b|| (norm-relative error)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))

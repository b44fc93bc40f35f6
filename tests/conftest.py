"""Pytest fixtures (shared helpers are in ``helpers.py``, which test modules import)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)

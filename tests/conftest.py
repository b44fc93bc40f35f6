"""Pytest fixtures (shared helpers are in ``helpers.py``, which test modules import)."""

from __future__ import annotations

import collections
from types import MappingProxyType

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def pallas_interpret(monkeypatch):
    """Makes the dispatch run every Pallas kernel it selects in interpret mode, as if on a
    CUDA GPU: CPU tests of ``impl="pallas"`` through the layers and the model. Yields the
    number of times each op's kernel was traced."""
    from pallas_kernels import dispatch

    calls: collections.Counter = collections.Counter()

    def interpreted(op, fn):
        def run(*args, interpret=False, **kwargs):
            del interpret
            calls[op] += 1
            return fn(*args, interpret=True, **kwargs)

        return run

    table = {
        op: MappingProxyType(
            {name: interpreted(op, fn) if name == "pallas" else fn for name, fn in impls.items()}
        )
        for op, impls in dispatch.IMPLEMENTATIONS.items()
    }
    monkeypatch.setattr(dispatch, "IMPLEMENTATIONS", MappingProxyType(table))
    monkeypatch.setattr(dispatch, "on_cuda_gpu", lambda: True)
    return calls

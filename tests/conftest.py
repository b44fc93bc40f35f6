"""Pytest fixtures (shared helpers are in ``helpers.py``, which test modules import)."""

from __future__ import annotations

import collections
import os
import shutil
import tempfile
from types import MappingProxyType

import numpy as np
import pytest

# One persistent XLA compilation cache for the whole run, shared by the xdist workers and the
# CLI subprocesses: the tests build the same small programs again and again (the same tiny
# models and train steps in many tests and processes), and the cache compiles each once.
# CI points JAX_COMPILATION_CACHE_DIR at a folder of its run (shared by its legs); otherwise
# the controller makes one under the system temp folder and removes it at the end.
_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_OWN_CACHE = "XLSTM_JAX_TEST_OWN_CACHE"


def pytest_configure(config):
    if _CACHE_ENV not in os.environ:
        os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="xlstm-jax-test-xla-cache-")
        os.environ[_OWN_CACHE] = os.environ[_CACHE_ENV]
    # Every program, however small or quick to compile (the defaults skip those under 1 s).
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    # The suite compiles with XLA's defaults, as users' runs do. (Measured 2026-12-07:
    # XLA_FLAGS=--xla_backend_optimization_level=0 ran leg 1 in 574 s instead of 814 s, but
    # changed results: the xLSTM-7B parallel form's float64 backward with eps=0 became NaN
    # (test_large.py, at levels 0 and 2; the default 3 is finite), and a TiRex-2 forecast
    # moved 1.2e-5 from the reference, past its float32 tolerance (test_tirex2.py).)
    import jax  # after the environment: JAX reads it at import

    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    own = os.environ.get(_OWN_CACHE)
    if own and not hasattr(config, "workerinput"):  # the controller (or a run without xdist)
        shutil.rmtree(own, ignore_errors=True)


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


# The fast tier's promise: no test over 60 s (move it to the slow tier or make it faster).
# Collected in the controller from every worker's reports and listed at the end of the run.
FAST_TIER_LIMIT_S = 60.0
_slow_fast_tier: list[tuple[str, float]] = []


def pytest_runtest_logreport(report):
    over = report.when == "call" and report.duration > FAST_TIER_LIMIT_S
    if over and "slow" not in report.keywords:
        _slow_fast_tier.append((report.nodeid, report.duration))


def pytest_terminal_summary(terminalreporter):
    if _slow_fast_tier:
        terminalreporter.section("fast-tier tests over 60 s")
        for nodeid, seconds in sorted(_slow_fast_tier, key=lambda x: -x[1]):
            terminalreporter.write_line(
                f"WARNING: {nodeid} took {seconds:.0f} s: mark it slow or make it faster"
            )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One uninterrupted 30-step run of the shrunken ``xlstm_tiny`` (``helpers.train_cmd``,
    checkpoints 20 and 30), trained once per test run and shared by the xdist workers (a lock
    file in their common temp folder): ``(workdir, CompletedProcess)``. Tests read it or work
    on copies of it; none may change it."""
    import fcntl
    import json
    import subprocess

    from helpers import cli_env, run_cmd, train_cmd

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, above every worker's own
    root = base / "shared_tiny_run"
    root.mkdir(exist_ok=True)
    result = root / "result.json"
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.exists():
            proc = run_cmd(train_cmd(root / "run"), cli_env())
            fields = ("args", "returncode", "stdout", "stderr")
            result.write_text(json.dumps({k: getattr(proc, k) for k in fields}))
    done = json.loads(result.read_text())
    proc = subprocess.CompletedProcess(**done)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run", proc

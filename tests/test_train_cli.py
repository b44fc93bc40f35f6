"""The real ``python -m train.main`` entry point on a shrunken ``xlstm_tiny``.

Each run is a subprocess, as a user would start it. The runs share a JAX compilation
cache so that only the first one pays for compiling the train step.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO_ROOT, checkpoints_of, cli_env, metrics_of, run_cmd, train_cmd

ROOT = REPO_ROOT


@pytest.fixture(scope="module")
def env():
    return cli_env()


def _cmd(workdir: Path, *overrides: str, config: str = "xlstm_tiny") -> list[str]:
    return train_cmd(workdir, *overrides, config=config)


def _run(env, workdir: Path, *overrides: str, config: str = "xlstm_tiny"):
    return run_cmd(_cmd(workdir, *overrides, config=config), env)


_metrics = metrics_of
_checkpoints = checkpoints_of


@pytest.fixture(scope="module")
def full_run(tiny_run):
    """One uninterrupted 30-step run (conftest's, shared with test_fail_safe.py); the other
    tests compare against it."""
    return tiny_run


def test_trains_with_falling_loss_and_writes_outputs(full_run):
    workdir, proc = full_run
    records = _metrics(workdir)
    assert [r["step"] for r in records] == list(range(1, 31))
    losses = [r["loss"] for r in records]
    assert all(math.isfinite(x) for x in losses)
    # A falling loss: the last five steps average well below the first five.
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses
    for r in records:
        assert {"step", "loss", "lr", "tokens_per_s"} <= set(r)
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [15, 30]
    assert all(r["val_ppl"] == pytest.approx(math.exp(r["val_loss"])) for r in evals)
    assert _checkpoints(workdir) == [20, 30]  # every 10 steps, keep the last 2
    assert (workdir / "loss_curve.png").stat().st_size > 0
    assert list(workdir.glob("events.out.tfevents.*"))
    cfg = json.loads((workdir / "config.json").read_text())
    assert cfg["train"]["steps"] == 30 and cfg["model"]["embedding_dim"] == 64
    # The start-up report.
    for text in (
        "parameters",
        "rough memory estimate per device",
        "memory: the step needs per device",
        "devices:",
        "tokens/step: 256",
        "peak RAM",
    ):
        assert text in proc.stdout, proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("done: step 30")


@pytest.mark.os_faults  # a signal: the process's behaviour, not the JAX version's
def test_sigterm_saves_and_rerun_resumes_to_identical_losses(env, full_run, tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.Popen(
        _cmd(workdir), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.02)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()[-3000:]
    stopped_at = _checkpoints(workdir)[-1]
    assert 3 <= stopped_at < 30
    assert max(r["step"] for r in _metrics(workdir)) == stopped_at

    resumed = _run(env, workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and f"(step {stopped_at})" in resumed.stdout
    expected = [(r["step"], r["loss"]) for r in _metrics(full_run[0])]
    assert [(r["step"], r["loss"]) for r in _metrics(workdir)] == expected

    again = _run(env, workdir)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_resume_from_a_checkpoint_saved_while_training_went_on(env, full_run, tmp_path):
    # Checkpoint 20 was saved asynchronously while steps 21-30 kept donating the state's
    # buffers; resuming from it (in two legs, via train.stop_after) must still reproduce
    # those steps exactly.
    workdir = tmp_path / "copy"
    shutil.copytree(full_run[0], workdir)
    shutil.rmtree(workdir / "checkpoints" / "30")
    proc = _run(env, workdir, "train.stop_after=25")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(step 20)" in proc.stdout and "stopped: step 25" in proc.stdout
    assert _checkpoints(workdir)[-1] == 25
    proc = _run(env, workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(step 25)" in proc.stdout
    expected = [(r["step"], r["loss"]) for r in _metrics(full_run[0])]
    assert [(r["step"], r["loss"]) for r in _metrics(workdir)] == expected


@pytest.mark.one_jax  # an error path of the command
def test_a_changed_model_is_refused_and_changes_nothing(env, full_run, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(full_run[0], workdir)
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file() and p.name != ".lock"}

    proc = _run(env, workdir, "train.steps=40", "model.embedding_dim=128")
    assert proc.returncode == 1
    assert "written for a different model" in proc.stderr
    assert "model.embedding_dim: 64 -> 128" in proc.stderr
    assert "Traceback" not in proc.stderr
    # config.json still describes the checkpoints: nothing in the workdir changed.
    after = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before


@pytest.mark.one_jax  # an error path of the command
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(env, tmp_path):
    proc = _run(env, tmp_path, "optimizer.lr=1e30", "optimizer.grad_clip=0", "checkpoint.every=1")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "loss became" in proc.stderr and "rerun" in proc.stderr
    bad_step = int(proc.stderr.split(" at step ")[1].split()[0])
    # The checkpoint before the NaN holds the weights that gave it: set aside, not kept
    # as "good"; every earlier one is kept.
    assert (tmp_path / "set_aside" / f"{bad_step - 1}-non-finite-loss").is_dir()
    assert _checkpoints(tmp_path) == list(range(1, bad_step - 1))[-3:]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "no_such_config"], "available configs: "),
        (["--config", "xlstm_tiny", "--set", "train.stepz=3"], "valid keys under 'train': "),
        (["--config", "xlstm_tiny", "--set", "data.path=/no/such/path"], "does not exist"),
        (["--config", "xlstm_tiny", "--set", "data.tokenizer=not-a-cached-tok"], "bytes"),
    ],
)
def test_bad_command_lines_fail_fast_with_a_clear_message(env, tmp_path, args, message):
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "train.main", "--workdir", str(tmp_path / "w"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    # Nothing was computed: no checkpoint, no metrics.
    assert not (tmp_path / "w" / "checkpoints").exists()
    assert time.time() - t0 < 60

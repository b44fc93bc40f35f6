"""Training on device meshes and across processes (simulated CPU devices in subprocesses):
the same losses as one device, checkpoints that move between meshes, two real processes
that each hold only their own shards."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import xla_flags

ROOT = Path(__file__).parent.parent
STEPS = 4
OVERRIDES = [
    f"train.steps={STEPS}",
    "train.batch_size=8",
    "data.seq_len=32",
    "model.embedding_dim=64",
    "model.num_blocks=2",
    "train.eval_every=0",
    "logging.every=1",
    "checkpoint.every=100",
    "logging.plot=false",
    "logging.tensorboard=false",
    "logging.progress_bar=false",
]


def env(devices: int) -> dict:
    return dict(
        os.environ,
        XLA_FLAGS=xla_flags(devices),
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(ROOT),
    )


def cli(workdir: Path, *sets: str, devices: int = 1, extra: tuple = ()) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "train.main",
        "--config",
        "xlstm_tiny",
        "--workdir",
        str(workdir),
        *extra,
        "--set",
        *OVERRIDES,
        *sets,
    ]
    return start(cmd, env(devices))


def start(cmd: list[str], environ: dict) -> subprocess.Popen:
    """Starts ``cmd`` with its output in temporary files (several run at once: a full pipe
    that nobody reads yet would stall its writer)."""
    # Closed by finish(), which reads them.
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=environ, cwd=ROOT, stdout=out, stderr=err, text=True)
    proc.outputs = (out, err)
    return proc


def finish(proc: subprocess.Popen) -> str:
    """Waits for ``proc``, asserts exit 0 (with its stderr) and returns its stdout."""
    proc.wait(timeout=900)
    out, err = (f.seek(0) or f.read() for f in proc.outputs)
    for f in proc.outputs:
        f.close()
    assert proc.returncode == 0, err[-3000:]
    return out


def losses(workdir: Path) -> list[float]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_meshes_checkpoints_and_processes_match_one_device(tmp_path):
    # The independent runs start together (the longest test of the suite: so it uses both
    # cores when it runs last): one device (the reference), eight simulated devices on several
    # meshes with a checkpoint moved from (2,2,2) to (4,2,1), and two real processes x 2
    # devices (jax.distributed over localhost, Gloo collectives).
    one = cli(tmp_path / "one")
    script = ROOT / "tests" / "scripts" / "train_meshes.py"
    eight = start([sys.executable, str(script), str(tmp_path / "eight"), *OVERRIDES], env(8))
    port = _free_port()
    script = ROOT / "tests" / "scripts" / "two_processes.py"
    two = [
        start(
            [sys.executable, str(script), str(i), str(port), str(tmp_path / "two"), *OVERRIDES],
            env(2),
        )
        for i in range(2)
    ]

    finish(one)
    ref = losses(tmp_path / "one")
    assert len(ref) == STEPS and all(np.isfinite(ref))

    runs = json.loads(finish(eight).strip().splitlines()[-1])
    for mesh in ["(8, 1, 1)", "(2, 2, 2)"]:
        np.testing.assert_allclose(runs[mesh], ref, rtol=1e-5, err_msg=mesh)
    # Resumed on another mesh: steps 3 and 4 equal the uninterrupted run's.
    np.testing.assert_allclose(runs["resumed_421"][2:], ref[2:], rtol=1e-5)

    # Two processes, FSDP over both (train.main's entry, then fine-tuning from that run and
    # resuming it): the same losses, and each process holds only its own shards.
    checks = json.loads(finish(two[0]).strip().splitlines()[-1])
    finish(two[1])
    np.testing.assert_allclose(losses(tmp_path / "two" / "run")[:STEPS], ref, rtol=1e-5)
    assert [c["start"] for c in checks] == [0, 0, STEPS]
    for c in checks:
        # About half the state (the small replicated leaves on both), and nothing else.
        assert c["state_own"] < 0.6 * c["state_global"], c
        assert c["live_own"] <= c["state_own"] + c["rest_own"] + 2**16, c

    # The (2,2,2) checkpoint resumed on one device.
    finish(cli(tmp_path / "eight" / "ckpt_for_1"))
    np.testing.assert_allclose(losses(tmp_path / "eight" / "ckpt_for_1")[2:], ref[2:], rtol=1e-5)

"""``python -m train.generate`` on a real (tiny) training run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from train.runs.load import load_run
from xlstm_jax import generate

# CI runs these in leg 1 only: the command's arguments, streaming and errors (the decoding itself
# runs on every JAX in test_generate.py).
pytestmark = pytest.mark.one_jax

ROOT = Path(__file__).parent.parent
SETS = [
    "train.steps=3",
    "train.batch_size=4",
    "data.seq_len=32",
    "model.embedding_dim=32",
    "model.num_blocks=2",
    "train.eval_every=0",
    "logging.plot=false",
    "logging.tensorboard=false",
    "logging.progress_bar=false",
]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    wd = tmp_path_factory.mktemp("run") / "tiny"
    proc = run("-m", "train.main", "--config", "xlstm_tiny", "--workdir", str(wd), "--set", *SETS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return wd


def test_cli_streams_the_greedy_continuation(workdir):
    prompt = "def main("
    proc = run(
        "-m",
        "train.generate",
        "--workdir",
        str(workdir),
        "--prompt",
        prompt,
        "--max-new-tokens",
        "12",
        "--temperature",
        "0",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "checkpoint step 3" in proc.stderr
    # The streamed text equals the jitted scan decoder's greedy tokens for the same model.
    loaded = load_run(workdir)
    tokenizer = loaded.tokenizer
    ids = tokenizer.encode_batch([prompt])[0]
    out = generate(loaded.model, [list(ids)], 12, temperature=0.0)[0].tolist()
    if tokenizer.eos_id in out:
        out = out[: out.index(tokenizer.eos_id)]
    assert proc.stdout == prompt + tokenizer.decode(out) + "\n"


def test_cli_errors_name_the_fix(workdir, tmp_path):
    proc = run("-m", "train.generate", "--workdir", str(tmp_path / "nothing"), "--prompt", "x")
    assert proc.returncode == 2 and "not a training run" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(workdir / "config.json", empty / "config.json")
    proc = run("-m", "train.generate", "--workdir", str(empty), "--prompt", "x")
    assert proc.returncode == 2 and "holds no checkpoint yet" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run("-m", "train.generate", "--workdir", str(workdir), "--prompt", "x", "--top-p", "2")
    assert proc.returncode == 2 and "--top-p" in proc.stderr and "Traceback" not in proc.stderr


def test_load_run_reads_the_parameters_without_the_optimizer_state(workdir):
    """The checkpoint keeps the parameters as their own item: a reader restores them alone,
    and they are the run's trained weights (not a fresh initialisation)."""
    import jax
    from flax import nnx

    from xlstm_jax.registry import family_of

    loaded = load_run(workdir)
    assert loaded.step == 3
    assert sorted(p.name for p in (workdir / "checkpoints" / "3").iterdir() if p.is_dir()) == [
        "meta",
        "opt_state",
        "params",
    ]
    model_cfg = loaded.config.model
    fresh = nnx.state(
        family_of(model_cfg).model(model_cfg, rngs=nnx.Rngs(loaded.config.train.seed))
    )
    trained = nnx.state(loaded.model)
    moved = jax.tree.map(lambda a, b: float(abs(a - b).max()), trained, fresh)
    assert max(jax.tree.leaves(moved)) > 0

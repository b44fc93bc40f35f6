"""Run folders written before the family restructure still load, and give the same numbers.

``tests/data/legacy_runs/`` holds four 2-step ``python -m train.main`` runs made at commit
73e8cd0 (before configs carried a family tag): the paper's xLSTM (``xlstm_tiny``, E 32, an
mLSTM and an sLSTM block), xLSTM-Large (``xlstm_large_tiny``, E 32, 2 blocks), the
Transformer baseline (``llama_parity``, E 32, 2 blocks) and TiRex (``tirex_tiny``, E 32,
2 blocks, on M3). ``expected.npz`` holds what that code computed from each loaded run: the
LMs' logits on a fixed (2, 12) token array, the forecaster's quantiles 8 steps ahead of a
fixed 96-value context. Nothing here may be regenerated to make the test pass.
"""

import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TOL

from train.runs.load import load_run

LEGACY = Path(__file__).parent / "data" / "legacy_runs"
MODELS = {
    "xlstm": "xLSTMLMModel",
    "large": "xLSTMLarge",
    "transformer": "TransformerLM",
    "tirex": "TiRex",
}

pytestmark = pytest.mark.one_jax


@pytest.fixture(scope="module")
def expected():
    with np.load(LEGACY / "expected.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_old_run_folder_loads_and_computes_what_it_did(name, expected, tmp_path):
    work = tmp_path / name
    shutil.copytree(LEGACY / name, work)  # loading must not depend on writing the fixture
    run = load_run(work)
    assert type(run.model).__name__ == MODELS[name]
    assert run.step == 2
    if name == "tirex":
        from xlstm_jax.models.tirex.forecast import forecast

        ctx = np.sin(np.arange(96, dtype=np.float32) / 5.0)[None] * 3 + 10
        got = np.asarray(forecast(run.model, ctx, prediction_length=8).quantiles)
    else:
        vocab = run.model.config.vocab_size
        tokens = (np.arange(24).reshape(2, 12) * 7 % 60 % vocab).astype(np.int32)
        got = np.asarray(run.model(jnp.asarray(tokens)))
    want = expected[name]
    atol, rtol = TOL["float32"]
    assert got.shape == want.shape
    # float32 rounding relative to the output's scale: the same weights and the same maths,
    # possibly another JAX (CI's second leg) and so other fused kernels.
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, atol=atol * scale, rtol=rtol)

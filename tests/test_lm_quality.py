"""benchmarks/lm_quality.py's pieces: the extrapolation windows, per-position loss, FLOPs per
token, the model grid of configs/_quality.py, and the report (a diverged run included)."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from configs._quality import ARCHS, LABELS, SIZES, model_config
from xlstm_jax.models.transformer.config import TransformerConfig
from xlstm_jax.models.transformer.model import TransformerLM
from xlstm_jax.registry import family_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _lm_eval import cut_windows, flops_per_token, position_loss  # noqa: E402
from _lm_report import write_report  # noqa: E402


def test_cut_windows_score_the_same_targets():
    w = np.arange(2 * 17).reshape(2, 17)  # two windows of 16 + 1 tokens
    pieces = cut_windows(w, 4)
    assert pieces.shape == (8, 5)
    # The targets (every token after the first of a piece) are those of the whole windows.
    np.testing.assert_array_equal(np.sort(pieces[:, 1:].ravel()), np.sort(w[:, 1:].ravel()))
    np.testing.assert_array_equal(pieces[1], w[0, 4:9])
    with pytest.raises(ValueError, match="does not divide"):
        cut_windows(w, 5)


@pytest.fixture(scope="module")
def tiny_llama():
    cfg = TransformerConfig(vocab_size=64, embedding_dim=32, num_blocks=2, num_heads=2)
    return TransformerLM(cfg, rngs=nnx.Rngs(0)), cfg


def test_position_loss_is_causal_and_lines_up_with_the_pieces(tiny_llama):
    model, _ = tiny_llama
    w = np.random.default_rng(0).integers(0, 64, size=(3, 33), dtype=np.int32)
    whole = position_loss(model, w, batch=2)
    pieces = position_loss(model, cut_windows(w, 8), batch=5)
    assert whole.shape == (32,) and pieces.shape == (8,)
    # The first piece of each window is its first 8 positions: a causal model scores them
    # alike whatever follows; later pieces lose the context before them.
    first = position_loss(model, w[:, :9])
    np.testing.assert_allclose(whole[:8], first, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(whole)) and whole.mean() > 0


def test_flops_per_token_matches_the_transformers_matmuls(tiny_llama):
    model, cfg = tiny_llama
    s, e, n = 64, cfg.embedding_dim, cfg.num_blocks
    params = nnx.state(model, nnx.Param)
    matmul = sum(x.size for x in jax.tree.leaves(params) if x.ndim == 2)
    matmul -= cfg.vocab_size * e  # the input embedding is a lookup, not a matmul
    # Forward: 2 FLOPs per weight, plus QK^T and AV (XLA counts the full S x S square).
    forward = 2 * matmul + n * 4 * s * e
    got = flops_per_token(model, s)
    assert 0.9 * 3 * forward < got < 1.2 * 3 * forward, (got, 3 * forward)


@pytest.mark.parametrize("arch", ARCHS)
def test_quality_grid_matches_sizes(arch):
    size = SIZES["small"]
    cfg = model_config(arch, size, vocab_size=320, context_length=256)
    model = nnx.eval_shape(lambda: family_of(cfg).model(cfg, rngs=nnx.Rngs(0)))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    inner = n - 2 * 320 * size.embedding_dim
    # Matched sizes: every model within 10% of Llama's 12 E^2 per layer.
    assert abs(inner / (12 * size.layers * size.embedding_dim**2) - 1) < 0.1, inner


def _run(arch, lr, loss, finite=True, seed=0):
    r = dict(arch=arch, lr=lr, seed=seed, finite=finite, wall_s=10.0)
    if finite:
        r.update(
            num_params=2e6,
            val_loss=loss,
            curve=[(5, loss + 1), (10, loss)],
            tokens_per_s=1000.0,
            flops_per_token=1e7,
            extrapolation={"1": [loss] * 8, "2": [loss - 0.1] * 16},
        )
    return r


def test_report_marks_the_best_rate_and_a_diverged_run(tmp_path):
    sweep = {
        "llama": [_run("llama", 1e-2, 0, finite=False), _run("llama", 3e-3, 1.5)],
        "xlstm10": [_run("xlstm10", 1e-2, 1.2), _run("xlstm10", 3e-3, 1.4)],
    }
    best = {"llama": [sweep["llama"][1]], "xlstm10": [sweep["xlstm10"][0]]}
    best["xlstm10"].append(_run("xlstm10", 1e-2, 1.3, seed=1))
    settings = dict(steps=10, batch=2, seq=8, lrs="1e-2,3e-3", seeds="0,1")
    results = {("bytes", "small"): {"sweep": sweep, "best": best}}
    text = write_report(tmp_path / "q.md", results, settings, [], LABELS)
    assert "| Llama | 2.00M | **1.5000** | diverged |" in text
    assert "| xLSTM[1:0] | 2.00M | 1.4000 | **1.2000** |" in text
    assert "**1.2500 (1.2000-1.3000)**" in text  # two seeds: mean (lowest-highest)
    assert (tmp_path / "q_bytes_small.png").stat().st_size > 0

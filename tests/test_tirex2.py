"""TiRex-2 (``xlstm_jax.models.tirex2``): forecasts, gradients and checkpoint folders against
the PyTorch reference (PyPI ``tirex-2`` 0.4.0, CPU, eager), its ``config.json``, and bad
input.

One small random model (E 32, a bi-mLSTM and a bi-sLSTM block, patch 8, context 64, future
window 16) is built once per module with every weight perturbed, the sLSTM's recurrent
kernels and the mLSTM's gate weights (which the reference initialises to zero) included,
and converted to ours. One batch holds every case (a univariate series, several targets,
past and future covariates, NaN gaps, a context shorter than a patch and one longer than
the window, a binary target, a trending target that is differenced), so each horizon
compiles once. The reference runs with ``torch.compiler.set_stance("force_eager")`` (its
``ResidualBlock`` is a class-level ``torch.compile``).
"""

from __future__ import annotations

import copy
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import TOL, rel_err, require_tirex2

from xlstm_jax.layers.config import ConfigError, ForecastError
from xlstm_jax.models.tirex2.config import TiRex2Config
from xlstm_jax.models.tirex2.convert import (
    TiRex2CheckpointError,
    TiRex2ConversionError,
    config_from_torch,
    from_state_dict,
    from_torch,
    load_folder,
    save_folder,
    to_state_dict,
)
from xlstm_jax.models.tirex2.forecast import MAX_HORIZON, Series, detect_trends, pack, predict
from xlstm_jax.models.tirex2.model import TiRex2

P, E, CTX, FUT = 8, 32, 64, 16
_QUICK_COMPILE = {"xla_backend_optimization_level": 0}


def _template(kind: str, **time_mixer) -> dict:
    return {
        "time_mixer": {"model_type": kind, "embedding_dim": E, "num_heads": 4, **time_mixer},
        "variate_mixer": {"embedding_dim": E, "num_heads": 4},
        "dropout": 0.1,
        "eps": 1e-7,
    }


# The reference's config.json of the test model (TiRex2's keyword arguments).
CONFIG = {
    "stack_config": {
        "templates": {
            "m": _template("bi-mlstm"),
            "s": _template("bi-slstm", num_slstm_heads=2),
        },
        "recipe": ["m", "s"],
    },
    "num_blocks": 2,
    "embedding_dim": E,
    "input_patch_size": P,
    "output_patch_size": P,
    "quantiles": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
    "tokenizer_cfg": {"input_patch_size": P, "output_patch_size": P, "input_patch_stride": P},
    "scaler_cfg": {"eps": 1e-8, "use_arcsinh": True, "binaryaware": True},
    "h_expand": 2.0,
    "context_len": CTX,
    "future_len": FUT,
    "input_ff_dim": 48,
    "act_func": "SiLU",
    "dropout": 0.1,
    "use_qk_norm": True,
    "stack_out_norm_config": {"eps": 1e-7, "use_rmsnorm": True},
    "tta_sign_flip": False,
    "tta_diff": True,
}


def _series() -> dict[str, Series]:
    rng = np.random.default_rng(7)

    def walk(*shape):
        return (rng.normal(size=shape).cumsum(-1) + 10).astype(np.float32)

    gaps = walk(1, 70)
    gaps[0, 20:30] = np.nan
    trend = (np.arange(50) * 0.5 + rng.normal(size=50) * 0.3 + 3).astype(np.float32)[None]
    return {
        "univariate": Series(walk(1, 90)),
        "several targets": Series(walk(3, 60)),
        "past covariates": Series(walk(2, 50), past_covariates=walk(2, 50)),
        "future covariates": Series(walk(1, 60), future_covariates=walk(2, 60 + FUT)),
        "all covariates": Series(walk(2, 45), walk(1, 45), walk(2, 45 + FUT + 3)),
        "NaN gaps": Series(gaps, future_covariates=walk(1, 70 + FUT)),
        "shorter than a patch": Series(walk(1, 5)),
        "longer than the window": Series(walk(2, 200), future_covariates=walk(1, 200 + FUT)),
        "binary": Series((rng.random((1, 40)) > 0.5).astype(np.float32)),
        "trend (differenced)": Series(trend),
    }


SERIES = _series()


def _perturbed(torch, ref, seed: int):
    """Every parameter plus N(0, 0.05): zero-initialised ones become random."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():  # each alias group once
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return ref


@pytest.fixture(scope="module")
def pair():
    """(torch, tirex2, the reference model, ours with its weights), the reference eager."""
    torch, tirex2 = require_tirex2()
    with torch.compiler.set_stance("force_eager"):
        torch.manual_seed(0)
        ref = _perturbed(torch, tirex2.TiRex2(**CONFIG, device="cpu").eval(), 1)
        yield torch, tirex2, ref, from_torch(ref, impl="xla")


def _torch_series(torch, tirex2, series):
    def t(a):
        return None if a is None else torch.tensor(a)

    return [
        tirex2.TimeseriesType(t(s.target), t(s.past_covariates), t(s.future_covariates))
        for s in series
    ]


def _float64(ref):
    """A float64 copy of the reference with its float32 casts (its norms' reductions, its
    mLSTM kernel's autocast) switched to float64: the exact forecast to hold ours to."""
    ref = copy.deepcopy(ref).double()
    for module in ref.modules():
        if hasattr(module, "force_float32_reductions"):
            module.force_float32_reductions = False
        if hasattr(module, "mlstm_backend"):
            cfg = module.mlstm_backend.config
            module.mlstm_backend.config = dataclasses.replace(cfg, autocast_kernel_dtype="float64")
    return ref


def _errors(ours, theirs, series) -> list[float]:
    """Per series: max |ours - reference| / the std of its target (the series' scale)."""
    out = []
    for a, b, s in zip(ours, theirs, series, strict=True):
        assert a.shape == b.shape
        out.append(float(np.max(np.abs(a - b) / np.nanstd(s.target, axis=1)[:, None, None])))
    return out


# --- the reference's config.json ------------------------------------------------------------


def test_config_json_is_read_as_it_is_and_written_back():
    c = TiRex2Config.from_dict(CONFIG, impl="xla")
    assert [t.time_mixer for t in c.blocks] == ["bi-mlstm", "bi-slstm"]
    assert c.blocks[1].slstm_heads == 2 and c.ffn_dim == 128 and c.head_dim_out == 64
    assert c.to_dict() == CONFIG
    assert TiRex2Config.from_dict(c.to_dict(), impl="xla") == c
    # The reference's runtime knobs are read and change nothing.
    extra = copy.deepcopy(CONFIG) | {"device": "cuda", "matmul_precision": "high"}
    extra["stack_config"]["templates"]["m"]["time_mixer"]["rnn_backend"] = "cuda"
    assert TiRex2Config.from_dict(extra, impl="xla") == c


@pytest.mark.parametrize(
    "path, value, match",
    [
        (("bogus",), 1, "bogus"),
        (("scaler_cfg", "gamma"), 1, "gamma"),
        (("stack_config", "templates", "m", "time_mixer", "kernel"), "x", "kernel"),
        (("stack_config", "templates", "s", "variate_mixer", "embedding_dim"), 64, "contradicts"),
        (("tokenizer_cfg", "input_patch_stride"), 4, "input_patch_stride"),
        (("stack_config", "recipe"), ["m", "s", "m"], "num_blocks"),
        (("act_func",), "Mish", "act_func"),
        (("future_len",), 12, "future_len"),
    ],
)
def test_config_json_rejects_unknown_and_contradictory_fields(path, value, match):
    d = copy.deepcopy(CONFIG)
    node = d
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=match):
        TiRex2Config.from_dict(d)


# --- forecasts and gradients against the reference -------------------------------------------


@pytest.mark.reference
@pytest.mark.parametrize("horizon", [7, FUT])
def test_forecasts_match_the_reference(pair, horizon):
    """Every case of one batch within 1e-5 of its series' scale (float32), both for a
    horizon below and at the future window; at the window also with sign-flip averaging."""
    torch, tirex2, ref, ours = pair
    series = list(SERIES.values())
    assert detect_trends(SERIES["trend (differenced)"].target) == [True]
    flips = [False, True] if horizon == FUT else [False]
    for flip in flips:
        with torch.no_grad():
            theirs = ref.predict(_torch_series(torch, tirex2, series), horizon, tta_sign_flip=flip)
        got = predict(ours, series, horizon, tta_sign_flip=flip)
        errors = dict(zip(SERIES, _errors(got, [t.numpy() for t in theirs], series), strict=True))
        assert max(errors.values()) < TOL["float32"][0], errors


@pytest.mark.reference
def test_gradients_match_torch_autograd(pair):
    """Every parameter's gradient of a random projection of the forecasts, with and without
    series ids (the reference's all-rows attention), in float64: the reference's float32
    casts (its norms' reductions, its mLSTM kernel's autocast) switched to float64 on a
    copy, so the comparison is exact rather than float32 rounding (about 5e-5 there, 4e-4
    for the input-gate bias, whose gradient sums cancelling terms: the reference's own
    float32 error against float64 is three times ours)."""
    torch, _, ref, _ = pair
    ref = _float64(ref)
    with jax.enable_x64(True):
        ours = from_torch(ref, impl="xla", dtype="float64", param_dtype="float64")
        # A univariate series, two targets with past and future covariates, a NaN gap: 8
        # rows (the reference's float64 pass is slow on the whole batch).
        cases = [SERIES[k] for k in ("univariate", "all covariates", "NaN gaps")]
        batch = pack(ours, cases, FUT, tta_diff=False)
        x = batch.x.astype(np.float64)
        rng = np.random.default_rng(3)
        w = rng.normal(size=(2, len(x), 9, CTX + FUT))

        graphdef, state = nnx.split(ours)

        def loss(state):
            m = nnx.merge(graphdef, state)
            a = m(jnp.asarray(x), jnp.asarray(batch.target_mask), jnp.asarray(batch.group))
            b = m(jnp.asarray(x), jnp.asarray(batch.target_mask), None)
            return jnp.sum(a * w[0]) + jnp.sum(b * w[1]), (a, b)

        # XLA's backend optimisations off: half the compile time of this one-off program.
        grad = jax.jit(jax.grad(loss, has_aux=True), compiler_options=_QUICK_COMPILE)
        grads, (a, b) = grad(state)
        got = to_state_dict(nnx.merge(graphdef, grads), dtype=None)
    tx, tm = torch.tensor(x), torch.tensor(batch.target_mask)
    ref_a = ref(
        {"x": tx, "group_vector": torch.tensor(batch.group.astype(np.float64)), "target_mask": tm}
    )
    ref_b = ref({"x": tx, "target_mask": tm})
    ((ref_a * torch.tensor(w[0])).sum() + (ref_b * torch.tensor(w[1])).sum()).backward()
    np.testing.assert_allclose(np.asarray(a), ref_a.detach().numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.asarray(b), ref_b.detach().numpy(), rtol=1e-9, atol=1e-9)
    theirs = {k: p.grad.numpy() for k, p in ref.named_parameters()}  # one name per group
    assert set(got) == set(theirs)
    worst = max((rel_err(got[k], theirs[k]), k) for k in got)
    assert worst[0] < 1e-9, worst


# --- checkpoint folders, both ways ------------------------------------------------------------


@pytest.mark.reference
def test_our_folder_loads_in_the_reference(pair, tmp_path):
    torch, tirex2, _, ours = pair
    other = nnx.clone(ours)  # weights of its own
    rng = np.random.default_rng(5)
    for _, v in nnx.iter_graph(other):
        if isinstance(v, nnx.Param):
            noise = 0.05 * rng.normal(size=v.get_value().shape).astype(np.float32)
            v.set_value(v.get_value() + noise)
    folder = save_folder(other, tmp_path / "ours")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    with torch.compiler.set_stance("force_eager"):
        theirs = tirex2.load_model(str(folder), device="cpu").model
        sd = theirs.state_dict()
        mine = to_state_dict(other, aliases=True)
        assert set(sd) == set(mine)
        for k, v in sd.items():
            np.testing.assert_array_equal(v.numpy(), mine[k], err_msg=k)
        assert config_from_torch(theirs, impl="xla") == other.config
        # Held to the reference's float64 forecast: two float32 forecasts differ by both
        # sides' rounding. Measured on the "NaN gaps" series: ours 5.5e-6 from float64,
        # the reference's float32 5.0e-6 the other way, 1.04e-5 between the two.
        series = list(SERIES.values())
        wide = [Series(*(None if a is None else a.astype(np.float64) for a in s)) for s in series]
        with torch.no_grad():
            want = _float64(theirs).predict(_torch_series(torch, tirex2, wide), FUT)
    errors = _errors(predict(other, series, FUT), [t.numpy() for t in want], series)
    assert max(errors) < TOL["float32"][0], errors


@pytest.mark.reference
def test_reference_folders_load_here(pair, tmp_path):
    """A folder as the reference's writer makes it (safetensors keeps one name per alias
    group) and a legacy one (model-config.yaml and a torch.save model.ckpt holding every
    alias): the same weights exactly; aliases that disagree are refused."""
    torch, _, ref, _ = pair
    import yaml
    from safetensors.torch import save_model

    want = {k: v.numpy() for k, v in ref.state_dict().items()}
    current, legacy = tmp_path / "current", tmp_path / "legacy"
    current.mkdir()
    legacy.mkdir()
    save_model(ref, str(current / "model.safetensors"))
    (current / "config.json").write_text(json.dumps(CONFIG))
    (legacy / "model-config.yaml").write_text(yaml.safe_dump(CONFIG))
    torch.save({"state_dict": ref.state_dict(), "epoch": 3}, legacy / "model.ckpt")
    for folder in (current, legacy):
        got = to_state_dict(load_folder(folder, impl="xla"), aliases=True)
        assert set(got) == set(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{folder.name}: {k}")
    clash = dict(want)
    name = "stack.1.time_mixer.rev_cell.recurrent_kernel"
    clash[name] = clash[name] + 1.0
    with pytest.raises(TiRex2ConversionError, match="alias"):
        from_state_dict(clash, TiRex2Config.from_dict(CONFIG, impl="xla"))


# --- bad input ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain():
    return nnx.eval_shape(lambda: TiRex2(TiRex2Config.from_dict(CONFIG), rngs=nnx.Rngs(0)))


@pytest.mark.parametrize(
    "series, horizon, match",
    [
        ([Series(np.ones((1, 20)))], 0, "prediction_length"),
        ([Series(np.ones((1, 20)))], MAX_HORIZON + 1, "prediction_length"),
        ([Series(np.ones((1, 20)), past_covariates=np.ones((1, 19)))], 4, "past_covariates"),
        ([Series(np.ones((1, 20)), future_covariates=np.ones((1, 23)))], 4, "at least 24"),
        ([Series(np.full((2, 20), np.nan))], 4, "no observed value"),
        ([Series(np.array([[1.0, np.inf]]))], 4, "inf"),
        ([], 4, "non-empty"),
    ],
)
def test_bad_input_is_one_clear_error(plain, series, horizon, match):
    with pytest.raises(ForecastError, match=match):
        predict(plain, series, horizon)


def test_a_folder_without_weights_is_one_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    with pytest.raises(TiRex2CheckpointError, match="model.safetensors"):
        load_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**CONFIG, "bogus": 1}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(TiRex2CheckpointError, match="bogus"):
        load_folder(tmp_path)

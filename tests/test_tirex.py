"""The TiRex forecaster (``xlstm_jax.models.tirex``): parity with ``tirex-ts`` (its ``TiRexZero``,
torch backend, as a test oracle), checkpoint loading, the forecast API on NaN and ragged
contexts, the rollout, the training loss, and bad input.

The reference's torch backend casts the sLSTM's input, recurrent kernel and states to
bfloat16 at every time step (``sLSTMCell._impl_torch``); it is not a float32 model. The
parity tests therefore run it with those casts made float32 (its module's ``torch`` seen
through a proxy whose ``bfloat16`` is ``float32``: no line of it is changed or copied) and
hold ours to float32 tolerances. Against the unmodified bf16 backend the measured
difference is ~6e-4 of the forecasts' scale, the size of bf16 rounding, and it is checked
as such.
"""

from __future__ import annotations

import contextlib
import pickle
import types
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import TOL, rel_err, require_tirex

from xlstm_jax import ForecastError, TiRex, TiRexConfig, convert, load_forecaster
from xlstm_jax.models.tirex.convert import (
    from_state_dict,
    from_torch,
    load_checkpoint,
    read_torch_checkpoint,
    to_state_dict,
)
from xlstm_jax.models.tirex.forecast import forecast, instance_scale, quantile_loss

P = 8
MODEL_CONFIG = dict(
    input_patch_size=P,
    output_patch_size=P,
    quantiles=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
    block_kwargs=dict(embedding_dim=32, num_heads=4, num_blocks=2, ffn_proj_factor=2.6667),
    input_ff_dim=48,
)
CTX = 64  # train_ctx_len: 8 patches


def _contexts(seed=0):
    """Ragged contexts: longer than the window, with a NaN run, shorter than a patch, exact."""
    rng = np.random.default_rng(seed)
    ctxs = [rng.normal(size=n).cumsum() + 5.0 for n in (100, 40, 7, CTX)]
    ctxs[1][5:9] = np.nan
    return ctxs


def _ours(seed=0) -> TiRex:
    cfg = TiRexConfig(
        input_patch_size=P,
        output_patch_size=P,
        embedding_dim=32,
        num_heads=4,
        num_blocks=2,
        input_ff_dim=48,
        train_ctx_len=CTX,
        impl="xla",
    )
    model = TiRex(cfg, rngs=nnx.Rngs(seed))
    # Random weights everywhere (the init leaves the recurrent kernel zero); drawn by numpy,
    # as eager jax.random would compile a program per parameter shape (7 s of CI).
    rng = np.random.default_rng(seed + 1)
    for _, v in nnx.iter_graph(model):
        if isinstance(v, nnx.Param):
            old = v.get_value()
            v.set_value(jnp.asarray(0.3 * rng.standard_normal(old.shape), old.dtype))
    return model


class _Float32Torch(types.ModuleType):
    """``torch`` as the reference cell module sees it, with ``bfloat16`` read as float32."""

    def __init__(self, torch):
        super().__init__("torch")
        self._torch = torch

    def __getattr__(self, name):
        return self._torch.float32 if name == "bfloat16" else getattr(self._torch, name)


@contextlib.contextmanager
def _float32_reference(torch):
    import tirex.models.slstm.cell as cell

    saved = cell.torch
    cell.torch = _Float32Torch(torch)
    try:
        yield
    finally:
        cell.torch = saved


def _reference(torch, seed=0):
    from tirex.models.tirex import TiRexZero

    torch.manual_seed(seed)
    ref = TiRexZero(backend="torch", model_config=MODEL_CONFIG, train_ctx_len=CTX).eval()
    with torch.no_grad():  # its sLSTM parameters start uninitialised (torch.empty)
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim > 1 else 0.5))
    return ref


def _scaled_err(ours, ref) -> float:
    return float(np.abs(np.asarray(ours) - ref).max() / max(1.0, np.abs(ref).max()))


@pytest.mark.reference
@pytest.mark.parametrize("horizon", [8, 5, 20])
def test_forecasts_match_tirex_zero(horizon):
    """One patch, part of a patch, and a 3-patch rollout, for ragged contexts with NaN,
    shorter than a patch and longer than the window."""
    torch, _ = require_tirex()
    ref = _reference(torch)
    model = from_torch(ref, impl="xla")
    ctxs = _contexts()
    with _float32_reference(torch):
        q_ref, mean_ref = ref.forecast(ctxs, prediction_length=horizon, output_type="numpy")
    out = forecast(model, ctxs, horizon)
    assert out.quantiles.shape == q_ref.shape == (4, horizon, 9)
    atol, _ = TOL["float32"]
    assert _scaled_err(out.quantiles, q_ref) < atol
    assert _scaled_err(out.mean, mean_ref) < atol
    # The unmodified backend rounds its sLSTM to bf16 every step: ~6e-4 measured.
    q_bf16, _ = ref.forecast(ctxs, prediction_length=horizon, output_type="numpy")
    assert 1e-5 < _scaled_err(out.quantiles, q_bf16) < TOL["bfloat16"][0] / 4


@pytest.mark.reference
def test_convert_from_torch_takes_tirex_zero():
    """``xlstm_jax.convert.from_torch``, the entry point for every family, builds the
    forecaster from a ``TiRexZero`` (it once read one as a paper xLSTM and failed), with
    every weight the reference's and the overrides applied."""
    torch, _ = require_tirex()
    ref = _reference(torch, seed=2)
    model = convert.from_torch(ref, impl="xla")
    assert isinstance(model, TiRex)
    assert model.config == from_torch(ref, impl="xla").config
    assert model.config.impl == "xla"
    ours = to_state_dict(model)
    theirs = ref.state_dict()
    assert set(ours) == set(theirs)
    for k, v in theirs.items():
        np.testing.assert_array_equal(ours[k], v.numpy(), err_msg=k)


def test_convert_from_torch_names_the_classes_it_takes():
    class NotAModel:
        pass

    with pytest.raises(TypeError, match="no model family converts a NotAModel") as err:
        convert.from_torch(NotAModel())
    for name in ("xLSTMLMModel", "xLSTMBlockStack", "xLSTMLarge", "xLSTMForCausalLM", "TiRexZero"):
        assert name in str(err.value)


@pytest.mark.reference
def test_gradients_match_tirex_zero():
    """Gradients of a random projection of every position's quantiles, per parameter."""
    torch, _ = require_tirex()
    ref = _reference(torch, seed=3)
    model = from_torch(ref, impl="xla")
    rng = np.random.default_rng(3)
    patches = rng.normal(size=(3, 6, P)).astype(np.float32)
    patches[0, :2] = np.nan  # left padding
    patches[1, 3, 2:5] = np.nan
    w = rng.normal(size=(3, 6, 9, P)).astype(np.float32)

    with _float32_reference(torch):
        tokens = torch.tensor(patches)
        pred = ref._forward_model_tokenized(tokens)  # (B, Q, N, P)
        (pred * torch.tensor(w).permute(0, 2, 1, 3)).sum().backward()
    ref_grads = {k: p.grad.numpy() for k, p in ref.named_parameters()}

    def loss(m):
        return jnp.sum(m(jnp.asarray(patches)) * w)

    grads = nnx.jit(nnx.grad(loss))(model)
    holder = nnx.clone(model)
    nnx.update(holder, grads)
    ours = to_state_dict(holder)
    assert set(ours) == set(ref_grads)
    worst = max(rel_err(ours[k], ref_grads[k]) for k in ours)
    assert worst < 1e-4, worst


def test_state_dict_round_trip():
    model = _ours()
    sd = to_state_dict(model)
    again = from_state_dict(sd, model.config)
    # Every parameter back bit for bit (same config, same weights: the same forecaster;
    # comparing forecasts compiled the model twice, 20 s of CI for nothing more).
    back = to_state_dict(again)
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(np.asarray(back[k]), np.asarray(sd[k]), err_msg=k)
    assert nnx.graphdef(again) == nnx.graphdef(model)
    bad = dict(sd)
    bad.pop("out_norm.weight")
    with pytest.raises(ForecastError, match="out_norm.weight"):
        from_state_dict(bad, model.config)
    bad = dict(sd, **{"blocks.5.norm_ffn.weight": sd["out_norm.weight"]})
    with pytest.raises(ForecastError, match="num_blocks"):
        from_state_dict(bad, model.config)


@pytest.mark.reference
def test_checkpoint_loads_like_tirex_ts(tmp_path):
    """A Lightning-style ``model.ckpt`` (what ``tirex.load_model`` reads) loads without
    torch into the same forecaster, bf16 tensors included; tirex-ts reads the same file."""
    torch, _ = require_tirex()
    from tirex.models.tirex import TiRexZero

    ref = _reference(torch, seed=5)
    ckpt = {
        "hyper_parameters": {"model_config": MODEL_CONFIG, "train_ctx_len": CTX},
        # Older checkpoints nest the blocks under block_stack. (tirex-ts renames them).
        "state_dict": {
            (f"block_stack.{k}" if k.startswith("blocks.") else k): v
            for k, v in ref.state_dict().items()
        },
        "epoch": 7,
        "pytorch-lightning_version": "2.5.0",
    }
    path = tmp_path / "model.ckpt"
    torch.save(ckpt, path)
    theirs = TiRexZero.from_pretrained(str(path), backend="torch", device="cpu")
    model = load_forecaster(tmp_path)  # the folder holding model.ckpt
    ctxs = _contexts(1)
    with _float32_reference(torch):
        q_ref, _ = theirs.forecast(ctxs, prediction_length=8, output_type="numpy")
    assert _scaled_err(forecast(model, ctxs, 8).quantiles, q_ref) < TOL["float32"][0]

    ckpt["state_dict"] = {k: v.bfloat16() for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, tmp_path / "bf16.ckpt")
    read = read_torch_checkpoint(tmp_path / "bf16.ckpt")["state_dict"]
    for k, v in ckpt["state_dict"].items():
        np.testing.assert_array_equal(read[k], v.float().numpy())
    x = torch.arange(12.0).reshape(3, 4).t()  # strided views survive
    torch.save({"a": x, "b": x[1:, 1:]}, tmp_path / "views.pt")
    views = read_torch_checkpoint(tmp_path / "views.pt")
    np.testing.assert_array_equal(views["b"], x[1:, 1:].numpy())


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_checkpoint_reader_executes_nothing(tmp_path, capfd):
    path = tmp_path / "evil.ckpt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"state_dict": _Exploit()}))
    with pytest.raises(ForecastError, match="executes\nnothing|executes nothing|does not build"):
        read_torch_checkpoint(path)
    assert "pwned" not in capfd.readouterr().out
    (tmp_path / "notzip.ckpt").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(ForecastError, match="not a PyTorch zip checkpoint"):
        load_checkpoint(tmp_path / "notzip.ckpt")
    with zipfile.ZipFile(tmp_path / "other.ckpt", "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"weights": [1, 2]}))
    with pytest.raises(ForecastError, match="hyper_parameters"):
        load_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(ForecastError, match="no such file or folder"):
        load_forecaster(tmp_path / "missing")


def _assert_same_forecast(got, want, context):
    """Equal up to float32 rounding: XLA does not promise bit-identical results across batch
    shapes (JAX 0.10.2 and 0.12.1 differ by ~1e-6 between a batch of 3 and a batch of 1), so
    the guarantee is TOL float32 relative to the series' scale (its NaN-aware std, >= 1)."""
    atol, rtol = TOL["float32"]
    scale = max(1.0, float(np.nanstd(context)))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale)


def test_ragged_contexts_match_one_by_one_and_the_window():
    model = _ours()
    ctxs = _contexts()
    together = forecast(model, ctxs, 8, batch_size=3)  # a padded last batch
    for i, c in enumerate(ctxs):
        alone = forecast(model, [c], 8)
        _assert_same_forecast(together.quantiles[i], alone.quantiles[0], c)
    # The same call is deterministic, bit for bit.
    np.testing.assert_array_equal(
        forecast(model, ctxs, 8, batch_size=3).quantiles, together.quantiles
    )
    # Beyond the window only the last train_ctx_len values count; short ones are NaN-padded.
    long, cut = forecast(model, [ctxs[0]], 8), forecast(model, [ctxs[0][-CTX:]], 8)
    _assert_same_forecast(long.quantiles, cut.quantiles, ctxs[0][-CTX:])
    padded = np.concatenate([np.full(CTX - 7, np.nan), ctxs[2]])
    _assert_same_forecast(
        forecast(model, [ctxs[2]], 8).quantiles,
        forecast(model, np.stack([padded]), 8).quantiles,
        ctxs[2],
    )
    # Median as the point forecast; a subset of levels in the order asked: the same batches
    # (batch_size) give the same numbers, bit for bit.
    sub = forecast(model, ctxs, 8, quantile_levels=[0.9, 0.1], batch_size=3)
    np.testing.assert_array_equal(sub.quantiles[..., 0], together.quantiles[..., 8])
    np.testing.assert_array_equal(sub.quantiles[..., 1], together.quantiles[..., 0])
    np.testing.assert_array_equal(together.mean, together.quantiles[..., 4])
    assert sub.quantile_levels == (0.9, 0.1)


def test_rollout_appends_a_missing_patch():
    """The second patch of a 2-patch forecast is the one-patch forecast of the context
    followed by a patch of NaN (TiRex does not feed its forecasts back)."""
    model = _ours(2)
    ctx = _contexts(2)[1]
    two = forecast(model, [ctx], 2 * P).quantiles[0]
    first = forecast(model, [ctx], P).quantiles[0]
    second = forecast(model, [np.concatenate([ctx, np.full(P, np.nan)])], P).quantiles[0]
    np.testing.assert_allclose(two[:P], first, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(two[P:], second, rtol=1e-6, atol=1e-6)


def test_instance_scale_by_hand():
    x = jnp.array([[1.0, np.nan, 3.0], [np.nan] * 3, [2.0, 2.0, np.nan]])
    y, st = instance_scale(x)
    np.testing.assert_allclose(st.loc[:, 0], [2.0, 0.0, 2.0])
    np.testing.assert_allclose(st.scale[:, 0], [1.0, 1.0, 2.0 + 1e-5], rtol=1e-6)
    np.testing.assert_allclose(y[0], [-1.0, np.nan, 1.0])


def test_quantile_loss_by_hand():
    """The loss equals the pinball loss of the model's outputs on the observed targets,
    scaled by the inputs' statistics; hidden patches read as missing."""
    model = _ours(4)
    rng = np.random.default_rng(4)
    w = rng.normal(size=(2, 4 * P)).astype(np.float32).cumsum(axis=1)
    w[0, :10] = np.nan  # left padding: inputs and a target partly missing
    w[1, -3:] = np.nan
    hidden = np.zeros((2, 3), bool)
    hidden[1, 1:3] = True
    got = float(nnx.jit(quantile_loss)(model, jnp.asarray(w), jnp.asarray(hidden)))

    inputs, targets = w[:, :-P], w[:, P:]
    loc = np.nanmean(inputs, axis=1, keepdims=True)
    scale = np.sqrt(np.nanmean((inputs - loc) ** 2, axis=1, keepdims=True))
    patches = ((inputs - loc) / scale).reshape(2, 3, P)
    patches[1, 1:3] = np.nan
    pred = np.asarray(nnx.jit(lambda m, x: m(x))(model, jnp.asarray(patches)))  # (2, 3, 9, P)
    y = ((targets - loc) / scale).reshape(2, 3, 1, P)
    levels = np.asarray(model.config.quantiles).reshape(1, 1, 9, 1)
    err = y - pred
    pin = np.maximum(levels * err, (levels - 1) * err)
    want = np.nansum(pin) / (9 * np.sum(~np.isnan(targets)))
    assert got == pytest.approx(want, rel=1e-5)
    grads = nnx.jit(nnx.grad(quantile_loss))(model, jnp.asarray(w), jnp.asarray(hidden))
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_bfloat16_compute_stays_close():
    model = _ours(6)
    ctxs = _contexts(6)
    f32 = forecast(model, ctxs, 8).quantiles
    bf = nnx.clone(model)
    cfg = TiRexConfig(**{**bf.config.__dict__, "dtype": "bfloat16"})
    bf16 = from_state_dict(to_state_dict(model), cfg)
    got = forecast(bf16, ctxs, 8).quantiles
    assert np.isfinite(got).all()
    assert _scaled_err(got, f32) < TOL["bfloat16"][0]


@pytest.mark.parametrize(
    ("contexts", "kwargs", "match"),
    [
        ([], {}, "non-empty list"),
        ([np.array([])], {}, "series 0 is empty"),
        ([np.ones(5), np.full(4, np.nan)], {}, "series 1 has no observed value"),
        ([np.ones((2, 3, 1))], {}, "must be 1-D"),
        ([np.array([1.0, np.inf])], {}, "inf"),
        ([["a", "b"]], {}, "not numeric"),
        ([np.ones(5)], {"prediction_length": 0}, "prediction_length must be >= 1"),
        ([np.ones(5)], {"prediction_length": 2.5}, "must be an int"),
        ([np.ones(5)], {"quantile_levels": [0.25]}, "predicts the levels"),
        ([np.ones(5)], {"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_input_is_named(contexts, kwargs, match):
    model = _ours()
    kwargs = {"prediction_length": 4, **kwargs}
    with pytest.raises(ForecastError, match=match):
        forecast(model, contexts, **kwargs)


def test_config_checks():
    with pytest.raises(ValueError, match="output_patch_size must equal"):
        TiRexConfig(output_patch_size=16)
    with pytest.raises(ValueError, match="include 0.5"):
        TiRexConfig(quantiles=(0.1, 0.9))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        TiRexConfig(train_ctx_len=100)
    assert TiRexConfig().ffn_dim == 1408  # 512 * 2.6667 rounded up to 64, as TiRex's

"""Streaming forecasts (``xlstm_jax.streaming.ForecastStream``) against the one-pass forecast
of the whole history with the stream's frozen scaling (``tirex.forecast.forecast_history``,
``tirex2.history.predict_history``), and those references against the forecasts they must
equal (``tirex.forecast.forecast``, ``tirex2.forecast.predict``).

Tiny random models (E 16, an sLSTM block pair for TiRex, a bi-mLSTM and a bi-sLSTM block
for TiRex-2, patch 4), built abstractly and filled from numpy (no eager initialisation);
one stream per family carries every kind of series, so each reference shape compiles once.
Updates of 3, 4 and 5 steps (two not multiples of the patch) move the patch alignment.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import TOL, tirex2_kwargs

from xlstm_jax.forecasting import Series
from xlstm_jax.layers.config import ForecastError
from xlstm_jax.models.tirex.config import TiRexConfig
from xlstm_jax.models.tirex.forecast import ScaleState, forecast, forecast_history, instance_scale
from xlstm_jax.models.tirex.model import TiRex
from xlstm_jax.models.tirex2 import history as t2h
from xlstm_jax.models.tirex2.config import TiRex2Config
from xlstm_jax.models.tirex2.forecast import predict
from xlstm_jax.models.tirex2.model import TiRex2
from xlstm_jax.streaming import ForecastStream

P, E, CTX, FUT, H = 4, 16, 32, 8, 6
RTOL, ATOL = TOL["float32"]
UPDATES = (3, 4, 6)


def _filled(build, seed: int, std: float):
    """The model ``build()`` makes, every parameter N(0, std^2) drawn by numpy (eager
    initialisation would compile a program per parameter shape)."""
    model = nnx.eval_shape(build)
    rng = np.random.default_rng(seed)
    for _, v in nnx.iter_graph(model):
        if isinstance(v, nnx.Param):
            old = v.get_value()
            v.set_value(jnp.asarray(std * rng.standard_normal(old.shape), old.dtype))
    return model


@pytest.fixture(scope="module")
def tirex() -> TiRex:
    cfg = TiRexConfig(
        input_patch_size=P,
        output_patch_size=P,
        embedding_dim=E,
        num_heads=2,
        num_blocks=2,
        input_ff_dim=24,
        train_ctx_len=CTX,
        impl="xla",
    )
    return _filled(lambda: TiRex(cfg, rngs=nnx.Rngs(0)), 1, 0.3)


@pytest.fixture(scope="module")
def tirex2() -> TiRex2:
    kw = tirex2_kwargs(("bi-mlstm", "bi-slstm"), E=E, heads=4, slstm_heads=2, P=P, ctx=CTX)
    kw |= {"future_len": FUT, "input_ff_dim": 24, "tta_sign_flip": False, "tta_diff": True}
    cfg = TiRex2Config.from_dict(kw)
    cfg = dataclasses.replace(cfg, impl="xla")
    # Smaller weights than TiRex's: 0.3 everywhere saturates TiRex-2's deeper maps.
    return _filled(lambda: TiRex2(cfg, rngs=nnx.Rngs(0)), 2, 0.1)


def _walk(rng, *shape) -> np.ndarray:
    return (rng.normal(size=shape).cumsum(-1) + 10).astype(np.float32)


def _close(got, want, scale) -> None:
    """float32 agreement, absolute error relative to the series' scale."""
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * float(np.max(scale)))


# --- the references -------------------------------------------------------------------------


def test_tirex_reference_is_forecast_one_patch_ahead(tirex):
    """With the window's own scaling, a history left-padded with NaN to the context is
    ``forecast`` for H <= P (one rollout step, no rescaled shift)."""
    rng = np.random.default_rng(0)
    x = np.full((2, CTX), np.nan, np.float32)
    x[0, -13:], x[1, -30:] = _walk(rng, 13), _walk(rng, 30)
    x[1, 8:11] = np.nan
    _, st = instance_scale(jnp.asarray(x))
    got = forecast_history(tirex, x, ScaleState(*map(np.asarray, st)), P)
    want = forecast(tirex, [x[0, -13:], x[1, -30:]], P).quantiles.transpose(0, 2, 1)
    _close(got, want, st.scale)


def _tirex2_series(rng, T: int) -> list[Series]:
    trend = (np.arange(T) * 0.5 + rng.normal(size=T) * 0.3 + 3).astype(np.float32)[None]
    gaps = _walk(rng, 2, T)
    gaps[1, 3:6] = np.nan
    return [
        Series(_walk(rng, 1, T)),  # univariate
        Series(gaps, past_covariates=_walk(rng, 1, T)),  # multivariate, past covariates
        Series(trend),  # differenced (tta_diff)
        Series(_walk(rng, 1, T), _walk(rng, 1, T), _walk(rng, 2, T + H)),  # all covariates
    ]


def test_tirex2_reference_is_predict(tirex2):
    """With each history's own scaling and trend decision, the whole-history pass is
    ``predict(pad_context=False)``."""
    series = _tirex2_series(np.random.default_rng(1), 22)
    rows = [t2h.history_rows(tirex2, s, H, None) for s in series]
    assert [bool(r.is_diff[0]) for r in rows] == [False, False, True, False]
    got = t2h.predict_history(tirex2, rows, H, [t2h.history_scale(tirex2, r) for r in rows])
    want = predict(tirex2, series, H, pad_context=False, tta_sign_flip=False)
    for g, w, s in zip(got, want, series, strict=True):
        _close(g, w, np.nanstd(s.target))


# --- streams against the references ----------------------------------------------------------


def test_tirex_stream_equals_whole_history(tirex):
    """A univariate and a multivariate series (each target row on its own), a NaN run, a
    series left out of the last update: after every update the whole-history forecast."""
    rng = np.random.default_rng(2)
    hist = [_walk(rng, 23), _walk(rng, 2, 23)]
    hist[1][0, 4:7] = np.nan
    stream = ForecastStream(tirex, [hist[0], Series(hist[1])], H, quantile_levels=[0.1, 0.5])
    rows = [hist[0][None], hist[1]]
    for k, u in enumerate((0, *UPDATES)):
        if u:
            new = [_walk(rng, u), Series(_walk(rng, 2, u))]
            if k == len(UPDATES):
                new[0] = None  # nothing new for the first series: lengths differ
            rows = [
                r if n is None else np.concatenate([r, _target(n)], 1)
                for r, n in zip(rows, new, strict=True)
            ]
            out = stream.update(new)
        else:
            out = stream.forecast()
        if u == UPDATES[1]:
            continue  # one reference compile fewer: the next check covers this update
        loc, scale = stream._stream.loc, stream._stream.scale
        # One reference pass per history length.
        x = np.concatenate(rows) if rows[0].shape[1] == rows[1].shape[1] else None
        want = (
            np.split(forecast_history(tirex, x, ScaleState(loc, scale), H), [1])
            if x is not None
            else [
                forecast_history(tirex, r, ScaleState(loc[sl], scale[sl]), H)
                for r, sl in zip(rows, (slice(0, 1), slice(1, 3)), strict=True)
            ]
        )
        for o, w in zip(out, want, strict=True):
            assert o.quantiles.shape == (len(w), 2, H) and o.mean.shape == (len(w), H)
            _close(o.quantiles, w[:, [0, 4]], scale)
            _close(o.mean, w[:, 4], scale)


def _target(n) -> np.ndarray:
    t = n.target if isinstance(n, Series) else n
    return np.atleast_2d(t)


def _grow(s: Series, n: Series) -> Series:
    T = s.target.shape[1]
    past = (
        None
        if s.past_covariates is None
        else np.concatenate([s.past_covariates, n.past_covariates], 1)
    )
    fut = None
    if s.future_covariates is not None:
        fut = np.concatenate([s.future_covariates[:, :T], n.future_covariates], 1)
    return Series(np.concatenate([s.target, n.target], 1), past, fut)


def test_tirex2_stream_equals_whole_history(tirex2):
    """Univariate, several targets with a past covariate and a NaN run, a differenced trend,
    and a series with past and future covariates (recomputed): after every update the
    whole-history forecast with the frozen scaling and trend decision."""
    rng = np.random.default_rng(3)
    series = _tirex2_series(rng, 22)
    stream = ForecastStream(tirex2, [series[0].target[0], *series[1:]], H)
    frozen = [(it["diff"], it["scale"]) for it in stream._stream.items]
    for u in (0, *UPDATES):
        if u:
            new = []
            for s in series:
                t = _walk(rng, len(s.target), u)
                if s is series[2]:  # the trend goes on
                    t = s.target[:, -1:] + 0.5 * np.arange(1, u + 1, dtype=np.float32)
                pc = None if s.past_covariates is None else _walk(rng, 1, u)
                fc = None if s.future_covariates is None else _walk(rng, 2, u + H)
                new.append(Series(t, pc, fc))
            if u == UPDATES[1]:
                new[3] = None  # nothing new for the recomputed series (its pass is kept)
            series = [s if n is None else _grow(s, n) for s, n in zip(series, new, strict=True)]
            out = stream.update(new)
        else:
            out = stream.forecast()
        if 0 < u < UPDATES[-1]:
            continue  # a reference compile per check: the start and the end are checked
        rows = [t2h.history_rows(tirex2, s, H, d) for s, (d, _) in zip(series, frozen, strict=True)]
        want = [None] * len(rows)
        for T in {len(r.x[0]) for r in rows}:  # one reference pass per history length
            idx = [i for i, r in enumerate(rows) if len(r.x[0]) == T]
            got = t2h.predict_history(
                tirex2, [rows[i] for i in idx], H, [frozen[i][1] for i in idx]
            )
            for i, g in zip(idx, got, strict=True):
                want[i] = g
        for o, w, (_, sc), s in zip(out, want, frozen, series, strict=True):
            _close(o.quantiles, w, np.asarray(sc.scale[: len(s.target)]))


def test_tirex2_sign_flip_stream_is_predict(tirex2):
    """With ``tta_sign_flip`` a twin stream runs on the negated series: at the start (the
    history's own scaling) the forecast is ``predict`` with the sign flip."""
    series = _tirex2_series(np.random.default_rng(1), 22)
    stream = ForecastStream(tirex2, series, H, tta_sign_flip=True)
    want = predict(tirex2, series, H, pad_context=False, tta_sign_flip=True)
    for o, w, s in zip(stream.forecast(), want, series, strict=True):
        _close(o.quantiles, w, np.nanstd(s.target))
        _close(o.mean, w[:, tirex2.config.median_index], np.nanstd(s.target))


# --- bad input -------------------------------------------------------------------------------


def test_bad_construction(tirex, tirex2):
    x = np.arange(10.0)
    for model, series, kw, match in [
        (object(), [x], {}, "TiRex and TiRex-2"),
        (tirex, [x], {"prediction_length": 0}, "prediction_length"),
        (tirex, [x], {"quantile_levels": [0.25]}, "quantile_levels"),
        (tirex, [Series(x[None], x[None])], {}, "covariates"),
        (tirex, [], {}, "non-empty"),
        (tirex, [np.array([1.0, np.inf])], {}, "inf"),
        (tirex2, [Series(x[None], future_covariates=np.ones((1, 12)))], {}, "at least 16"),
        (tirex2, [Series(x[None], past_covariates=np.ones((1, 9)))], {}, "past_covariates"),
        (tirex2, [np.full(10, np.nan)], {}, "no observed value"),
    ]:
        with pytest.raises(ForecastError, match=match):
            ForecastStream(model, series, **{"prediction_length": H, **kw})


def test_bad_updates(tirex, tirex2):
    """Each bad update is refused, naming the problem, and changes nothing."""
    x = np.arange(1.0, 11.0)
    x2 = np.stack([x[:2], x[:2]])
    s1 = ForecastStream(tirex, [x / 100, Series(np.stack([x, x]))], H)
    # The shapes of test_tirex2_sign_flip_stream_is_predict's stream: nothing new compiles.
    s2 = ForecastStream(tirex2, _tirex2_series(np.random.default_rng(1), 22), H)
    before = [s1.forecast(), s2.forecast()]
    for stream, new, match in [
        (s1, [x[:2]], "2 series"),
        (s1, x, "one entry per series"),
        (s1, [x[:2], x[None, :2]], "1 variates"),
        (s1, [np.array([np.inf]), None], "inf"),
        (s1, [np.array([1e38]), None], "overflows"),
        (s2, [None, Series(x2), None, None], "past covariates"),
        (s2, [None, Series(x2, x[None, :3]), None, None], "needs 2"),
        (s2, [None, Series(x2[:, :0], x[None, :0]), None, None], "no new step"),
        (s2, [None, Series(x2, x[None, :2], x2), None, None], "future covariates"),
        (s2, [None, None, None, Series(x[None, :2], x[None, :2], x2)], "at least 8"),
        (s2, [x[:2], Series(x2, np.full((1, 2), np.inf)), None, None], "inf"),
    ]:
        with pytest.raises(ForecastError, match=match):
            stream.update(new)
    # A refused update leaves the stream as it was.
    for stream, b in zip((s1, s2), before, strict=True):
        for o, w in zip(stream.forecast(), b, strict=True):
            np.testing.assert_array_equal(o.quantiles, w.quantiles)

"""xLSTM (Beck et al. 2024), xLSTM-7B, the TiRex forecaster and a Transformer baseline in
Flax NNX, on the recurrences of ``pallas_kernels``.

    from flax import nnx
    from xlstm_jax import xLSTMLMModel, xLSTMLMModelConfig, mLSTMBlockConfig
    model = xLSTMLMModel(xLSTMLMModelConfig(mlstm_block=mLSTMBlockConfig(), vocab_size=256,
                                            num_blocks=2, embedding_dim=64), rngs=nnx.Rngs(0))
    logits = model(tokens)                                  # (B, S) int -> (B, S, V) float32
    logits, state = model.with_state(tokens, model.init_state(B))   # and the state after it

    from xlstm_jax import forecast, load_forecaster
    out = forecast(load_forecaster("tirex/model.ckpt"), series, prediction_length=64)
    out[0].quantiles                                        # (V_t, Q, H), out[0].mean (V_t, H)

Layout:

* ``layers/``: the shared pieces: ``config`` (ConfigError, DTYPES, IMPLS, round_up),
  ``init``, ``dense``, ``norms``, ``conv``, ``feedforward`` (the one gated feed-forward),
  ``mlstm`` (the mLSTM cell and its settings), ``slstm`` (the sLSTM layer), ``stack``,
  ``state`` (typed recurrent state), ``sharding`` (logical axes -> mesh).
* ``models/<family>/``: one package per family, ``xlstm`` (the 2024 paper's LM),
  ``xlstm_large`` (xLSTM-7B), ``tirex`` (the forecaster, with ``forecast``) and
  ``transformer`` (the baseline): each with its ``config``, its modules, its ``family``
  (the registry entry) and its conversion from PyTorch and checkpoints.
* ``formats/``: checkpoint files and name maps (no model code).
* ``forecasting``: one API for every forecaster (``load_forecaster``, ``forecast``,
  ``forecast_frame``, ``Series``); ``streaming``: ``ForecastStream``, forecasts updated as
  observations arrive.
* ``registry`` (the families by name), ``convert`` (``from_torch`` for every family's
  reference model), ``generation`` (prefill and decoding), ``forecast_metrics``.

The names below are imported on first use (``import xlstm_jax`` loads no JAX). The flat
module paths of earlier releases (``xlstm_jax.config``, ``xlstm_jax.large``, ...) still
import, with a ``DeprecationWarning`` naming the new path (``xlstm_jax._legacy``).
"""

from __future__ import annotations

import importlib

from xlstm_jax import _legacy

_legacy.install()

_L = "xlstm_jax.layers."
_M = "xlstm_jax.models."

# Public name -> the module that defines it.
_EXPORTS = {
    **dict.fromkeys(
        ("BlockState", "ConvState", "MLSTMState", "SLSTMState", "StackState"), _L + "state"
    ),
    "CausalConv1d": _L + "conv",
    "ConfigError": _L + "config",
    **dict.fromkeys(("Dense", "Embedding", "LinearHeadwiseExpand"), _L + "dense"),
    **dict.fromkeys(("FeedForwardConfig", "GatedFeedForward"), _L + "feedforward"),
    **dict.fromkeys(("LayerNorm", "MultiHeadLayerNorm"), _L + "norms"),
    **dict.fromkeys(("sLSTMLayer", "sLSTMLayerConfig"), _L + "slstm"),
    **dict.fromkeys(
        (
            "mLSTMBlockConfig",
            "mLSTMLayerConfig",
            "sLSTMBlockConfig",
            "xLSTMBlockStackConfig",
            "xLSTMLMModelConfig",
        ),
        _M + "xlstm.config",
    ),
    **dict.fromkeys(("mLSTMBlock", "mLSTMLayer", "sLSTMBlock"), _M + "xlstm.blocks"),
    **dict.fromkeys(("xLSTMBlockStack", "xLSTMLMModel"), _M + "xlstm.model"),
    "xLSTMLargeConfig": _M + "xlstm_large.config",
    "xLSTMLarge": _M + "xlstm_large.model",
    **dict.fromkeys(
        ("PretrainedError", "load_pretrained", "save_pretrained"), _M + "xlstm_large.checkpoint"
    ),
    "TransformerConfig": _M + "transformer.config",
    "TransformerLM": _M + "transformer.model",
    **dict.fromkeys(("ForecastError", "TiRexConfig"), _M + "tirex.config"),
    "TiRex": _M + "tirex.model",
    **dict.fromkeys(("MAX_PREDICTION_LENGTH", "Forecast", "quantile_loss"), _M + "tirex.forecast"),
    **dict.fromkeys(("forecast", "forecast_frame", "load_forecaster"), "xlstm_jax.forecasting"),
    "ForecastStream": "xlstm_jax.streaming",
    **dict.fromkeys(("Series", "SeriesForecast"), "xlstm_jax.forecasting"),
    "TiRex2Config": _M + "tirex2.config",
    "TiRex2": _M + "tirex2.model",
    **dict.fromkeys(("generate", "sample_logits"), "xlstm_jax.generation"),
    **dict.fromkeys(("FAMILY_NAMES", "family", "family_of"), "xlstm_jax.registry"),
    "from_torch": "xlstm_jax.convert",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        # Not cached here: a name patched in its module (tests) reads the same through here.
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if f"{__name__}.{name}" in _legacy.MOVED:  # ``xlstm_jax.large`` read as an attribute
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

"""A TiRex-compatible sLSTM forecaster (Auer et al. 2025, arXiv 2505.23719) and its
forecast API.

The model reads a univariate series in non-overlapping patches of P values and predicts,
at every patch position, the quantiles of the *next* patch:

1. Instance scaling of the context window, NaN-aware: ``loc = nanmean(x)`` (0 when every
   value is missing), ``scale = sqrt(nanmean((x - loc)^2))`` (1 when missing; ``|loc| +
   1e-5`` when 0); ``x' = (x - loc) / scale``.
2. Patches ``(B, N, P)``; each patch is fed as ``[values with NaN -> 0, is-present mask]``
   (2P inputs), so a missing value is told apart from a zero.
3. A residual input embedding ``relu(x W1 + b1) W2 + b2 + (x W3 + b3)``: 2P -> E.
4. ``num_blocks`` sLSTM blocks: ``x + sLSTM(RMSNorm(x))`` then ``x + SwiGLU(RMSNorm(x))``.
   The sLSTM layer has no causal conv; its four gates are block-diagonal (headwise)
   projections, the recurrent matrix mixes each head's previous output into all four gates
   (``pallas_kernels`` ``pk.slstm``: XLA scan or the Pallas kernel), and a per-head group
   norm follows the cell.
5. An output RMSNorm and a residual head E -> Q x P (Q quantile levels), rescaled with the
   window's ``loc`` and ``scale``.

Forecasting follows the reference exactly: the context is cut (or left-padded with NaN) to
``train_ctx_len`` values, the last position's prediction is the next patch, and a longer
horizon is rolled out patch by patch by appending a patch of NaN (the model was trained to
forecast across missing patches) and predicting again on the shifted window. The point
forecast ("mean") is the median, as TiRex returns it.

Shape legend: B batch, L context values, N = L / P patches, P patch size, Q quantile
levels, E embedding dim, H forecast horizon.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xlstm_jax.components import Dense, small_init, wang_init
from xlstm_jax.config import DTYPES, ConfigError, require, sLSTMLayerConfig
from xlstm_jax.large import RMSNorm
from xlstm_jax.slstm import sLSTMLayer

__all__ = [
    "Forecast",
    "ForecastError",
    "TiRex",
    "TiRexConfig",
    "forecast",
    "instance_scale",
    "load_forecaster",
    "quantile_loss",
]

_F32 = jnp.float32
_DEFAULT_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class ForecastError(ValueError):
    """Input that ``forecast`` cannot use; the message names the problem and the fix."""


@dataclass(frozen=True)
class TiRexConfig:
    """The forecaster's shape (TiRex's field names) and our compute knobs.

    The defaults are TiRex's published model (35M parameters): patch 32, 9 quantile
    levels, E 512, 4 heads, 12 blocks, context 2048. ``ffn_proj_factor`` sizes the SwiGLU
    (``E * factor`` rounded up to a multiple of 64); ``input_ff_dim`` is the hidden width of
    the input and output residual blocks; ``nan_mask_value`` replaces missing values in the
    patch inputs. ``dtype`` is the compute dtype of the projections ("bfloat16" for speed;
    the sLSTM cell, norms and scaling stay float32); ``impl`` picks the sLSTM op
    ("auto": the Pallas kernel on a CUDA GPU); ``remat`` recomputes each block in the
    backward pass.
    """

    input_patch_size: int = 32
    output_patch_size: int = 32
    quantiles: tuple[float, ...] = _DEFAULT_QUANTILES
    embedding_dim: int = 512
    num_heads: int = 4
    num_blocks: int = 12
    ffn_proj_factor: float = 2.6667
    input_ff_dim: int = 2048
    train_ctx_len: int = 2048
    nan_mask_value: float = 0.0
    dtype: str = "float32"
    param_dtype: str = "float32"
    impl: Literal["auto", "xla", "pallas"] = "auto"
    remat: bool = False

    def __post_init__(self):
        P = self.input_patch_size
        require(P >= 1, f"TiRexConfig.input_patch_size must be >= 1; got {P}.")
        require(
            self.output_patch_size == P,
            "TiRexConfig.output_patch_size must equal input_patch_size (TiRex predicts the "
            f"next input patch); got {self.output_patch_size} and {P}.",
        )
        q = tuple(float(v) for v in self.quantiles)
        object.__setattr__(self, "quantiles", q)
        require(
            len(q) >= 1 and all(0 < v < 1 for v in q) and list(q) == sorted(set(q)),
            f"TiRexConfig.quantiles must be increasing levels in (0, 1); got {q}.",
        )
        require(
            0.5 in q,
            f"TiRexConfig.quantiles must include 0.5 (the point forecast); got {q}.",
        )
        require(self.embedding_dim >= 1, "TiRexConfig.embedding_dim must be >= 1.")
        require(
            self.num_heads >= 1 and self.embedding_dim % self.num_heads == 0,
            f"TiRexConfig.num_heads={self.num_heads} must divide embedding_dim="
            f"{self.embedding_dim}.",
        )
        require(self.num_blocks >= 1, "TiRexConfig.num_blocks must be >= 1.")
        require(self.ffn_proj_factor > 0, "TiRexConfig.ffn_proj_factor must be > 0.")
        require(self.input_ff_dim >= 1, "TiRexConfig.input_ff_dim must be >= 1.")
        require(
            self.train_ctx_len >= P and self.train_ctx_len % P == 0,
            f"TiRexConfig.train_ctx_len must be a positive multiple of the patch size {P}; "
            f"got {self.train_ctx_len}.",
        )
        require(self.dtype in DTYPES, f"TiRexConfig.dtype must be one of {DTYPES}.")
        require(self.param_dtype in DTYPES, f"TiRexConfig.param_dtype must be one of {DTYPES}.")

    @property
    def patch_size(self) -> int:
        return self.input_patch_size

    @property
    def ffn_dim(self) -> int:
        """The SwiGLU's hidden width: ``E * ffn_proj_factor`` rounded up to 64 (TiRex's)."""
        return int(math.floor((self.embedding_dim * self.ffn_proj_factor + 63) / 64) * 64)

    @property
    def head_dim(self) -> int:
        return self.embedding_dim // self.num_heads

    @classmethod
    def from_dict(cls, d: dict) -> TiRexConfig:
        """A config from our field names (a run's ``config.json``)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(
                f"TiRexConfig: unknown field(s) {unknown}; the fields are {sorted(names)}."
            )
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class ResidualBlock(nnx.Module):
    """``relu(x W_h + b_h) W_o + b_o + (x W_r + b_r)``. x (..., in) -> (..., out)."""

    def __init__(self, in_dim: int, h_dim: int, out_dim: int, *, rngs, dtype, param_dtype):
        kw = dict(use_bias=True, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.hidden_layer = Dense(in_dim, h_dim, kernel_init=small_init(in_dim), **kw)
        self.output_layer = Dense(h_dim, out_dim, kernel_init=small_init(h_dim), **kw)
        self.residual_layer = Dense(in_dim, out_dim, kernel_init=small_init(in_dim), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.output_layer(jax.nn.relu(self.hidden_layer(x))) + self.residual_layer(x)


class SwiGLU(nnx.Module):
    """``proj_down(silu(proj_up_gate(x)) * proj_up(x))``, no biases. x (..., E) -> (..., E)."""

    def __init__(self, E: int, F: int, num_blocks: int, *, rngs, dtype, param_dtype):
        kw = dict(use_bias=False, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.proj_up_gate = Dense(E, F, kernel_init=small_init(E), **kw)
        self.proj_up = Dense(E, F, kernel_init=small_init(E), **kw)
        self.proj_down = Dense(F, E, kernel_init=wang_init(F, num_blocks), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.proj_down(jax.nn.silu(self.proj_up_gate(x)) * self.proj_up(x))


class TiRexBlock(nnx.Module):
    """``x + sLSTM(RMSNorm(x))`` then ``x + SwiGLU(RMSNorm(x))``. x (B, N, E) -> (B, N, E)."""

    def __init__(self, config: TiRexConfig, block_idx: int, *, rngs, dtype, param_dtype):
        c = config
        E = c.embedding_dim
        norm = dict(eps=1e-6, use_bias=False, axes=(None,), dtype=dtype, param_dtype=param_dtype)
        self.norm_slstm = RMSNorm(E, **norm)
        layer = sLSTMLayerConfig(
            embedding_dim=E,
            num_heads=c.num_heads,
            conv1d_kernel_size=0,
            impl=c.impl,
            _num_blocks=c.num_blocks,
            _block_idx=block_idx,
        )
        self.slstm_layer = sLSTMLayer(layer, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.norm_ffn = RMSNorm(E, **norm)
        self.ffn = SwiGLU(
            E, c.ffn_dim, c.num_blocks, rngs=rngs, dtype=dtype, param_dtype=param_dtype
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        y, _ = self.slstm_layer(self.norm_slstm(x))
        x = x + y.astype(x.dtype)
        return x + self.ffn(self.norm_ffn(x)).astype(x.dtype)


class TiRex(nnx.Module):
    """The forecaster. ``model(patches)`` maps scaled patches (B, N, P), NaN where a value
    is missing, to the quantiles of each next patch (B, N, Q, P) in the scaled domain, all
    positions at once (teacher forcing; ``quantile_loss`` trains on this).
    ``forecast(model, ...)`` is the user-facing call.
    """

    def __init__(self, config: TiRexConfig, *, rngs: nnx.Rngs):
        c = self.config = config
        dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        P, E, Q = c.patch_size, c.embedding_dim, len(c.quantiles)
        self.input_patch_embedding = ResidualBlock(2 * P, c.input_ff_dim, E, **kw)
        self.blocks = nnx.List([TiRexBlock(c, i, **kw) for i in range(c.num_blocks)])
        self.out_norm = RMSNorm(
            E, eps=1e-6, use_bias=False, axes=(None,), dtype=dtype, param_dtype=param_dtype
        )
        self.output_patch_embedding = ResidualBlock(E, c.input_ff_dim, Q * P, **kw)

    def hidden_states(self, patches: jax.Array) -> jax.Array:
        """patches (B, N, P) scaled, NaN = missing -> the last block's output (B, N, E)."""
        c = self.config
        present = ~jnp.isnan(patches)
        values = jnp.where(present, patches, c.nan_mask_value)
        x = jnp.concatenate([values, present.astype(values.dtype)], axis=-1)
        h = self.input_patch_embedding(x.astype(_F32))
        for block in self.blocks:
            h = nnx.remat(lambda b, h: b(h))(block, h) if c.remat else block(h)
        return h

    def __call__(self, patches: jax.Array) -> jax.Array:
        """patches (B, N, P) -> quantiles of the next patch at each position (B, N, Q, P)
        float32, in the scaled domain."""
        c = self.config
        B, N, P = patches.shape
        out = self.output_patch_embedding(self.out_norm(self.hidden_states(patches)))
        return out.astype(_F32).reshape(B, N, len(c.quantiles), P)


class ScaleState(NamedTuple):
    """Per-series location and scale of a context window, each (B, 1)."""

    loc: jax.Array
    scale: jax.Array


def instance_scale(x: jax.Array, eps: float = 1e-5) -> tuple[jax.Array, ScaleState]:
    """x (B, L) with NaN -> ((x - loc) / scale (B, L), ``ScaleState``), NaN-aware (see the
    module docstring)."""
    present = ~jnp.isnan(x)
    count = present.sum(-1, keepdims=True)
    safe = jnp.maximum(count, 1)
    loc = jnp.where(count > 0, jnp.where(present, x, 0.0).sum(-1, keepdims=True) / safe, 0.0)
    var = jnp.where(present, jnp.square(x - loc), 0.0).sum(-1, keepdims=True) / safe
    scale = jnp.where(count > 0, jnp.sqrt(var), 1.0)
    scale = jnp.where(scale == 0, jnp.abs(loc) + eps, scale)
    return (x - loc) / scale, ScaleState(loc, scale)


def _next_patches(model: TiRex, context: jax.Array, steps: int) -> jax.Array:
    """context (B, train_ctx_len) float32 -> the next ``steps`` patches' quantiles
    (B, Q, steps * P), rescaled: the reference's rollout, one patch per model call."""
    P = model.config.patch_size

    def one(ctx, _):
        scaled, st = instance_scale(ctx)
        patches = scaled.reshape(ctx.shape[0], -1, P)
        q = model(patches)[:, -1]  # (B, Q, P)
        q = q * st.scale[:, :, None] + st.loc[:, :, None]
        # The next call sees the window shifted by a patch of NaN: TiRex forecasts across
        # missing patches instead of feeding its own forecast back.
        ctx = jnp.concatenate([ctx[:, P:], jnp.full_like(ctx[:, :P], jnp.nan)], axis=1)
        return ctx, q

    _, qs = jax.lax.scan(one, context, None, length=steps)  # (steps, B, Q, P)
    return jnp.moveaxis(qs, 0, 2).reshape(context.shape[0], qs.shape[2], steps * P)


_next_patches_jit = nnx.jit(_next_patches, static_argnums=2)


class Forecast(NamedTuple):
    """``quantiles`` (N, H, Q) and ``mean`` (N, H), float32 numpy; ``quantile_levels`` the
    Q levels in order. The mean is the median (TiRex's point forecast)."""

    quantiles: np.ndarray
    mean: np.ndarray
    quantile_levels: tuple[float, ...]


def context_windows(contexts, length: int) -> np.ndarray:
    """A list of 1-D series (ragged, NaN allowed) or a 2-D array (N, L) -> (N, length)
    float32: each series' last ``length`` values, left-padded with NaN.

    Raises:
      ForecastError: no series, a series that is not 1-D, empty or entirely NaN.
    """
    if isinstance(contexts, np.ndarray | jax.Array) and np.ndim(contexts) == 2:
        contexts = list(np.asarray(contexts))
    elif isinstance(contexts, np.ndarray | jax.Array) and np.ndim(contexts) == 1:
        contexts = [np.asarray(contexts)]
    if not isinstance(contexts, Sequence) or isinstance(contexts, str) or not len(contexts):
        raise ForecastError(
            "contexts must be a non-empty list of 1-D series or a 2-D array (series, time)."
        )
    out = np.full((len(contexts), length), np.nan, np.float32)
    for i, s in enumerate(contexts):
        try:
            a = np.asarray(s, np.float64)
        except (TypeError, ValueError) as e:
            raise ForecastError(f"series {i} is not numeric: {e}") from None
        if a.ndim != 1:
            raise ForecastError(f"series {i} must be 1-D; got shape {a.shape}.")
        if a.size == 0:
            raise ForecastError(f"series {i} is empty: give at least one observed value.")
        if np.isnan(a).all():
            raise ForecastError(
                f"series {i} has no observed value (all {a.size} are NaN): drop it or fill it."
            )
        if np.isinf(a).any():
            raise ForecastError(f"series {i} holds inf; replace it with NaN (missing).")
        a = a[-length:]
        out[i, length - a.size :] = a
    return out


def forecast(
    model: TiRex,
    contexts,
    prediction_length: int,
    quantile_levels: Sequence[float] | None = None,
    batch_size: int = 256,
) -> Forecast:
    """Quantile forecasts of every series, ``prediction_length`` steps ahead.

    Args:
      model: a ``TiRex``.
      contexts: a list of 1-D series of any lengths (NaN = missing; longer than
        ``train_ctx_len`` keeps the last values) or a 2-D array (N, L).
      prediction_length: H >= 1; beyond one patch the forecast is rolled out patch by patch.
      quantile_levels: a subset of the model's levels (None: all of them).
      batch_size: series per compiled call (the last batch is padded, so one shape
        compiles once per horizon).

    Returns:
      ``Forecast`` with quantiles (N, H, Q) and mean (N, H). The same call gives the same
      numbers bit for bit, whatever the subset of levels. A series' forecast does not depend
      on the other series in its batch beyond float32 rounding (about 1e-6 of the series'
      scale): XLA does not promise bit-identical results across batch shapes, so a series
      forecast alone or with a different ``batch_size`` may differ in the last bits.

    Raises:
      ForecastError: a bad series (empty, all NaN, not 1-D), H < 1, a level the model
        does not predict, batch_size < 1.
    """
    c = model.config
    if isinstance(prediction_length, bool) or not isinstance(prediction_length, int | np.integer):
        raise ForecastError(f"prediction_length must be an int >= 1; got {prediction_length!r}.")
    if prediction_length < 1:
        raise ForecastError(f"prediction_length must be >= 1; got {prediction_length}.")
    if batch_size < 1:
        raise ForecastError(f"batch_size must be >= 1; got {batch_size}.")
    levels = c.quantiles if quantile_levels is None else tuple(float(q) for q in quantile_levels)
    missing = [q for q in levels if q not in c.quantiles]
    if missing or not levels:
        raise ForecastError(
            f"quantile_levels {list(levels)}: the model predicts the levels {list(c.quantiles)}; "
            "pick from those."
        )
    idx = [c.quantiles.index(q) for q in levels]
    windows = context_windows(contexts, c.train_ctx_len)
    n = windows.shape[0]
    steps = -(-prediction_length // c.patch_size)
    bs = min(batch_size, n)
    outs = []
    for start in range(0, n, bs):
        chunk = windows[start : start + bs]
        pad = bs - chunk.shape[0]
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, chunk.shape[1]), np.float32)])
        q = _next_patches_jit(model, jnp.asarray(chunk), steps)
        outs.append(np.asarray(q)[: bs - pad])
    q = np.concatenate(outs)[:, :, :prediction_length]  # (N, Q_all, H)
    median = q[:, c.quantiles.index(0.5)]
    return Forecast(np.ascontiguousarray(q[:, idx].transpose(0, 2, 1)), median, levels)


def quantile_loss(model: TiRex, windows: jax.Array, hidden: jax.Array | None = None) -> jax.Array:
    """The training objective: mean pinball loss of every position's next-patch quantiles.

    Args:
      windows: (B, L) float, L a multiple of P, NaN = missing (left padding included).
        Patches 0..N-2 are the inputs, patches 1..N-1 the targets; the scaling comes from
        the inputs only.
      hidden: (B, N - 1) bool or None: input patches to hide (set missing) while their
        targets stay scored: TiRex's contiguous patch masking, which teaches the model to
        forecast across missing patches (the multi-patch rollout).

    Returns:
      A scalar: the pinball loss averaged over the levels and every observed target value,
      in the scaled domain.
    """
    c = model.config
    B, L = windows.shape
    P, Q = c.patch_size, len(c.quantiles)
    inputs, targets = windows[:, :-P], windows[:, P:]
    scaled, st = instance_scale(inputs)
    patches = scaled.reshape(B, -1, P)
    if hidden is not None:
        patches = jnp.where(hidden[:, :, None], jnp.nan, patches)
    pred = model(patches)  # (B, N-1, Q, P)
    y = ((targets - st.loc) / st.scale).reshape(B, -1, 1, P)
    observed = ~jnp.isnan(y)
    levels = jnp.asarray(c.quantiles, _F32).reshape(1, 1, Q, 1)
    err = jnp.where(observed, y, 0.0) - pred
    pinball = jnp.maximum(levels * err, (levels - 1.0) * err)
    total = jnp.sum(jnp.where(observed, pinball, 0.0))
    return total / (Q * jnp.maximum(jnp.sum(observed), 1))


def load_forecaster(path, **overrides) -> TiRex:
    """A ``TiRex`` from a TiRex checkpoint: a ``.ckpt`` file (as ``tirex-ts`` loads it) or a
    folder holding ``model.ckpt``. (A training run folder of ``python -m train.main`` is
    loaded by ``train.runs``.) ``overrides``: our knobs (``dtype``, ``impl``, ...).

    Raises:
      ForecastError: the path is neither, or the file is not a TiRex checkpoint.
    """
    from pathlib import Path

    from xlstm_jax.convert_tirex import load_tirex_checkpoint  # it imports this module

    p = Path(path)
    if p.is_dir() and (p / "model.ckpt").is_file():
        p = p / "model.ckpt"
    if not p.is_file():
        raise ForecastError(
            f"{path}: not a TiRex checkpoint; give a model.ckpt file (or its folder)."
        )
    return load_tirex_checkpoint(p, **overrides)

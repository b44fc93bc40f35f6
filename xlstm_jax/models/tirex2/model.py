"""TiRex-2 (Podest et al. 2026, arXiv 2607.01204) in Flax NNX, as ``tirex-2`` 0.4.0 builds it.

``model(x, target_mask, group)`` is the reference's ``TiRex2.forward`` on the packed rows
of a batch (``xlstm_jax.models.tirex2.forecast`` packs series and post-processes):

1. Known-future covariates: the covariate rows (``~target_mask``) with any value in the
   last ``future_len`` steps (every covariate when the rows are shorter than that).
2. Scaling per row over the whole row, NaN-aware: ``loc = nanmean``, ``scale = nanstd``
   (population, clamped at ``scaler_eps``; an all-NaN row gets 0 and 1); with
   ``binaryaware`` a row of only {0, 1, NaN} keeps loc 0 and scale 1 and skips the
   ``arcsinh`` squashing the other rows get (``use_arcsinh``).
3. Non-overlapping patches of P (left-padded with NaN to a multiple of P), each fed as
   ``[values with NaN -> 0, is-present mask]`` to a residual MLP 2P -> E.
4. ``num_blocks`` blocks, each a time mixer then a variate mixer:

   * time mixer (``BiTimeMixer``): ``h = RMSNorm(x)``; the cell (bi-mLSTM: the xLSTM-7B
     mLSTM layer; bi-sLSTM: the sLSTM layer of ``pk.slstm``) runs forward over every row;
     the *same* cell runs time-reversed over the known-covariate rows, whose two outputs
     are joined by a linear map 2E -> E; ``x + that``, then ``x + SwiGLU(RMSNorm(x))``.
   * variate mixer (``VariateMixer``): at each patch index, attention across the rows of
     one series (``group``) with the mask "same series and not covariate query -> target
     key"; pre-RMSNorm, Q and K RMS-normalised per head, then ``x + MLP(RMSNorm(x))``.
     Rows whose series has one row keep their input (the reference skips them).

5. A final RMSNorm, a residual MLP E -> Q x P, and the inverse scaling (``sinh`` of the
   output clamped to +-20 for the squashed rows, then ``* scale + loc``): every patch
   position predicts the quantiles of the next patch.

Reference behaviour kept for parity (``group=None``): without series ids the reference
attends across *all* rows, mixing series and letting covariates read targets
(``attention_block.py:211``); ``model(x, t, None)`` does the same. Its forecast path always
passes the ids.

Shape legend: R rows (the variates of all series: targets, past and future covariates),
T time steps, N = ceil(T / P) patches, P patch size, E embedding dim, Q quantile levels,
NH heads, D head dim.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

import pallas_kernels as pk
from xlstm_jax.layers.dense import Dense
from xlstm_jax.layers.feedforward import ACTS, GatedFeedForward, ResidualBlock
from xlstm_jax.layers.init import linspace, normal, torch_linear
from xlstm_jax.layers.mlstm import mlstm_cell
from xlstm_jax.layers.norms import HeadwiseLayerNorm, RMSNorm, normalise
from xlstm_jax.layers.slstm import sLSTMLayer, sLSTMLayerConfig
from xlstm_jax.layers.state import MLSTMState
from xlstm_jax.models.tirex2.config import ACT_FUNCS, BlockTemplate, TiRex2Config

__all__ = [
    "BiTimeMixer",
    "MLSTMCell",
    "RowScale",
    "SLSTMCell",
    "TiRex2",
    "TiRex2Block",
    "VariateMixer",
    "apply_scale",
    "patchify",
    "scale_rows",
    "unscale_rows",
    "variate_mask",
]

_F32 = jnp.float32
# The reference's norm epsilons: its xLSTM config default (time mixers, cells) and the
# attention block's ``torch.nn.RMSNorm(eps=1e-6)``; the template's ``eps`` is never read.
_NORM_EPS = 1e-6
_GATE_CAP = 15.0  # the mLSTM gates' soft cap
# The mLSTM runs chunkwise in chunks of 64 as the reference does: the parallel form's
# stabiliser differs where the normaliser's floor ``exp(-m)`` wins (~1e-9 in float64), the
# chunkwise form's is the reference's (equal to 1e-15 in float64).
_CHUNK = 64


def _dense(i: int, o: int, *, bias: bool = False, **kw) -> Dense:
    return Dense(i, o, use_bias=bias, kernel_init=torch_linear(i), bias_init=torch_linear(i), **kw)


class MLSTMCell(nnx.Module):
    """TiRex-2's mLSTM cell (the xLSTM-7B mLSTM layer: no conv, no RoPE). x (B, S, E) and
    the state (None: zeros) -> (y (B, S, E), the state after the last step), y =
    ``out_proj(sigmoid(o) * LayerNorm_per_head(mLSTM(q, k, v, i, f)))`` with q, k of width
    E/2, v and o of width E, per-head gates soft-capped at 15 (float32).

    Initialised as the reference: every map a fresh ``torch.nn.Linear``, the gates' weights
    zero, the input-gate bias N(0, 0.1), the forget-gate bias ``linspace(3, 6)``.
    """

    def __init__(self, E: int, NH: int, *, impl: str, rngs: nnx.Rngs, dtype, param_dtype):
        self.num_heads, self.impl, self.dtype = NH, impl, dtype
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        qk = int(E * 0.5)
        self.q = _dense(E, qk, **kw)
        self.k = _dense(E, qk, **kw)
        self.v = _dense(E, E, **kw)
        self.ogate_preact = _dense(E, E, **kw)
        gate = dict(
            use_bias=True,
            kernel_init=nnx.initializers.zeros,
            rngs=rngs,
            dtype=jnp.promote_types(dtype, _F32),
            param_dtype=param_dtype,
        )
        self.igate_preact = Dense(E, NH, bias_init=normal(0.1), **gate)
        self.fgate_preact = Dense(E, NH, bias_init=linspace(3.0, 6.0), **gate)
        self.multihead_norm = HeadwiseLayerNorm(
            E, eps=_NORM_EPS, use_bias=False, dtype=dtype, param_dtype=param_dtype
        )
        self.out_proj = _dense(E, E, **kw)

    def init_state(self, batch_size: int) -> MLSTMState:
        NH = self.num_heads
        dk, dv = self.q.kernel.shape[1] // NH, self.v.kernel.shape[1] // NH
        return pk.mlstm_zero_state(batch_size, NH, dk, dv, jnp.promote_types(self.dtype, _F32))

    def __call__(self, x: jax.Array, state: MLSTMState | None = None):
        B, S, _ = x.shape
        NH = self.num_heads

        def heads(t):  # (B, S, NH * D) -> (B, NH, S, D)
            return t.reshape(B, S, NH, -1).transpose(0, 2, 1, 3)

        def capped(gate):  # (B, NH, S) float32
            pre = gate(x.astype(jnp.promote_types(x.dtype, _F32)))
            return (_GATE_CAP * jnp.tanh(pre / _GATE_CAP)).swapaxes(1, 2)

        h, state = mlstm_cell(
            heads(self.q(x)),
            heads(self.k(x)),
            heads(self.v(x)),
            capped(self.igate_preact),
            capped(self.fgate_preact),
            state,
            form="chunkwise",
            chunk_size=_CHUNK,
            impl=self.impl,
            eps=1e-6,
        )
        h = self.multihead_norm(h.transpose(0, 2, 1, 3))  # (B, S, E)
        return self.out_proj(jax.nn.sigmoid(self.ogate_preact(x)) * h), state


class SLSTMCell(sLSTMLayer):
    """TiRex-2's sLSTM cell: ``sLSTMLayer`` (no conv; gates i, f, z, o from head-wise
    projections, the recurrent kernel and bias of ``pk.slstm``) with a per-head layer norm
    whose weight multiplies directly (eps 1e-6), as the reference's ``group_norm``.
    x (B, S, E) -> (y (B, S, E), state).

    Our ``igate`` is the input gate; the reference's module *named* ``fgate`` is
    (flashrnn's gate order i, f, z, o): the converter swaps the names.
    """

    def __init__(self, config: sLSTMLayerConfig, *, rngs: nnx.Rngs, dtype, param_dtype):
        super().__init__(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.group_norm = HeadwiseLayerNorm(
            config.embedding_dim,
            eps=_NORM_EPS,
            use_bias=False,
            dtype=dtype,
            param_dtype=param_dtype,
        )


class BiTimeMixer(nnx.Module):
    """``x + mix(cell(h), reversed cell(h))`` with ``h = RMSNorm(x)``, then
    ``x + SwiGLU(RMSNorm(x))``. x (R, N, E) -> (R, N, E).

    ``known`` (R,) bool marks the rows that also get the time-reversed pass of the same
    cell (one set of weights, the reference's ``rev_cell = fwd_cell``); their output is
    ``combination([forward, reverse])``. ``known=None``: no row does (the pass is skipped).
    The reverse pass runs over all rows and keeps the known ones, so shapes stay static
    (twice the cell's work where few rows are known covariates).
    """

    def __init__(
        self, config: TiRex2Config, t: BlockTemplate, block_idx: int, *, rngs, dtype, param_dtype
    ):
        E = config.embedding_dim
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        norm = dict(eps=_NORM_EPS, use_bias=False, dtype=dtype, param_dtype=param_dtype)
        self.norm_lstm = RMSNorm(E, **norm)
        if t.time_mixer == "bi-mlstm":
            self.fwd_cell = MLSTMCell(E, t.num_heads, impl=config.impl, **kw)
        else:
            cell = sLSTMLayerConfig(
                embedding_dim=E,
                num_heads=t.slstm_heads,
                conv1d_kernel_size=0,
                impl=config.impl,
                _num_blocks=config.num_blocks,
                _block_idx=block_idx,
            )
            self.fwd_cell = SLSTMCell(cell, **kw)
        self.combination = _dense(2 * E, E, **kw)
        self.norm_ffn = RMSNorm(E, **norm)
        F = config.ffn_dim
        init = dict(gate_init=torch_linear(E), up_init=torch_linear(E))
        self.ffn = GatedFeedForward(E, F, down_init=torch_linear(F), axes=None, **init, **kw)

    def _cell(self, h: jax.Array) -> jax.Array:
        y = self.fwd_cell(h)
        return y[0] if isinstance(y, tuple) else y

    def __call__(self, x: jax.Array, known: jax.Array | None) -> jax.Array:
        h = self.norm_lstm(x)
        if known is None:
            y = self._cell(h)
        else:
            # One cell call over the rows and their time-reversed copies (rows are
            # independent): half the program of two calls, the same numbers.
            R = h.shape[0]
            y2 = self._cell(jnp.concatenate([h, jnp.flip(h, axis=1)], axis=0))
            y, rev = y2[:R], jnp.flip(y2[R:], axis=1)
            both = self.combination(jnp.concatenate([y, rev], axis=-1))
            y = jnp.where(known[:, None, None], both, y)
        x = x + y.astype(x.dtype)
        return x + self.ffn(self.norm_ffn(x)).astype(x.dtype)

    def step(self, x: jax.Array, state) -> tuple[jax.Array, object]:
        """The forward pass alone (no known covariate) from the cell's ``state``: x (R, N, E)
        -> (x' (R, N, E), the cell's state after the last patch)."""
        y, state = self.fwd_cell(self.norm_lstm(x), state)
        x = x + y.astype(x.dtype)
        return x + self.ffn(self.norm_ffn(x)).astype(x.dtype), state


class _Attention(nnx.Module):
    """Multi-head attention across rows at each patch index. x (R, N, E) and a mask (R, R)
    (query row, key row; True: may attend) -> (R, N, E). Scores ``q k^T / sqrt(D)``;
    with ``qk_norm`` q and k are RMS-normalised per head first (no weight)."""

    def __init__(self, E: int, NH: int, qk_norm: bool, *, rngs, dtype, param_dtype):
        self.num_heads, self.qk_norm = NH, qk_norm
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.WK = _dense(E, E, **kw)
        self.WQ = _dense(E, E, **kw)
        self.WV = _dense(E, E, **kw)
        self.WO = _dense(E, E, **kw)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        R, N, E = x.shape
        NH = self.num_heads
        D = E // NH
        wide = jnp.promote_types(x.dtype, _F32)

        def heads(t):  # (R, N, E) -> (N, NH, R, D) float32
            return t.astype(wide).reshape(R, N, NH, D).transpose(1, 2, 0, 3)

        q, k, v = heads(self.WQ(x)), heads(self.WK(x)), heads(self.WV(x))
        if self.qk_norm:
            # ``F.rms_norm`` without an eps: the machine epsilon of the dtype.
            eps = float(jnp.finfo(wide).eps)
            q, k = normalise(q, eps, center=False), normalise(k, eps, center=False)
        s = jnp.einsum("nhrd,nhsd->nhrs", q, k) / math.sqrt(D)
        p = jax.nn.softmax(jnp.where(mask, s, -jnp.inf), axis=-1)
        o = jnp.einsum("nhrs,nhsd->nhrd", p, v).transpose(2, 0, 1, 3).reshape(R, N, E)
        return self.WO(o)


class _MLP(nnx.Module):
    """``wo(act(wi x))`` without biases: x (..., E) -> (..., E), hidden 4E."""

    def __init__(self, E: int, act: str, *, rngs, dtype, param_dtype):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.act = ACTS[act]
        self.wi = _dense(E, 4 * E, **kw)
        self.wo = _dense(4 * E, E, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.wo(self.act(self.wi(x)))


class VariateMixer(nnx.Module):
    """``x + Attention(RMSNorm(x))`` then ``x + MLP(RMSNorm(x))`` across the rows at each
    patch index. x (R, N, E), mask (R, R) bool, keep (R,) bool -> (R, N, E); rows not kept
    (a series of one row) pass through unchanged."""

    def __init__(self, config: TiRex2Config, t: BlockTemplate, *, rngs, dtype, param_dtype):
        E = config.embedding_dim
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        norm = dict(eps=_NORM_EPS, use_bias=False, dtype=dtype, param_dtype=param_dtype)
        self.norm_attn = RMSNorm(E, **norm)
        self.attn = _Attention(E, t.attention_heads, config.use_qk_norm, **kw)
        self.norm_ffn = RMSNorm(E, **norm)
        self.ffn = _MLP(E, ACT_FUNCS[config.act_func], **kw)

    def __call__(self, x: jax.Array, mask: jax.Array, keep: jax.Array) -> jax.Array:
        y = x + self.attn(self.norm_attn(x), mask).astype(x.dtype)
        y = y + self.ffn(self.norm_ffn(y)).astype(x.dtype)
        return jnp.where(keep[:, None, None], y, x)


class TiRex2Block(nnx.Module):
    """A time mixer, then a variate mixer. x (R, N, E) -> (R, N, E)."""

    def __init__(self, config: TiRex2Config, block_idx: int, *, rngs, dtype, param_dtype):
        t = config.blocks[block_idx]
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.time_mixer = BiTimeMixer(config, t, block_idx, **kw)
        self.variate_mixer = VariateMixer(config, t, **kw)

    def __call__(self, x, known, mask, keep):
        return self.variate_mixer(self.time_mixer(x, known), mask, keep)

    def step(self, x, state, mask, keep):
        """``__call__`` without known covariates from the cell's ``state`` -> (x', state)."""
        x, state = self.time_mixer.step(x, state)
        return self.variate_mixer(x, mask, keep), state


def variate_mask(group: jax.Array | None, target_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The variate mixer's (mask (R, R), keep (R,)) from series ids ``group`` (R,) and
    ``target_mask`` (R,): same series and not covariate -> target; a row is kept when its
    series has another row. ``group=None``: every row attends to every row (the
    reference's behaviour without ids)."""
    R = target_mask.shape[0]
    if group is None:
        return jnp.ones((R, R), bool), jnp.ones((R,), bool)
    same = group[:, None] == group[None, :]
    covariate_to_target = ~target_mask[:, None] & target_mask[None, :]
    return same & ~covariate_to_target, same.sum(axis=1) > 1


class TiRex2(nnx.Module):
    """The forecaster. ``model(x, target_mask, group)``: the packed rows x (R, T) (raw
    values, NaN = missing or future), ``target_mask`` (R,) bool (True: a target row),
    ``group`` (R,) int series ids or None -> quantiles (R, Q, N * P) on the rows' scale
    (float32; float64 for a float64 model); position ``n * P + j`` holds step j of the
    patch after patch n. ``reverse_pass`` (static) False promises that no row is a known
    covariate and skips the reverse passes.
    ``forecast.predict`` (``xlstm_jax.models.tirex2.forecast``) is the user-facing call.
    """

    def __init__(self, config: TiRex2Config, *, rngs: nnx.Rngs):
        c = self.config = config
        dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        P, E, Q = c.patch_size, c.embedding_dim, len(c.quantiles)
        act = ACTS[ACT_FUNCS[c.act_func]]
        self.input_patch_embedding = ResidualBlock(
            2 * P, c.input_ff_dim, E, act=act, init="torch", **kw
        )
        self.stack = nnx.List([TiRex2Block(c, i, **kw) for i in range(c.num_blocks)])
        self.stack_out_norm = (
            None
            if c.stack_out_norm == "none"
            else RMSNorm(
                E, eps=c.stack_out_norm_eps, use_bias=False, dtype=dtype, param_dtype=param_dtype
            )
        )
        self.output_patch_embedding = ResidualBlock(
            E, c.head_dim_out, Q * P, act=act, init="torch", **kw
        )

    def known_covariates(self, x: jax.Array, target_mask: jax.Array) -> jax.Array:
        """(R,) bool: the covariate rows with a value in the last ``future_len`` steps (all
        covariate rows when T < ``future_len``), which get the reverse passes."""
        F = self.config.future_len
        if x.shape[1] < F:
            return ~target_mask
        return ~jnp.all(jnp.isnan(x[:, -F:]), axis=-1) & ~target_mask

    def _embed(self, patches: jax.Array) -> jax.Array:
        """Scaled patches (R, N, P), NaN = missing -> tokens embedded (R, N, E)."""
        wide = jnp.promote_types(self.config.dtype, _F32)
        present = ~jnp.isnan(patches)
        tokens = jnp.concatenate([jnp.where(present, patches, 0.0), present.astype(wide)], -1)
        return self.input_patch_embedding(tokens)

    def _head(self, h: jax.Array) -> jax.Array:
        if self.stack_out_norm is not None:
            h = self.stack_out_norm(h)
        return self.output_patch_embedding(h).astype(jnp.promote_types(self.config.dtype, _F32))

    def init_state(self, rows: int) -> tuple:
        """Every block's forward-cell zero state (fresh rows), for ``step``."""
        return tuple(b.time_mixer.fwd_cell.init_state(rows) for b in self.stack)

    def step(
        self, patches: jax.Array, target_mask: jax.Array, group: jax.Array | None, state: tuple
    ) -> tuple[jax.Array, tuple]:
        """The causal part of the model from ``state``: scaled patches (R, N, P) (NaN =
        missing), ``target_mask`` (R,), ``group`` (R,) and the forward cells' states after
        the earlier patches -> (quantiles of each next patch (R, N, Q * P), scaled domain;
        the states after the last patch). With no known covariate (their reverse pass is not
        causal) pieces equal one ``scaled_forecast(..., reverse_pass=False)`` up to float32
        rounding (``xlstm_jax.streaming``)."""
        h = self._embed(patches)
        mask, keep = variate_mask(group, target_mask)
        new = []
        for block, st in zip(self.stack, state, strict=True):
            h, st = block.step(h, st, mask, keep)
            new.append(st)
        return self._head(h), tuple(new)

    def scaled_forecast(
        self,
        x: jax.Array,
        target_mask: jax.Array,
        group: jax.Array | None = None,
        *,
        reverse_pass: bool = True,
        scale: RowScale | None = None,
    ) -> tuple[jax.Array, RowScale]:
        """The same as ``__call__`` before the inverse scaling: (quantiles (R, N, Q * P) in
        the scaled domain, the rows' ``RowScale``). ``scale`` given: used instead of the
        rows' own (``apply_scale``; a frozen scaling)."""
        c = self.config
        wide = jnp.promote_types(c.dtype, _F32)  # float32, or float64 for a float64 model
        x = x.astype(wide)
        known = self.known_covariates(x, target_mask) if reverse_pass else None
        if scale is None:
            scaled, st = scale_rows(x, c)
        else:
            scaled, st = apply_scale(x, scale, c), scale
        h = self._embed(patchify(scaled, c.patch_size))  # (R, N, E)
        mask, keep = variate_mask(group, target_mask)
        for block in self.stack:
            h = block(h, known, mask, keep)
        return self._head(h), st

    def __call__(
        self,
        x: jax.Array,
        target_mask: jax.Array,
        group: jax.Array | None = None,
        *,
        reverse_pass: bool = True,
        scale: RowScale | None = None,
    ) -> jax.Array:
        c = self.config
        out, st = self.scaled_forecast(
            x, target_mask, group, reverse_pass=reverse_pass, scale=scale
        )
        R, N, _ = out.shape
        P, Q = c.patch_size, len(c.quantiles)
        out = out.reshape(R, N, Q, P).transpose(0, 2, 1, 3).reshape(R, Q, N * P)
        return unscale_rows(out, st, c)


class RowScale(NamedTuple):
    """Each row's ``loc`` (R, 1), ``scale`` (R, 1) and ``binary`` (R, 1) bool (left
    unscaled and unsquashed), from ``scale_rows``."""

    loc: jax.Array
    scale: jax.Array
    binary: jax.Array


def scale_rows(x: jax.Array, c: TiRex2Config) -> tuple[jax.Array, RowScale]:
    """x (R, T) float32 with NaN -> (scaled (R, T), ``RowScale``): the reference's scaler
    (module docstring, step 2)."""
    present = ~jnp.isnan(x)
    count = present.sum(-1, keepdims=True)
    safe = jnp.maximum(count, 1)
    loc = jnp.where(count > 0, jnp.where(present, x, 0.0).sum(-1, keepdims=True) / safe, 0.0)
    var = jnp.where(present, jnp.square(x - loc), 0.0).sum(-1, keepdims=True) / safe
    scale = jnp.maximum(jnp.where(count > 0, jnp.sqrt(var), 1.0), c.scaler_eps)
    if c.binaryaware:
        binary = jnp.all((x == 0.0) | (x == 1.0) | ~present, axis=-1, keepdims=True)
        loc, scale = jnp.where(binary, 0.0, loc), jnp.where(binary, 1.0, scale)
    else:
        binary = jnp.zeros_like(count, bool)
    st = RowScale(loc, scale, binary)
    return apply_scale(x, st, c), st


def apply_scale(x: jax.Array, st: RowScale, c: TiRex2Config) -> jax.Array:
    """x (R, T) -> scaled (R, T) with a given ``RowScale`` (R, 1) each: the second half of
    ``scale_rows`` (``xlstm_jax.streaming``'s frozen scaling)."""
    y = (x - st.loc) / st.scale
    if c.use_arcsinh:
        y = jnp.where(st.binary, y, jnp.arcsinh(y))
    return y


def unscale_rows(y: jax.Array, st: RowScale, c: TiRex2Config) -> jax.Array:
    """y (R, Q, L) in the scaled domain -> the rows' scale (the inverse of ``scale_rows``,
    ``sinh`` of y clamped to +-20 so it stays finite)."""
    loc, scale, binary = (a[:, :, None] for a in st)
    if c.use_arcsinh:
        y = jnp.where(binary, y, jnp.sinh(jnp.clip(y, -20.0, 20.0)))
    return y * scale + loc


def patchify(x: jax.Array, P: int) -> jax.Array:
    """x (R, T) -> (R, ceil(T / P), P), left-padded with NaN to a multiple of P."""
    pad = -x.shape[1] % P
    if pad:
        x = jnp.pad(x, ((0, 0), (pad, 0)), constant_values=jnp.nan)
    return x.reshape(x.shape[0], -1, P)

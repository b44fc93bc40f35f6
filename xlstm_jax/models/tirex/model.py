"""A TiRex-compatible sLSTM forecaster (Auer et al. 2025, arXiv 2505.23719).

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

Shape legend: B batch, L context values, N = L / P patches, P patch size, Q quantile
levels, E embedding dim, H forecast horizon.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xlstm_jax.layers.feedforward import GatedFeedForward, ResidualBlock
from xlstm_jax.layers.init import wang_init
from xlstm_jax.layers.norms import RMSNorm
from xlstm_jax.layers.slstm import sLSTMLayer, sLSTMLayerConfig
from xlstm_jax.layers.state import BlockState
from xlstm_jax.models.tirex.config import TiRexConfig

__all__ = ["ResidualBlock", "TiRex", "TiRexBlock"]

_F32 = jnp.float32


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
        # TiRex's SwiGLU: no biases, no logical axes, a small-init gate.
        self.ffn = GatedFeedForward(
            E,
            c.ffn_dim,
            down_init=wang_init(c.ffn_dim, c.num_blocks),
            axes=None,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        y, _ = self.slstm_layer(self.norm_slstm(x))
        x = x + y.astype(x.dtype)
        return x + self.ffn(self.norm_ffn(x)).astype(x.dtype)

    def step(self, x: jax.Array, state: BlockState) -> tuple[jax.Array, BlockState]:
        """``__call__`` continuing from ``state`` (the sLSTM's): x (B, N, E) -> (x' (B, N, E),
        the state after the last patch)."""
        y, state = self.slstm_layer(self.norm_slstm(x), state)
        x = x + y.astype(x.dtype)
        return x + self.ffn(self.norm_ffn(x)).astype(x.dtype), state


class TiRex(nnx.Module):
    """The forecaster. ``model(patches)`` maps scaled patches (B, N, P), NaN where a value
    is missing, to the quantiles of each next patch (B, N, Q, P) in the scaled domain, all
    positions at once (teacher forcing; ``quantile_loss`` trains on this).
    ``forecast(model, ...)`` (``xlstm_jax.models.tirex.forecast``) is the user-facing call.
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

    def _tokens(self, patches: jax.Array) -> jax.Array:
        present = ~jnp.isnan(patches)
        values = jnp.where(present, patches, self.config.nan_mask_value)
        return jnp.concatenate([values, present.astype(values.dtype)], axis=-1).astype(_F32)

    def init_state(self, batch_size: int) -> tuple[BlockState, ...]:
        """The zero state of every block's sLSTM (a fresh series), for ``step``."""
        return tuple(b.slstm_layer.init_state(batch_size) for b in self.blocks)

    def step(
        self, patches: jax.Array, state: tuple[BlockState, ...]
    ) -> tuple[jax.Array, tuple[BlockState, ...]]:
        """``__call__`` continuing from ``state``: patches (B, N, P) scaled, NaN = missing,
        and the blocks' states after the earlier patches -> (quantiles of each next patch
        (B, N, Q, P) float32 in the scaled domain, the states after the last patch). Running
        a series in pieces equals one ``__call__`` on it (float32 rounding): the model is
        causal over patches (``xlstm_jax.streaming`` carries the state)."""
        B, N, P = patches.shape
        h = self.input_patch_embedding(self._tokens(patches))
        new = []
        for block, st in zip(self.blocks, state, strict=True):
            h, st = block.step(h, st)
            new.append(st)
        out = self.output_patch_embedding(self.out_norm(h))
        return out.astype(_F32).reshape(B, N, len(self.config.quantiles), P), tuple(new)

    def next_patch(self, patches: jax.Array) -> jax.Array:
        """patches (B, N, P) -> quantiles of the patch after the last (B, Q, P) float32, in
        the scaled domain: ``self(patches)[:, -1]`` with the output head run on the last
        position only (what a forecast reads; the head over every position was about 5% of
        a TiRex-sized forecast on a CPU)."""
        c = self.config
        h = self.hidden_states(patches)[:, -1]
        out = self.output_patch_embedding(self.out_norm(h))
        return out.astype(_F32).reshape(patches.shape[0], len(c.quantiles), c.patch_size)

    def __call__(self, patches: jax.Array) -> jax.Array:
        """patches (B, N, P) -> quantiles of the next patch at each position (B, N, Q, P)
        float32, in the scaled domain."""
        c = self.config
        B, N, P = patches.shape
        out = self.output_patch_embedding(self.out_norm(self.hidden_states(patches)))
        return out.astype(_F32).reshape(B, N, len(c.quantiles), P)

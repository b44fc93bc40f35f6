"""The sLSTM layer (scalar memory with recurrent head-wise mixing) and its config, shared
by the paper model's sLSTM blocks and TiRex.

Shape legend: B batch, S sequence, E embedding dim, NH heads, DH = E / NH, G = 4 gates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

import pallas_kernels as pk
from xlstm_jax.layers.config import IMPLS, require
from xlstm_jax.layers.conv import CausalConv1d
from xlstm_jax.layers.dense import LinearHeadwiseExpand
from xlstm_jax.layers.init import small_init
from xlstm_jax.layers.norms import MultiHeadLayerNorm
from xlstm_jax.layers.sharding import param, shard_op
from xlstm_jax.layers.state import BlockState, SLSTMState

__all__ = [
    "SLSTM_BIAS_INITS",
    "SLSTM_FUNCTIONS",
    "check_slstm_impl",
    "sLSTMLayer",
    "sLSTMLayerConfig",
]

SLSTM_FUNCTIONS = ("slstm", "lstm")
SLSTM_BIAS_INITS = ("powerlaw_blockdependent", "small_init", "standard", "zeros")


def check_slstm_impl(owner: str, impl: str) -> None:
    """Rejects ``impl="mosaic"`` for an sLSTM (``owner`` names the config): the Mosaic GPU
    kernel exists for the mLSTM's chunkwise form only.

    Raises:
      ConfigError: naming the field and the fix.
    """
    require(
        impl != "mosaic",
        f"{owner}.impl='mosaic': the sLSTM has no Mosaic GPU kernel; use impl='pallas' (its "
        "Triton kernel), 'auto' or 'xla'.",
    )


@dataclass(frozen=True)
class sLSTMLayerConfig:
    """sLSTM layer: causal conv, four headwise gate projections, sLSTM cell, group norm.

    ``impl`` picks the XLA scan or the Pallas kernel ("auto": the kernel on a CUDA GPU).
    (The reference's ``backend`` chose its CUDA or vanilla kernel; the layout of a
    reference checkpoint's weights is an argument of ``xlstm_jax.convert`` instead.)
    """

    embedding_dim: int = -1
    num_heads: int = 4
    conv1d_kernel_size: int = 4
    group_norm_weight: bool = True
    dropout: float = 0.0
    # Cell fields (the reference's sLSTMCellConfig).
    function: Literal["slstm", "lstm"] = "slstm"
    bias_init: Literal["powerlaw_blockdependent", "small_init", "standard", "zeros"] = (
        "powerlaw_blockdependent"
    )
    recurrent_weight_init: Literal["zeros", "standard"] = "zeros"
    impl: Literal["auto", "xla", "pallas", "mosaic"] = "auto"
    _num_blocks: int = 1
    _block_idx: int = 0

    @property
    def hidden_size(self) -> int:
        return self.embedding_dim

    @property
    def head_dim(self) -> int:
        return self.embedding_dim // self.num_heads

    def validate(self) -> None:
        """Checks that need ``embedding_dim`` (run once it is known)."""
        require(self.embedding_dim > 0, "sLSTMLayerConfig.embedding_dim must be > 0.")
        require(
            self.embedding_dim % self.num_heads == 0,
            f"sLSTMLayerConfig.num_heads={self.num_heads} must divide embedding_dim="
            f"{self.embedding_dim}.",
        )

    def __post_init__(self):
        require(self.num_heads >= 1, "sLSTMLayerConfig.num_heads must be >= 1.")
        require(self.conv1d_kernel_size >= 0, "sLSTMLayerConfig.conv1d_kernel_size must be >= 0.")
        require(
            self.function in SLSTM_FUNCTIONS,
            f"sLSTMLayerConfig.function must be one of {SLSTM_FUNCTIONS}; got {self.function!r}.",
        )
        require(
            self.bias_init in SLSTM_BIAS_INITS,
            f"sLSTMLayerConfig.bias_init {self.bias_init!r} is unknown; use one of "
            f"{SLSTM_BIAS_INITS}.",
        )
        require(
            self.recurrent_weight_init in ("zeros", "standard"),
            f"sLSTMLayerConfig.recurrent_weight_init {self.recurrent_weight_init!r} is unknown; "
            "use 'zeros' or 'standard'.",
        )
        require(
            self.impl in IMPLS,
            f"sLSTMLayerConfig.impl must be one of {IMPLS}; got {self.impl!r}.",
        )
        check_slstm_impl("sLSTMLayerConfig", self.impl)
        require(0.0 <= self.dropout < 1.0, "sLSTMLayerConfig.dropout must be in [0, 1).")
        if self.embedding_dim > 0:
            self.validate()


# Logical axes of the cell's operands: heads and batch are independent.
_UNIT = ("batch", "heads", None)


def _bias_init(config: sLSTMLayerConfig) -> jax.Array:
    """Gate biases (NH, 4, DH) by ``bias_init`` (gate order i, f, z, o)."""
    NH, DH = config.num_heads, config.head_dim
    b = jnp.zeros((NH, 4, DH), jnp.float32)
    if config.bias_init == "powerlaw_blockdependent":
        # Forget bias spread over a power law whose exponent grows with depth.
        ratio = config._block_idx / (config._num_blocks - 1) if config._num_blocks > 1 else 0.0
        pos = jnp.arange(DH, dtype=jnp.float32) / max(DH - 1, 1)
        fb = -(-5.0 + 12.0 * pos ** (0.3 + 1.3 * ratio))
        b = b.at[:, 1].set(fb)
    elif config.bias_init == "small_init":
        b = b.at[:, 1].set(jnp.linspace(3.0, 6.0, DH))
    return b


class sLSTMLayer(nnx.Module):
    """x (B, S, E) -> (y (B, S, E), new state): conv, headwise gate projections, sLSTM cell,
    group norm. The state is a ``BlockState`` (conv buffer or None, ``SLSTMState``).

    Our ``igate`` feeds the cell's input gate and ``fgate`` its forget gate. (The reference
    swaps the two *names*; ``xlstm_jax.convert`` maps them.)
    """

    def __init__(
        self,
        config: sLSTMLayerConfig,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        config.validate()
        self.config, self.dtype = config, dtype
        E, NH, DH = config.embedding_dim, config.num_heads, config.head_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1d = (
            CausalConv1d(E, config.conv1d_kernel_size, **kw)
            if config.conv1d_kernel_size > 0
            else None
        )
        for name in ("igate", "fgate", "zgate", "ogate"):
            gate = LinearHeadwiseExpand(
                E, NH, bias=False, init=small_init(E), head_axis="heads", **kw
            )
            setattr(self, name, gate)
        if config.recurrent_weight_init == "zeros":
            R = jnp.zeros((NH, DH, 4, DH), param_dtype)
        else:
            bound = 1.0 / math.sqrt(E)
            R = jax.random.uniform(rngs.params(), (NH, DH, 4, DH), param_dtype, -bound, bound)
        self.recurrent_kernel = param(R, ("heads", None, None, None))  # (NH, DH_in, 4, DH_out)
        if config.bias_init == "standard":
            bound = 1.0 / math.sqrt(E)
            bias = jax.random.uniform(rngs.params(), (NH, 4, DH), jnp.float32, -bound, bound)
        else:
            # Computed op by op even inside the jitted initialisation of the train state:
            # fused, XLA would contract the product and the sum into one FMA (one rounding
            # fewer), and the weights of a seed would depend on how they were built.
            with jax.ensure_compile_time_eval():
                bias = _bias_init(config)
        self.bias = param(bias.astype(param_dtype), ("heads", None, None))  # (NH, 4, DH)
        self.group_norm = MultiHeadLayerNorm(
            NH, DH, weight=config.group_norm_weight, dtype=dtype, param_dtype=param_dtype
        )
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs) if config.dropout > 0 else None

    def init_state(self, batch_size: int) -> BlockState:
        c = self.config
        return BlockState(
            conv=None if self.conv1d is None else self.conv1d.init_state(batch_size),
            cell=pk.slstm_zero_state(batch_size, c.num_heads, c.head_dim),
        )

    def _gates(self, x_c: jax.Array, x: jax.Array) -> jax.Array:
        """The four headwise gate projections (i and f of the conv's output x_c, z and o of
        x), each (B, S, E) -> gates (B, S, 4, NH, DH).

        Computed as one head-batched matmul per input, heads leading: (NH, B S, DH) times
        the gates' weights side by side (NH, DH, k DH). Four separate ``LinearHeadwiseExpand``
        calls and a stack gave the same numbers bit for bit at about twice the time on a
        CPU (TiRex's shape: 5.4 against 2.4 ms); heads leading is the layout the cell's scan
        reads, so XLA merges the transposes on the way.
        """
        c = self.config
        B, S, _ = x.shape
        NH, DH = c.num_heads, c.head_dim

        def project(inp, gates):
            w = jnp.stack([g.weight[...].astype(self.dtype) for g in gates])  # (k, NH, O, D)
            w = jnp.transpose(w, (1, 3, 0, 2)).reshape(NH, DH, len(gates) * DH)
            xh = jnp.swapaxes(inp.reshape(B * S, NH, DH), 0, 1)  # (NH, B S, DH)
            return jnp.einsum("hnd,hdk->hnk", xh, w).reshape(NH, B, S, len(gates), DH)

        if x_c is x:
            y = project(x, (self.igate, self.fgate, self.zgate, self.ogate))
        else:
            y = jnp.concatenate(
                [project(x_c, (self.igate, self.fgate)), project(x, (self.zgate, self.ogate))],
                axis=3,
            )
        return jnp.transpose(y, (1, 2, 3, 0, 4))

    def __call__(
        self, x: jax.Array, state: BlockState | None = None
    ) -> tuple[jax.Array, BlockState]:
        """x (B, S, E) and the state (None: zeros) -> (y (B, S, E), the new state)."""
        c = self.config
        B, S, E = x.shape
        conv_state = None
        x_c = x = x.astype(self.dtype)
        if self.conv1d is not None:
            x_c, conv_state = self.conv1d(x, None if state is None else state.conv)
            x_c = jax.nn.silu(x_c)
        gates = self._gates(x_c, x)

        def cell(gates, R, b, *state):
            y, last = pk.slstm(
                gates,
                R,
                b,
                initial_state=SLSTMState(*state) if state else None,
                return_last_state=True,
                function=c.function,
                impl=c.impl,
            )
            return y, tuple(last)

        args = (gates, self.recurrent_kernel[...], self.bias[...])
        in_axes = [
            ("batch", None, None, "heads", None),
            ("heads", None, None, None),
            ("heads", None, None),
        ]
        if state is not None:
            args += tuple(state.cell)
            in_axes += [_UNIT] * 4
        y, cell_state = shard_op(
            cell, args, in_axes, (("batch", None, "heads", None), (_UNIT,) * 4)
        )
        if self.dropout is not None:
            y = self.dropout(y)
        y = self.group_norm(y).reshape(B, S, E)
        return y, BlockState(conv=conv_state, cell=SLSTMState(*cell_state))

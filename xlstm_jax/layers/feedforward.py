"""The one gated feed-forward of every family: ``down(act(gate(x)) * up(x))``.

The families differ only in names, initialisation and layout, which are arguments here, so
each keeps its attribute paths (and with them its checkpoints and conversion name maps):

=================  ==========================  ==========  =========================
family             weights                     act         gate init
=================  ==========================  ==========  =========================
paper xLSTM        ``proj_up`` [gate | up],    config      (fused with up: small)
                   ``proj_down``
xLSTM-7B           ``proj_up_gate``,           silu        zeros
                   ``proj_up``, ``proj_down``
TiRex              as the 7B                   silu        small init
Transformer        ``gate_up`` [gate | up],    silu        (fused with up: small)
                   ``ffn_down`` (on the block)
=================  ==========================  ==========  =========================

``ResidualBlock`` is the forecasters' residual MLP (TiRex's and TiRex-2's patch embedding
and output head).

Shape legend: B batch, S sequence, E embedding dim, F hidden width.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from xlstm_jax.layers.config import ACT_FNS, require, round_up
from xlstm_jax.layers.dense import Dense
from xlstm_jax.layers.init import small_init, torch_linear, wang_init
from xlstm_jax.layers.sharding import Axes

__all__ = ["ACTS", "MLP_AXES", "FeedForwardConfig", "GatedFeedForward", "ResidualBlock"]

ACTS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # torch's default GELU is exact
    "relu": jax.nn.relu,
    "relu^2": lambda x: jnp.square(jax.nn.relu(x)),
    "sigmoid": jax.nn.sigmoid,
    "swish": jax.nn.silu,
    "selu": jax.nn.selu,
}
assert tuple(ACTS) == ACT_FNS

# Logical axes of (up kernel, up bias, down kernel, down bias); None: no axes (FSDP fallback).
MLP_AXES: tuple[Axes | None, ...] = (("embed", "mlp"), ("mlp",), ("mlp", "embed"), ("embed",))


@dataclass(frozen=True)
class FeedForwardConfig:
    """The paper model's gated feed-forward (sLSTM blocks): ``proj_down(act(gate) * up)``.

    The hidden width ``proj_up_dim`` is ``proj_factor * embedding_dim`` rounded to a
    multiple of ``round_proj_up_to_multiple_of`` (up, or down when ``round_proj_up_dim_up``
    is False).
    """

    proj_factor: float = 1.3
    act_fn: str = "gelu"
    embedding_dim: int = -1
    dropout: float = 0.0
    bias: bool = False
    ff_type: Literal["ffn_gated"] = "ffn_gated"
    round_proj_up_dim_up: bool = True
    round_proj_up_to_multiple_of: int = 64
    _num_blocks: int = 1

    @property
    def proj_up_dim(self) -> int:
        return round_up(
            self.proj_factor * self.embedding_dim,
            self.round_proj_up_to_multiple_of,
            rule="ceil" if self.round_proj_up_dim_up else "floor",
        )

    def __post_init__(self):
        require(
            self.act_fn in ACT_FNS,
            f"FeedForwardConfig.act_fn must be one of {ACT_FNS}; got {self.act_fn!r}.",
        )
        require(self.ff_type == "ffn_gated", "FeedForwardConfig.ff_type must be 'ffn_gated'.")
        require(self.proj_factor > 0, "FeedForwardConfig.proj_factor must be > 0.")


class GatedFeedForward(nnx.Module):
    """``down(act(gate) * up)``: x (..., E) -> (..., E) in ``dtype``.

    Args:
      embedding_dim: E.
      hidden_dim: F, the width of ``gate`` and ``up``.
      down_init: the down projection's initialiser (the families scale it differently).
      names: the attribute names (gate, up, down). A gate of None fuses it into ``up``:
        one E -> 2F projection whose output is split ``[gate | up]``.
      act: one of ``ACTS``.
      gate_init, up_init: the initialisers (default small init of E); with a fused gate
        ``up_init`` draws the whole (E, 2F) kernel.
      use_bias: biases on all projections.
      axes: logical axes (up kernel, up bias, down kernel, down bias), or None for none.
      dropout: rate on the output (0: no dropout module).

    Built in the order gate, up, down, dropout, so the random draws (and initial weights)
    are the same as each family's own module had. A block whose checkpoints keep these
    weights as its own attributes (the Transformer's ``gate_up`` / ``ffn_down``) subclasses
    this, calls ``GatedFeedForward.__init__(self, ...)`` where it made them, and applies
    ``self.feed_forward(x)``.
    """

    def __init__(
        self,
        embedding_dim: int,
        hidden_dim: int,
        *,
        down_init: nnx.Initializer,
        rngs: nnx.Rngs,
        names: tuple[str | None, str, str] = ("proj_up_gate", "proj_up", "proj_down"),
        act: str = "swish",
        gate_init: nnx.Initializer | None = None,
        up_init: nnx.Initializer | None = None,
        use_bias: bool = False,
        axes: tuple[Axes | None, ...] | None = MLP_AXES,
        dropout: float = 0.0,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        E, F = embedding_dim, hidden_dim
        gate, up, down = names
        up_k, up_b, down_k, down_b = axes if axes is not None else (None,) * 4
        self.ffn_names = names
        self.act = ACTS[act]
        kw = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        up_kw = dict(kernel_axes=up_k, bias_axes=up_b, **kw)
        if gate is not None:
            setattr(self, gate, Dense(E, F, kernel_init=gate_init or small_init(E), **up_kw))
        width = F if gate is not None else 2 * F
        setattr(self, up, Dense(E, width, kernel_init=up_init or small_init(E), **up_kw))
        projection = Dense(F, E, kernel_init=down_init, kernel_axes=down_k, bias_axes=down_b, **kw)
        setattr(self, down, projection)
        self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None

    @classmethod
    def from_config(
        cls,
        config: FeedForwardConfig,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ) -> GatedFeedForward:
        """The paper model's feed-forward: ``proj_up`` (E -> 2F, [gate | up]), ``proj_down``
        initialised with Wang's init of E."""
        E = config.embedding_dim
        return cls(
            E,
            config.proj_up_dim,
            names=(None, "proj_up", "proj_down"),
            act=config.act_fn,
            down_init=wang_init(E, config._num_blocks),
            use_bias=config.bias,
            # Its down bias was made without logical axes (left to the FSDP fallback).
            axes=MLP_AXES[:3] + (None,),
            dropout=config.dropout,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
        )

    def feed_forward(self, x: jax.Array) -> jax.Array:
        """x (..., E) -> (..., E)."""
        gate, up, down = self.ffn_names
        if gate is None:
            g, u = jnp.split(getattr(self, up)(x), 2, axis=-1)
        else:
            g, u = getattr(self, gate)(x), getattr(self, up)(x)
        y = getattr(self, down)(self.act(g) * u)
        return self.dropout(y) if self.dropout is not None else y

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.feed_forward(x)


class ResidualBlock(nnx.Module):
    """``act(x W_h + b_h) W_o + b_o + (x W_r + b_r)``: x (..., in) -> (..., out).

    ``act`` defaults to ReLU (TiRex's); ``init`` "small" draws the matrices from the small
    init of their input width and zero biases (TiRex's), "torch" every weight and bias as a
    fresh ``torch.nn.Linear`` (TiRex-2's).
    """

    def __init__(
        self,
        in_dim: int,
        h_dim: int,
        out_dim: int,
        *,
        rngs: nnx.Rngs,
        act: Callable[[jax.Array], jax.Array] = jax.nn.relu,
        init: Literal["small", "torch"] = "small",
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        self.act = act

        def dense(i, o):
            fn = small_init if init == "small" else torch_linear
            bias = nnx.initializers.zeros if init == "small" else torch_linear(i)
            return Dense(
                i,
                o,
                use_bias=True,
                kernel_init=fn(i),
                bias_init=bias,
                rngs=rngs,
                dtype=dtype,
                param_dtype=param_dtype,
            )

        self.hidden_layer = dense(in_dim, h_dim)
        self.output_layer = dense(h_dim, out_dim)
        self.residual_layer = dense(in_dim, out_dim)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.output_layer(self.act(self.hidden_layer(x))) + self.residual_layer(x)

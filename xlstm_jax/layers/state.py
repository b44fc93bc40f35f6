"""Typed recurrent state: one NamedTuple per kind, from a conv buffer up to the whole stack.

Every module with state has ``init_state(batch_size)`` (zeros) and a call that returns its
output with the new state, so a long sequence can be processed in pieces:

    state = model.init_state(batch_size)          # StackState
    logits, state = model.with_state(tokens, state)

States are pytrees (they pass through ``jax.jit``, ``lax.scan`` and ``shard_map``).

Shape legend: B batch, K conv taps, F conv features, NH heads, DH head dims.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from pallas_kernels import MLSTMState, SLSTMState

__all__ = ["BlockState", "ConvState", "MLSTMState", "SLSTMState", "StackState"]


class ConvState(NamedTuple):
    """A causal convolution's last ``K - 1`` inputs, ``buffer`` (B, K-1, F)."""

    buffer: jax.Array


class BlockState(NamedTuple):
    """One block's state: its conv buffer (None for an sLSTM without conv) and its cell
    state (``MLSTMState`` for an mLSTM block, ``SLSTMState`` for an sLSTM block)."""

    conv: ConvState | None
    cell: MLSTMState | SLSTMState


class StackState(NamedTuple):
    """The block stack's (and the language model's) state: one ``BlockState`` per block."""

    blocks: tuple[BlockState, ...]

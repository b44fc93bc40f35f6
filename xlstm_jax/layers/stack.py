"""Running a stack of recurrent blocks, and the input checks of the language models.

Shape legend: B batch, S sequence, E embedding dim.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xlstm_jax.layers.sharding import constrain

__all__ = ["check_doc_starts", "check_tokens", "run_blocks"]


def check_tokens(tokens: jax.Array) -> None:
    """Raises ``ValueError`` unless ``tokens`` is an integer array (B, S)."""
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(
            f"`tokens` must be an integer array (B, S); got {tokens.dtype} {tokens.shape}."
        )


def check_doc_starts(doc_starts: jax.Array | None, tokens: jax.Array) -> None:
    """Raises ``ValueError`` unless ``doc_starts`` is None or a bool array shaped like
    ``tokens`` (B, S)."""
    if doc_starts is not None and (
        doc_starts.shape != tokens.shape or doc_starts.dtype != jnp.bool_
    ):
        raise ValueError(
            f"`doc_starts` must be a bool array shaped like tokens {tokens.shape}; got "
            f"{doc_starts.dtype} {doc_starts.shape}."
        )


def run_blocks(blocks, x, states, doc_starts, remat: bool):
    """Runs ``blocks`` in order on x (B, S, E), each from its state (None: zeros), with the
    batch sharding constrained between blocks; ``remat`` recomputes each block in the
    backward pass. Returns (y, the blocks' new states as a tuple)."""
    new_states = []
    x = constrain(x, ("batch", None, None))
    for block, block_state in zip(blocks, states, strict=True):
        if remat:
            x, block_state = nnx.remat(lambda blk, h, s, d: blk(h, s, d))(
                block, x, block_state, doc_starts
            )
        else:
            x, block_state = block(x, block_state, doc_starts)
        new_states.append(block_state)
        x = constrain(x, ("batch", None, None))
    return x, tuple(new_states)

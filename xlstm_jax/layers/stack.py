"""Running a stack of recurrent blocks, and the input checks of the language models.

Shape legend: B batch, S sequence, E embedding dim.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xlstm_jax.layers.config import REMAT_POLICIES
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


def _policy(name: str):
    if name not in REMAT_POLICIES:
        raise ValueError(f"remat_policy must be one of {REMAT_POLICIES}; got {name!r}.")
    # "nothing_saveable" is jax.checkpoint's default (policy None): the program the trainer
    # compiled before the knob existed, unchanged.
    return None if name == "nothing_saveable" else getattr(jax.checkpoint_policies, name)


def run_blocks(blocks, x: jax.Array, states, doc_starts: jax.Array | None, config):
    """Runs ``blocks`` in order on x (B, S, E), each from its state (None: zeros), with the
    batch sharding constrained between blocks. Returns (y, the blocks' new states as a
    tuple).

    ``config`` is the model's config; three of its fields decide how the blocks run.
    ``remat`` recomputes each block in the backward pass, saving what ``remat_policy`` (a
    ``jax.checkpoint_policies`` name, ``REMAT_POLICIES``) allows. ``scan_layers`` runs
    identical blocks (one structure of parameters and state) as one ``lax.scan`` body, so
    the block is traced and compiled once, not ``len(blocks)`` times; the parameters stay
    one module per block (checkpoints and sharding rules do not change) and are stacked, a
    copy, per call.
    """
    remat, remat_policy = config.remat, config.remat_policy
    if config.scan_layers and len(blocks) > 1:
        return _scan_blocks(blocks, x, states, doc_starts, remat, remat_policy)
    new_states = []
    x = constrain(x, ("batch", None, None))
    for block, block_state in zip(blocks, states, strict=True):
        if remat:
            x, block_state = nnx.remat(
                lambda blk, h, s, d: blk(h, s, d), policy=_policy(remat_policy)
            )(block, x, block_state, doc_starts)
        else:
            x, block_state = block(x, block_state, doc_starts)
        new_states.append(block_state)
        x = constrain(x, ("batch", None, None))
    return x, tuple(new_states)


def _stack(trees):
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _scan_blocks(blocks, x, states, doc_starts, remat, remat_policy):
    # Block 0's graph with each block's parameters: the blocks differ only in static config
    # fields the forward does not read (a v1 block's _block_idx), which the caller's config
    # check guarantees (no sLSTM blocks, no dropout RNG state).
    graphdef, _ = nnx.split(blocks[0])
    try:
        params = _stack([nnx.state(block) for block in blocks])
        stacked_states = None if states[0] is None else _stack(states)
    except ValueError as err:  # tree structures differ: not identical blocks
        raise ValueError(f"scan over blocks needs identical blocks: {err}") from None

    def body(h, xs):
        block_params, block_state = xs
        h, block_state = nnx.merge(graphdef, block_params)(h, block_state, doc_starts)
        return constrain(h, ("batch", None, None)), block_state

    if remat:
        # prevent_cse=False: the scan already keeps the recomputation from being merged.
        body = jax.checkpoint(body, policy=_policy(remat_policy), prevent_cse=False)
    x = constrain(x, ("batch", None, None))
    x, new_states = jax.lax.scan(body, x, (params, stacked_states))
    return x, tuple(jax.tree.map(lambda a, i=i: a[i], new_states) for i in range(len(blocks)))

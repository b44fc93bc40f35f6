"""The paper model's block stack and language model.

    from flax import nnx
    from xlstm_jax import xLSTMLMModel, xLSTMLMModelConfig, mLSTMBlockConfig
    model = xLSTMLMModel(xLSTMLMModelConfig(mlstm_block=mLSTMBlockConfig(), vocab_size=256,
                                            num_blocks=2, embedding_dim=64), rngs=nnx.Rngs(0))
    logits = model(tokens)                                  # (B, S) int -> (B, S, V) float32

Shape legend: B batch, S sequence, E embedding dim, V vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xlstm_jax.layers.dense import Dense, Embedding
from xlstm_jax.layers.init import small_init
from xlstm_jax.layers.norms import LayerNorm
from xlstm_jax.layers.stack import check_doc_starts, check_tokens, run_blocks
from xlstm_jax.layers.state import StackState
from xlstm_jax.models.xlstm.blocks import mLSTMBlock, sLSTMBlock
from xlstm_jax.models.xlstm.config import (
    mLSTMBlockConfig,
    xLSTMBlockStackConfig,
    xLSTMLMModelConfig,
)

__all__ = ["run_blocks", "xLSTMBlockStack", "xLSTMLMModel"]


class xLSTMBlockStack(nnx.Module):
    """Blocks in the order of ``config.block_map``, then an optional post-blocks LayerNorm.

    Call: ``stack(x, state)`` with x (B, S, E) and a ``StackState`` (``init_state(B)``; None
    means zeros) -> ``(y (B, S, E), new StackState)``.
    """

    def __init__(self, config: xLSTMBlockStackConfig, *, rngs: nnx.Rngs):
        self.config = config
        dtype, param_dtype = jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)
        blocks = []
        for idx in range(config.num_blocks):
            bc = config.block_config(idx)
            if isinstance(bc, mLSTMBlockConfig):
                blocks.append(mLSTMBlock(bc.mlstm, rngs=rngs, dtype=dtype, param_dtype=param_dtype))
            else:
                blocks.append(sLSTMBlock(bc, rngs=rngs, dtype=dtype, param_dtype=param_dtype))
        self.blocks = nnx.List(blocks)
        self.post_blocks_norm = (
            LayerNorm(config.embedding_dim, dtype=dtype, param_dtype=param_dtype)
            if config.add_post_blocks_norm
            else None
        )

    def init_state(self, batch_size: int) -> StackState:
        """The zero state: one ``BlockState`` per block."""
        return StackState(tuple(block.init_state(batch_size) for block in self.blocks))

    def __call__(
        self,
        x: jax.Array,
        state: StackState | None = None,
        doc_starts: jax.Array | None = None,
    ) -> tuple[jax.Array, StackState]:
        """``doc_starts`` (B, S) bool: first tokens of packed documents, where no state
        crosses over (mLSTM blocks only; see ``mLSTMLayer``)."""
        states = (None,) * len(self.blocks) if state is None else state.blocks
        if doc_starts is not None and any(self.config.block_map):
            raise ValueError(
                "document-boundary resets need an mLSTM-only stack: an sLSTM block's "
                "recurrent hidden state would still cross documents; set slstm_at=[] (or "
                "train without data.reset_at_document_boundaries)."
            )
        x, new_states = run_blocks(self.blocks, x, states, doc_starts, self.config)
        if self.post_blocks_norm is not None:
            x = self.post_blocks_norm(x)
        return x, StackState(new_states)


class xLSTMLMModel(nnx.Module):
    """xLSTM language model: ``lm_head(blocks(token_embedding(tokens)))``.

    ``model(tokens)``: tokens int (B, S) -> logits (B, S, V) in float32 (float64 for a
    float64 model), from the zero state. Any S works.

    ``model.with_state(tokens, state)`` -> ``(logits, new_state)`` continues from a
    ``StackState`` (``model.init_state(B)``), so a long sequence can be processed in pieces.
    """

    def __init__(self, config: xLSTMLMModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        dtype, param_dtype = jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)
        E, V = config.embedding_dim, config.vocab_size
        self.token_embedding = Embedding(
            V, E, init=small_init(E), dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.emb_dropout = (
            nnx.Dropout(config.dropout, rngs=rngs)
            if config.add_embedding_dropout and config.dropout > 0
            else None
        )
        self.xlstm_block_stack = xLSTMBlockStack(config, rngs=rngs)
        self.lm_head = (
            None
            if config.tie_weights
            else Dense(
                E,
                V,
                use_bias=False,
                kernel_init=small_init(E),
                kernel_axes=("embed", "vocab"),
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )
        )

    def init_state(self, batch_size: int) -> StackState:
        return self.xlstm_block_stack.init_state(batch_size)

    def __call__(self, tokens: jax.Array, doc_starts: jax.Array | None = None) -> jax.Array:
        return self.logits(self.hidden_states(tokens, doc_starts))

    def with_state(
        self, tokens: jax.Array, state: StackState | None
    ) -> tuple[jax.Array, StackState]:
        """Logits (B, S, V) of ``tokens`` (B, S) continuing from ``state`` (None: zeros),
        and the state after them."""
        check_tokens(tokens)
        x, state = self.xlstm_block_stack(self._embed(tokens), state)
        return self.logits(x), state

    def hidden_states(self, tokens: jax.Array, doc_starts: jax.Array | None = None) -> jax.Array:
        """The final hidden states (B, S, E) of ``tokens`` (B, S), from a zero state:
        ``model(tokens) == model.logits(model.hidden_states(tokens))``. A loss that scores
        few positions applies ``logits`` to those only (the V-wide head dominates small
        models' cost). ``doc_starts`` (B, S) bool marks the first token of each packed
        document: each document then sees only itself (mLSTM-only stacks)."""
        check_tokens(tokens)
        check_doc_starts(doc_starts, tokens)
        return self.xlstm_block_stack(self._embed(tokens), None, doc_starts)[0]

    def _embed(self, tokens: jax.Array) -> jax.Array:
        x = self.token_embedding(tokens)
        return x if self.emb_dropout is None else self.emb_dropout(x)

    def logits(self, x: jax.Array) -> jax.Array:
        """The LM head on hidden states (..., E) -> logits (..., V) in float32 (float64 for
        a float64 model)."""
        logits = self.token_embedding.attend(x) if self.lm_head is None else self.lm_head(x)
        return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))

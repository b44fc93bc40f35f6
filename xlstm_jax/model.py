"""The block stack and the language model.

Shape legend: B batch, S sequence, E embedding dim, V vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xlstm_jax.components import LayerNorm, small_init
from xlstm_jax.config import mLSTMBlockConfig, xLSTMBlockStackConfig, xLSTMLMModelConfig
from xlstm_jax.mlstm import mLSTMBlock
from xlstm_jax.sharding import constrain
from xlstm_jax.slstm import sLSTMBlock


def _check_tokens(tokens: jax.Array) -> None:
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(
            f"`tokens` must be an integer array (B, S); got {tokens.dtype} {tokens.shape}."
        )


class xLSTMBlockStack(nnx.Module):
    """Blocks in the order of ``config.block_map``, then an optional post-blocks LayerNorm.

    Call: ``stack(x)`` with x (B, S, E) -> (B, S, E); ``stack(x, state)`` -> (y, new_state)
    where ``state`` is a tuple with one entry per block (``init_state``).
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

    def init_state(self, batch_size: int) -> tuple:
        """Zero recurrent state: per block {"conv": ..., "cell": ...} (see the layers)."""
        return tuple(block.init_state(batch_size) for block in self.blocks)

    def __call__(self, x: jax.Array, state: tuple | None = None):
        new_state = []
        x = constrain(x, ("batch", None, None))
        for idx, block in enumerate(self.blocks):
            if state is None:
                x = nnx.remat(lambda blk, h: blk(h))(block, x) if self.config.remat else block(x)
            else:
                x, s = block(x, state[idx])
                new_state.append(s)
            x = constrain(x, ("batch", None, None))
        if self.post_blocks_norm is not None:
            x = self.post_blocks_norm(x)
        return x if state is None else (x, tuple(new_state))


class xLSTMLMModel(nnx.Module):
    """xLSTM language model: ``lm_head(blocks(token_embedding(tokens)))``.

    Call: ``model(tokens)`` with tokens int (B, S) -> logits (B, S, V) in float32 (float64 for a
    float64 model). Any S works.
    With ``state`` (from ``init_state(B)``) and ``return_state=True`` it returns
    ``(logits, new_state)``, so a long sequence can be processed in pieces.
    """

    def __init__(self, config: xLSTMLMModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        dtype, param_dtype = jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)
        E, V = config.embedding_dim, config.vocab_size
        self.token_embedding = nnx.Embed(
            V, E, embedding_init=small_init(E), dtype=dtype, param_dtype=param_dtype, rngs=rngs
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
            else nnx.Linear(
                E,
                V,
                use_bias=False,
                kernel_init=small_init(E),
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )
        )

    def init_state(self, batch_size: int) -> tuple:
        return self.xlstm_block_stack.init_state(batch_size)

    def __call__(self, tokens: jax.Array, state: tuple | None = None, return_state: bool = False):
        _check_tokens(tokens)
        if return_state and state is None:
            state = self.init_state(tokens.shape[0])
        x = self._embed(tokens)
        if state is None:
            x = self.xlstm_block_stack(x)
        else:
            x, state = self.xlstm_block_stack(x, state)
        logits = self.logits(x)
        return (logits, state) if state is not None else logits

    def hidden_states(self, tokens: jax.Array) -> jax.Array:
        """The final hidden states (B, S, E) of ``tokens`` (B, S), from a zero state:
        ``model(tokens) == model.logits(model.hidden_states(tokens))``. A loss that scores
        few positions applies ``logits`` to those only (the V-wide head dominates small
        models' cost)."""
        _check_tokens(tokens)
        return self.xlstm_block_stack(self._embed(tokens))

    def _embed(self, tokens: jax.Array) -> jax.Array:
        x = self.token_embedding(tokens)
        return x if self.emb_dropout is None else self.emb_dropout(x)

    def logits(self, x: jax.Array) -> jax.Array:
        """The LM head on hidden states (..., E) -> logits (..., V) in float32 (float64 for
        a float64 model)."""
        logits = self.token_embedding.attend(x) if self.lm_head is None else self.lm_head(x)
        return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))

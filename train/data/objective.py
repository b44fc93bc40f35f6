"""The training objective: next-token predictions on the scored positions of a batch.

Shapes: B batch, S + 1 tokens per row, K predictions per row, V vocabulary.

A ``train.data.batch.Batch`` carries its loss mask: row ``b`` is scored at position ``t`` (the
prediction of token ``t + 1`` from tokens ``0..t``) when ``loss_mask[b, t + 1]`` is set.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from train.config.schema import DataConfig
from train.data.batch import Batch

__all__ = [
    "TokenRows",
    "doc_starts_of",
    "make_loss_fn",
    "mean_loss",
    "scored_cross_entropy",
    "scored_predictions",
]


def doc_starts_of(inputs: jax.Array, reset_id: int) -> jax.Array:
    """(B, S) bool: the first token of every document after the first in packed rows, i.e.
    the positions right after a ``reset_id`` (end-of-document) token."""
    after = inputs[:, :-1] == reset_id
    return jnp.concatenate([jnp.zeros_like(after[:, :1]), after], axis=1)


def scored_predictions(
    model, batch: Batch, max_scored: int | None = None, reset_id: int | None = None
):
    """The model's logits where the batch is scored, their targets and mask.

    Args:
        model: an LM with ``hidden_states(ids) -> (B, S, E)`` and ``logits(h) -> (..., V)``.
        batch: tokens int (B, S + 1) and their loss mask.
        max_scored: None: every position (K = S). An int K: only the first K scored
            positions of each row go through the LM head. A task that scores a few known
            positions (MQAR: its value positions) then skips the (B, S, V) logits, which
            dominate a small model's cost; a row with fewer than K scored positions fills
            the rest with masked ones, a row with more loses the later ones (size K to
            the data).
        reset_id: the end-of-document id when no state may cross documents packed into a
            row (``data.reset_at_document_boundaries``): the model gets ``doc_starts``.

    Returns:
        ``(logits (B, K, V) float32, targets (B, K) int, mask (B, K) bool)``.
    """
    tokens, loss_mask = batch
    inputs, targets, mask = tokens[:, :-1], tokens[:, 1:], loss_mask[:, 1:]
    if reset_id is None:
        h = model.hidden_states(inputs)  # (B, S, E)
    else:
        h = model.hidden_states(inputs, doc_starts_of(inputs, reset_id))
    if max_scored is not None:
        # Positions of each row's scored tokens, in order, padded with index 0.
        pos = jax.vmap(lambda m: jnp.nonzero(m, size=max_scored, fill_value=0)[0])(mask)
        valid = jnp.arange(max_scored) < jnp.sum(mask, axis=1, keepdims=True)
        h = jnp.take_along_axis(h, pos[..., None], axis=1)
        targets = jnp.take_along_axis(targets, pos, axis=1)
        mask = valid
    return model.logits(h), targets, mask


def scored_cross_entropy(
    model, batch: Batch, max_scored: int | None = None, reset_id: int | None = None
):
    """Per-row sums over the scored positions: ``(cross-entropy, correct arg-max, count)``,
    each float/int (B,)."""
    logits, targets, mask = scored_predictions(model, batch, max_scored, reset_id)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    correct = (jnp.argmax(logits, axis=-1) == targets) & mask
    return jnp.sum(ce * mask, axis=-1), jnp.sum(correct, axis=-1), jnp.sum(mask, axis=-1)


def mean_loss(
    model, batch: Batch, max_scored: int | None = None, reset_id: int | None = None
) -> jax.Array:
    """The mean cross-entropy per scored token of the batch (the training loss)."""
    ce, _, count = scored_cross_entropy(model, batch, max_scored, reset_id)
    return jnp.sum(ce) / jnp.maximum(jnp.sum(count), 1)


def make_loss_fn(
    graphdef, rest, max_scored: int | None = None, reset_id: int | None = None
) -> Callable:
    """``loss(params, batch) -> scalar``: the mean cross-entropy over the batch's scored
    tokens (``mean_loss``) of the model ``nnx.merge(graphdef, params, rest)``."""

    def loss(params, batch: Batch):
        return mean_loss(nnx.merge(graphdef, params, rest), batch, max_scored, reset_id)

    return loss


class TokenRows:
    """The objective and batch shape of the token sources (text and synthetic): next-token
    cross-entropy on ``Batch`` rows of ``data.seq_len + 1`` tokens. A source mixes it in
    and sets ``cfg``, ``max_scored`` and ``reset_id``."""

    cfg: DataConfig  # the run's data section
    max_scored: int | None
    reset_id: int | None

    def loss(self, model, batch: Batch) -> jax.Array:
        return mean_loss(model, batch, self.max_scored, self.reset_id)

    def abstract_batch(self, leading: tuple[int, ...]) -> Batch:
        shape = (*leading, self.cfg.seq_len + 1)
        return Batch(jax.ShapeDtypeStruct(shape, jnp.int32), jax.ShapeDtypeStruct(shape, bool))

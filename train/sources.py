"""Data sources: one protocol, one table that picks the source for ``data.path``.

A source knows the vocabulary its ids need, loads what training reads (``prepare``),
serves the training batches indexed by step (a ``grain.MapDataset`` of ``train.batch.Batch``,
so resuming at step k needs no iterator state) and builds its evaluator. The loop never
asks which kind of source it has.

* ``TextSource``: documents tokenized and packed into windows (``train.data``); every
  token is scored; evaluation is the validation loss.
* ``SyntheticSource``: ``data.path=synthetic:TASK`` (``train.synthetic``), generated on the
  fly; only the answer tokens are scored; evaluation is the scaled accuracy per length bucket.
* ``SeriesSource``: ``data.path=series:...`` (``train.series_data``), windows of real time
  series for the forecaster; the loss is the pinball loss of the next patch's quantiles.

Each source also names its objective (``loss``) and the shape of its batches
(``abstract_batch``), so the step and the loop are the same for every source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import grain
import jax
import jax.numpy as jnp

from train import data, series_data, synthetic
from train.batch import Batch, all_scored
from train.config import DataConfig
from train.evaluation import Evaluator, SyntheticEvaluator, TextEvaluator
from train.objective import mean_loss
from train.step import make_loss_fn
from train.tokenizer import load_tokenizer, padded_vocab_size

__all__ = ["SOURCES", "DataSource", "SyntheticSource", "TextSource", "open_source"]


class DataSource(Protocol):
    """What the training loop needs from the data."""

    # The vocabulary the ids need (the model's vocab_size is raised to it), and its origin
    # for the message that says so.
    vocab_size: int
    vocab_origin: str
    # The most scored tokens a row can have when that is a small known number (the loss
    # then runs the LM head on those only), else None.
    max_scored: int | None
    # The end-of-document id when no state may cross packed documents, else None.
    reset_id: int | None

    def prepare(self) -> str:
        """Loads what training reads; returns the start-up report's data line."""
        ...

    def loss(self, model, batch) -> jax.Array:
        """The training loss (a scalar) of ``model`` on one micro-batch."""
        ...

    def abstract_batch(self, leading: tuple[int, ...]):
        """The batch pytree as ``jax.ShapeDtypeStruct`` with ``leading`` batch axes."""
        ...

    def train_batches(
        self, batch_size: int, seed: int, process_index: int, process_count: int
    ) -> grain.MapDataset:
        """``ds[step]``: this host's rows of the global ``Batch`` of ``step``."""
        ...

    def evaluator(
        self,
        graphdef,
        rest,
        batch_size: int,
        num_batches: int,
        seed: int,
        put: Callable[[Batch], Batch],
        process_index: int,
        process_count: int,
    ) -> Evaluator:
        """The evaluator of this source (``put`` places a host's batch globally)."""
        ...


class _TokenRows:
    """The objective and batch shape of the token sources: next-token cross-entropy on
    ``Batch`` rows of ``data.seq_len + 1`` tokens."""

    cfg: DataConfig
    max_scored: int | None
    reset_id: int | None

    def loss(self, model, batch: Batch) -> jax.Array:
        return mean_loss(model, batch, self.max_scored, self.reset_id)

    def abstract_batch(self, leading: tuple[int, ...]) -> Batch:
        shape = (*leading, self.cfg.seq_len + 1)
        return Batch(jax.ShapeDtypeStruct(shape, jnp.int32), jax.ShapeDtypeStruct(shape, bool))


class TextSource(_TokenRows):
    """Text documents (``builtin:stdlib``, files, prepared folders, ``hf:``)."""

    max_scored = None

    def __init__(self, cfg: DataConfig):
        # Cheap checks first: a bad tokenizer or path fails before any workdir is written.
        self.cfg = cfg
        self.tokenizer = load_tokenizer(cfg.tokenizer)
        data.check_source(cfg)
        self.vocab_size = padded_vocab_size(self.tokenizer.vocab_size)
        self.vocab_origin = (
            f"the tokenizer {cfg.tokenizer!r} ({self.tokenizer.vocab_size} ids, padded to 64)"
        )
        self._train = self._val = None
        self.reset_id = self.tokenizer.eos_id if cfg.reset_at_document_boundaries else None

    def prepare(self) -> str:
        corpus = data.load_corpus(self.cfg, self.tokenizer)
        self._train = data.PackedWindows(corpus.train, self.cfg.seq_len)
        self._val = data.PackedWindows(corpus.val, self.cfg.seq_len)
        return (
            f"data: {corpus.description}; tokenizer {self.cfg.tokenizer}; "
            f"{len(corpus.train):,} train tokens ({len(self._train):,} windows), "
            f"{len(corpus.val):,} validation tokens"
        )

    def train_batches(self, batch_size, seed, process_index, process_count) -> grain.MapDataset:
        ds = data.train_batches(self._train, batch_size, seed, process_index, process_count)
        return ds.map(all_scored)

    def evaluator(
        self, graphdef, rest, batch_size, num_batches, seed, put, process_index, process_count
    ) -> Evaluator:
        del seed  # the validation batches are the first windows, in order
        windows = data.eval_batches(
            self._val, batch_size, num_batches, process_index, process_count
        )
        note = (
            f"note: {len(self._val.tokens)} validation tokens make no batch of {batch_size} x "
            f"{self.cfg.seq_len + 1}; evaluation is off (raise data.val_fraction for a "
            "validation set)."
        )
        batches = [all_scored(w) for w in windows]
        loss_fn = make_loss_fn(graphdef, rest, reset_id=self.reset_id)
        return TextEvaluator(loss_fn, batches, put, note)


class SyntheticSource(_TokenRows):
    """A synthetic task of the paper (``synthetic:TASK``): formal languages and MQAR."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.task = synthetic.get_task(cfg.path)
        self.vocab_size = self.task.vocab_size
        self.vocab_origin = f"synthetic:{self.task.name}'s {self.task.vocab_size} ids"
        self.max_scored = synthetic.max_scored(cfg)
        self.reset_id = None  # one example per row: nothing to reset

    def prepare(self) -> str:
        return f"data: {synthetic.describe(self.cfg)}"

    def train_batches(self, batch_size, seed, process_index, process_count) -> grain.MapDataset:
        return synthetic.train_batches(self.cfg, batch_size, seed, process_index, process_count)

    def evaluator(
        self, graphdef, rest, batch_size, num_batches, seed, put, process_index, process_count
    ) -> Evaluator:
        del put, process_index, process_count  # every host scores the whole fixed set
        return SyntheticEvaluator(
            self.cfg, graphdef, rest, batch_size, num_batches, seed, self.max_scored
        )


# ``data.path`` prefix -> source; anything else is text.
SOURCES: tuple[tuple[str, type], ...] = ((synthetic.PREFIX, SyntheticSource),)


def open_source(cfg: DataConfig, model_cfg=None) -> DataSource:
    """The source for ``cfg.path`` (``model_cfg``: the run's model config, which the
    series source needs for its patch size).

    Raises:
        DataError: the path or tokenizer cannot be used (before any compute).
    """
    if cfg.path.startswith(series_data.PREFIX):
        return series_data.SeriesSource(cfg, model_cfg.patch_size)
    for prefix, cls in SOURCES:
        if cfg.path.startswith(prefix):
            return cls(cfg)
    return TextSource(cfg)

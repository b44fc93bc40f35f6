"""Data sources: one protocol, one table that picks the source for ``data.path``.

A source knows the vocabulary its ids need, loads what training reads (``prepare``),
serves the training batches indexed by step (a ``grain.MapDataset`` of
``train.data.batch.Batch``, so resuming at step k needs no iterator state) and builds its
evaluator. The loop never asks which kind of source it has.

* ``TextSource`` (``train.data.text``): documents tokenized and packed into windows;
  every token is scored; evaluation is the validation loss.
* ``SyntheticSource`` (``train.data.synthetic``): ``data.path=synthetic:TASK``, generated
  on the fly; only the answer tokens are scored; evaluation is the scaled accuracy per
  length bucket.
* ``SeriesSource`` (``train.data.series``): ``data.path=series:...``, windows of real time
  series for the forecaster; the loss is the pinball loss of the next patch's quantiles.
* ``CovariateSource`` (``train.data.series.covariates``): ``data.path=series:...`` for a
  forecaster with covariates (TiRex-2, ``Family.covariates``): each series packed into
  grouped rows; the loss is the pinball loss of one pass's future window.

Each source also names its objective (``loss``) and the shape of its batches
(``abstract_batch``), so the step and the loop are the same for every source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import grain
import jax

from train.config.schema import DataConfig
from train.data.batch import Batch
from train.data.evaluation import Evaluator
from train.data.series.covariates import CovariateSource
from train.data.series.source import SeriesSource
from train.data.series.windows import PREFIX as SERIES_PREFIX
from train.data.synthetic.source import SyntheticSource
from train.data.synthetic.tasks import PREFIX as SYNTHETIC_PREFIX
from train.data.text.source import TextSource

__all__ = ["SOURCES", "DataSource", "open_source"]


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


# ``data.path`` prefix -> source; anything else is text.
SOURCES: tuple[tuple[str, type], ...] = ((SYNTHETIC_PREFIX, SyntheticSource),)


def open_source(cfg: DataConfig, model_cfg=None) -> DataSource:
    """The source for ``cfg.path`` (``model_cfg``: the run's model config, which the
    series source needs for its patch size).

    Raises:
        DataError: the path or tokenizer cannot be used (before any compute).
    """
    if cfg.path.startswith(SERIES_PREFIX):
        from xlstm_jax.registry import family_of

        if family_of(model_cfg).covariates:
            return CovariateSource(cfg, model_cfg)
        return SeriesSource(cfg, model_cfg.patch_size)
    for prefix, cls in SOURCES:
        if cfg.path.startswith(prefix):
            return cls(cfg)
    return TextSource(cfg)

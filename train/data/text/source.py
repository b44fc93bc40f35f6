"""The text source (``train.data.sources.DataSource``): documents tokenized and packed
into windows; every token is scored; evaluation is the validation loss."""

from __future__ import annotations

import grain

from train.config.schema import DataConfig
from train.data.batch import all_scored
from train.data.evaluation import Evaluator, TextEvaluator
from train.data.objective import TokenRows, make_loss_fn
from train.data.text.corpus import load_corpus
from train.data.text.documents import check_source
from train.data.text.tokenizer import load_tokenizer, padded_vocab_size
from train.data.text.windows import PackedWindows, eval_batches, train_batches

__all__ = ["TextSource"]


class TextSource(TokenRows):
    """Text documents (``builtin:stdlib``, files, prepared folders, ``hf:``)."""

    max_scored = None

    def __init__(self, cfg: DataConfig):
        # Cheap checks first: a bad tokenizer or path fails before any workdir is written.
        self.cfg = cfg
        self.tokenizer = load_tokenizer(cfg.tokenizer)
        check_source(cfg)
        self.vocab_size = padded_vocab_size(self.tokenizer.vocab_size)
        self.vocab_origin = (
            f"the tokenizer {cfg.tokenizer!r} ({self.tokenizer.vocab_size} ids, padded to 64)"
        )
        self._train = self._val = None
        self.reset_id = self.tokenizer.eos_id if cfg.reset_at_document_boundaries else None

    def prepare(self) -> str:
        corpus = load_corpus(self.cfg, self.tokenizer)
        self._train = PackedWindows(corpus.train, self.cfg.seq_len)
        self._val = PackedWindows(corpus.val, self.cfg.seq_len)
        return (
            f"data: {corpus.description}; tokenizer {self.cfg.tokenizer}; "
            f"{len(corpus.train):,} train tokens ({len(self._train):,} windows), "
            f"{len(corpus.val):,} validation tokens"
        )

    def train_batches(self, batch_size, seed, process_index, process_count) -> grain.MapDataset:
        ds = train_batches(self._train, batch_size, seed, process_index, process_count)
        return ds.map(all_scored)

    def evaluator(
        self, graphdef, rest, batch_size, num_batches, seed, put, process_index, process_count
    ) -> Evaluator:
        del seed  # the validation batches are the first windows, in order
        windows = eval_batches(self._val, batch_size, num_batches, process_index, process_count)
        note = (
            f"note: {len(self._val.tokens)} validation tokens make no batch of {batch_size} x "
            f"{self.cfg.seq_len + 1}; evaluation is off (raise data.val_fraction for a "
            "validation set)."
        )
        batches = [all_scored(w) for w in windows]
        loss_fn = make_loss_fn(graphdef, rest, reset_id=self.reset_id)
        return TextEvaluator(loss_fn, batches, put, note)

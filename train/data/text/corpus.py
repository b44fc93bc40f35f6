"""A corpus: the documents of ``data.path`` tokenized into one train and one validation
token stream.

Documents are joined into one token stream with an end-of-document token after each (the
packing into windows is ``train.data.text.windows``). A folder written by ``python -m
train.prepare_data`` is memory-mapped instead of tokenized again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.config.schema import DataConfig
from train.data.text.documents import BUILTIN_STDLIB, check_source, is_validation, iter_documents
from train.data.text.tokenizer import ByteTokenizer, HFTokenizer
from train.errors import DataError
from xlstm_jax.formats.jsonfile import read_json

__all__ = ["PREPARED_FORMAT", "Corpus", "load_corpus", "token_dtype", "tokenize_documents"]

PREPARED_FORMAT = "xlstm-jax-tokens-v1"
# Documents per tokenizer call: large enough for the Rust tokenizer's threads, small
# enough to keep memory flat.
_ENCODE_CHUNK = 512


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def tokenize_documents(
    docs: Iterator[tuple[str, str]],
    tokenizer: ByteTokenizer | HFTokenizer,
    val_fraction: float,
) -> Iterator[tuple[str, np.ndarray]]:
    """``(split, tokens)`` chunks: each document's ids followed by the end-of-document id."""
    dtype = token_dtype(tokenizer.vocab_size)
    eos = np.asarray([tokenizer.eos_id], dtype=dtype)

    def flush(batch: list[tuple[str, str]]):
        ids = tokenizer.encode_batch([t for _, t in batch])
        for split in ("train", "val"):
            parts = [
                np.concatenate([a.astype(dtype), eos])
                for (k, _), a in zip(batch, ids, strict=True)
                if is_validation(k, val_fraction) == (split == "val")
            ]
            if parts:
                yield split, np.concatenate(parts)

    batch: list[tuple[str, str]] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == _ENCODE_CHUNK:
            yield from flush(batch)
            batch = []
    if batch:
        yield from flush(batch)


@dataclass(frozen=True)
class Corpus:
    """Train and validation token streams (in memory or memory-mapped) and their origin."""

    train: np.ndarray
    val: np.ndarray
    description: str


def _load_prepared(root: Path, tokenizer: ByteTokenizer | HFTokenizer) -> Corpus:
    """Memory-maps a prepared folder after checking that ``meta.json`` describes it: the
    format, the tokenizer, the dtype this tokenizer's ids are stored in, and the size of
    each token file (so that nothing is read past the end, or as another dtype)."""
    rebuild = f"rebuild it with python -m train.prepare_data --out {root} ..."
    meta_path = root / "meta.json"
    meta = read_json(meta_path, DataError, rebuild)
    if not isinstance(meta, dict) or meta.get("format") != PREPARED_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise DataError(
            f"{meta_path} is not a prepared token folder's (format {found!r}, expected "
            f"{PREPARED_FORMAT!r}); rebuild it with python -m train.prepare_data."
        )
    made_with = meta.get("tokenizer")
    if not isinstance(made_with, str):
        raise DataError(f"{meta_path} names no tokenizer (got {made_with!r}); {rebuild}")
    if made_with != tokenizer.spec:
        raise DataError(
            f"{root} was tokenized with {made_with!r} but data.tokenizer="
            f"{tokenizer.spec!r}; set --set data.tokenizer={made_with}."
        )
    dtype = token_dtype(tokenizer.vocab_size)
    vocab = meta.get("vocab_size")
    if vocab != tokenizer.vocab_size or meta.get("dtype") != dtype.name:
        raise DataError(
            f"{meta_path} declares a vocabulary of {vocab!r} stored as {meta.get('dtype')!r}, "
            f"but the tokenizer {made_with!r} has {tokenizer.vocab_size} ids, stored as "
            f"{dtype.name}: the tokenizer file changed, or the folder is damaged; {rebuild}"
        )
    counts = meta.get("tokens")
    if not (
        isinstance(counts, dict)
        and all(
            isinstance(counts.get(k), int) and not isinstance(counts[k], bool) and counts[k] >= 0
            for k in ("train", "val")
        )
    ):
        raise DataError(
            f'{meta_path}: tokens must be {{"train": N, "val": N}} with counts >= 0; got '
            f"{counts!r:.80}; {rebuild}"
        )
    arrays = {}
    for split in ("train", "val"):
        n = counts[split]
        f = root / f"{split}.bin"
        need = n * dtype.itemsize
        have = f.stat().st_size if f.is_file() else None
        if have != need:
            what = "is missing" if have is None else f"holds {have:,} bytes"
            raise DataError(
                f"{f} {what} but {meta_path} promises {n:,} tokens ({need:,} bytes): the "
                f"folder is incomplete or damaged; {rebuild}"
            )
        arrays[split] = (
            np.memmap(f, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros((0,), dtype)
        )
    return Corpus(arrays["train"], arrays["val"], f"{root} (prepared, {meta.get('source')})")


def load_corpus(cfg: DataConfig, tokenizer: ByteTokenizer | HFTokenizer) -> Corpus:
    """Reads and tokenizes ``data.path`` (or memory-maps a prepared folder).

    Raises:
        DataError: unreadable path, missing text field, tokenizer mismatch, or too few
            training tokens for one window of ``data.seq_len + 1``.
    """
    check_source(cfg)
    root = Path(cfg.path).expanduser()
    if cfg.path != BUILTIN_STDLIB and (root / "meta.json").exists():
        corpus = _load_prepared(root, tokenizer)
    else:
        parts: dict[str, list[np.ndarray]] = {"train": [], "val": []}
        for split, toks in tokenize_documents(iter_documents(cfg), tokenizer, cfg.val_fraction):
            parts[split].append(toks)
        dtype = token_dtype(tokenizer.vocab_size)
        arrays = {k: np.concatenate(v) if v else np.zeros((0,), dtype) for k, v in parts.items()}
        what = "Python standard library sources" if cfg.path == BUILTIN_STDLIB else cfg.path
        corpus = Corpus(arrays["train"], arrays["val"], what)
    if len(corpus.train) < cfg.seq_len + 1:
        raise DataError(
            f"data.path={cfg.path!r} has {len(corpus.train)} training tokens, fewer than one "
            f"window of data.seq_len + 1 = {cfg.seq_len + 1}; add data or lower data.seq_len."
        )
    return corpus

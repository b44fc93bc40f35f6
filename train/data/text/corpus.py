"""A corpus: the documents of ``data.path`` tokenized into one train and one validation
token stream.

Documents are joined into one token stream with an end-of-document token after each (the
packing into windows is ``train.data.text.windows``). A folder written by ``python -m
train.prepare_data`` is memory-mapped instead of tokenized again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.config.schema import DataConfig
from train.data.text.documents import BUILTIN_STDLIB, check_source, is_validation, iter_documents
from train.data.text.tokenizer import ByteTokenizer, HFTokenizer
from train.errors import DataError

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
    rebuild = f"rebuild it with python -m train.prepare_data --out {root} ..."
    try:
        meta = json.loads((root / "meta.json").read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise DataError(f"{root}/meta.json cannot be read ({e}); {rebuild}") from None
    if meta.get("format") != PREPARED_FORMAT:
        raise DataError(
            f"{root}/meta.json is not a prepared token folder (format "
            f"{meta.get('format')!r}, expected {PREPARED_FORMAT!r}); rebuild it with "
            f"python -m train.prepare_data."
        )
    if meta["tokenizer"] != tokenizer.spec:
        raise DataError(
            f"{root} was tokenized with {meta['tokenizer']!r} but data.tokenizer="
            f"{tokenizer.spec!r}; set --set data.tokenizer={meta['tokenizer']}."
        )
    arrays = {}
    for split in ("train", "val"):
        n = meta["tokens"][split]
        f = root / f"{split}.bin"
        need = n * np.dtype(meta["dtype"]).itemsize
        have = f.stat().st_size if f.is_file() else None
        if have != need:
            what = "is missing" if have is None else f"holds {have:,} bytes"
            raise DataError(
                f"{f} {what} but {root}/meta.json promises {n:,} tokens ({need:,} bytes): the "
                f"folder is incomplete or damaged; {rebuild}"
            )
        arrays[split] = (
            np.memmap(root / f"{split}.bin", dtype=meta["dtype"], mode="r", shape=(n,))
            if n
            else np.zeros((0,), dtype=meta["dtype"])
        )
    return Corpus(arrays["train"], arrays["val"], f"{root} (prepared, {meta['source']})")


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

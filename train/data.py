"""Data: document sources, tokenization, packing into fixed-length windows, grain loading.

Shapes: b batch, s sequence length (``data.seq_len``). A training example is a window of
``s + 1`` consecutive tokens (inputs ``[:-1]``, targets ``[1:]``). Documents are joined
into one token stream with an end-of-document token after each, and the stream is cut into
back-to-back windows: window ``i`` is ``tokens[i*s : i*s + s + 1]``, so each token is an
input exactly once per epoch.

Loading uses ``grain.MapDataset``: a seeded shuffle that changes every epoch, then each
host takes every ``process_count``-th window, then batches. The dataset is indexed by the
step, so resuming at step ``k`` is just reading from index ``k``: no iterator state to save.

Sources (``data.path``):
* ``builtin:stdlib``: the ``.py`` files of this Python's standard library
  (``sysconfig.get_paths()["stdlib"]``, without tests and site-packages), sorted; real
  text (code, docstrings, comments) that ships with every Python. No download.
* a file or a folder of ``.txt``/``.md`` (one document per file), ``.jsonl`` (one
  document per line, field ``data.text_field``) and ``.parquet`` (column
  ``data.text_field``) files;
* a folder written by ``python -m train.prepare_data`` (memory-mapped tokens, the path for
  large corpora);
* ``hf:NAME_OR_PATH``: a Hugging Face ``datasets`` dataset (``save_to_disk`` folder or a
  name), if the optional ``datasets`` package is installed.
"""

from __future__ import annotations

import json
import sysconfig
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grain
import numpy as np

from train.config import DataConfig
from train.tokenizer import ByteTokenizer, DataError, HFTokenizer

__all__ = [
    "BUILTIN_STDLIB",
    "PREPARED_FORMAT",
    "Corpus",
    "PackedWindows",
    "check_source",
    "eval_batches",
    "is_validation",
    "iter_documents",
    "load_corpus",
    "token_dtype",
    "tokenize_documents",
    "train_batches",
]

BUILTIN_STDLIB = "builtin:stdlib"
PREPARED_FORMAT = "xlstm-jax-tokens-v1"
TEXT_SUFFIXES = (".txt", ".md", ".text", ".rst")
JSONL_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)
_SKIP_DIRS = {"test", "tests", "site-packages", "dist-packages", "__pycache__"}
# Documents per tokenizer call: large enough for the Rust tokenizer's threads, small
# enough to keep memory flat.
_ENCODE_CHUNK = 512


def is_validation(key: str, fraction: float) -> bool:
    """Whether the document named ``key`` is held out (a stable hash, not a random draw)."""
    return (zlib.crc32(key.encode("utf-8")) % 10_000) < fraction * 10_000


def _stdlib_documents() -> Iterator[tuple[str, str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p for p in root.rglob("*.py") if not _SKIP_DIRS.intersection(p.relative_to(root).parts[:-1])
    )
    for p in files:
        yield p.relative_to(root).as_posix(), p.read_text(encoding="utf-8", errors="replace")


def _file_documents(path: Path, root: Path, text_field: str) -> Iterator[tuple[str, str]]:
    rel = path.relative_to(root).as_posix() if path != root else path.name
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        yield rel, path.read_text(encoding="utf-8", errors="replace")
    elif suffix in JSONL_SUFFIXES:
        yield from _jsonl_documents(path, rel, text_field)
    elif suffix in PARQUET_SUFFIXES:
        yield from _parquet_documents(path, rel, text_field)


def _jsonl_documents(path: Path, rel: str, text_field: str) -> Iterator[tuple[str, str]]:
    fix = "fix or remove that line (or exclude the file from data.path)"
    with path.open("rb") as f:
        for i, raw in enumerate(f):
            where = f"{path}:{i + 1}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{where} is not UTF-8 text (byte {e.start + 1} of the line); {fix}, or "
                    f"re-encode the file as UTF-8."
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise DataError(
                    f"{where} is not valid JSON ({e}); JSONL needs one JSON object per line: {fix}."
                ) from None
            if not isinstance(record, dict):
                raise DataError(
                    f"{where} is a JSON {type(record).__name__}, not an object with a "
                    f"{text_field!r} field; {fix}."
                )
            if text_field not in record:
                raise DataError(
                    f"{where} has no field {text_field!r} (fields: "
                    f"{', '.join(record) or 'none'}); set --set data.text_field=NAME, or {fix}."
                )
            text = record[text_field]
            if not isinstance(text, str):
                raise DataError(
                    f"{where}: field {text_field!r} is a {type(text).__name__}, not a string; "
                    f"{fix}, or set --set data.text_field=NAME to the field holding the text."
                )
            yield f"{rel}:{i}", text


def _parquet_documents(path: Path, rel: str, text_field: str) -> Iterator[tuple[str, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(
            f"{path} is not a readable Parquet file ({e}); rename it if it holds another "
            f"format (.jsonl, .txt), or exclude it from data.path."
        ) from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise DataError(
            f"{path} has no column {text_field!r} (columns: "
            f"{', '.join(names)}); set --set data.text_field=NAME."
        )
    kind = pf.schema_arrow.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(
            f"{path}: column {text_field!r} holds {kind}, not strings; set "
            f"--set data.text_field=NAME to the column holding the text."
        )
    i = 0
    try:
        for batch in pf.iter_batches(columns=[text_field]):
            for text in batch.column(0).to_pylist():
                yield f"{rel}:{i}", text or ""
                i += 1
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path} is damaged after row {i} ({e}); rewrite or exclude it.") from None


def _hf_documents(name: str, split: str, text_field: str) -> Iterator[tuple[str, str]]:
    try:
        import datasets
    except ImportError as e:
        raise DataError(
            f"data.path='hf:{name}' needs the optional 'datasets' package: pip install "
            f"datasets (or export the data to JSONL/Parquet and point data.path at it)."
        ) from e
    if Path(name).is_dir() and (Path(name) / "dataset_dict.json").exists():
        ds = datasets.load_from_disk(name)[split]
    elif Path(name).is_dir() and (Path(name) / "state.json").exists():
        ds = datasets.load_from_disk(name)
    else:
        ds = datasets.load_dataset(name, split=split)
    if text_field not in ds.column_names:
        raise DataError(
            f"dataset {name!r} has no column {text_field!r} (columns: "
            f"{', '.join(ds.column_names)}); set --set data.text_field=NAME."
        )
    for i, record in enumerate(ds):
        yield f"{i}", record[text_field]


def _data_files(root: Path) -> list[Path]:
    suffixes = TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def check_source(cfg: DataConfig) -> None:
    """Fails fast (before any compute) when ``data.path`` cannot be read.

    Raises:
        DataError: the path does not exist or holds no supported files.
    """
    if cfg.path == BUILTIN_STDLIB or cfg.path.startswith("hf:"):
        return
    root = Path(cfg.path).expanduser()
    if not root.exists():
        raise DataError(
            f"data.path={cfg.path!r} does not exist. Give a text/JSONL/Parquet file or a "
            f"folder of them, a folder from python -m train.prepare_data, hf:NAME for a "
            f"Hugging Face dataset, or use the built-in corpus: --set data.path={BUILTIN_STDLIB}."
        )
    if (root / "meta.json").exists():
        return
    if not _data_files(root):
        raise DataError(
            f"data.path={cfg.path!r} holds no supported files (suffixes "
            f"{', '.join(TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES)})."
        )


def iter_documents(cfg: DataConfig) -> Iterator[tuple[str, str]]:
    """``(key, text)`` for every document of ``data.path`` in a fixed order.

    The key (a relative file name, plus a record index for JSONL/Parquet) decides the
    train/validation split via ``is_validation``.
    """
    check_source(cfg)
    if cfg.path == BUILTIN_STDLIB:
        yield from _stdlib_documents()
        return
    if cfg.path.startswith("hf:"):
        yield from _hf_documents(cfg.path[3:], cfg.hf_split, cfg.text_field)
        return
    root = Path(cfg.path).expanduser()
    for f in _data_files(root):
        yield from _file_documents(f, root if root.is_dir() else f, cfg.text_field)


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


class PackedWindows:
    """Random-access windows of ``seq_len + 1`` tokens over a 1-D token stream.

    Window ``i`` is ``tokens[i*seq_len : i*seq_len + seq_len + 1]`` as int32, so the
    windows' inputs tile the stream without gaps or overlap.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int):
        self.tokens = tokens
        self.seq_len = seq_len

    def __len__(self) -> int:
        return max(0, (len(self.tokens) - 1) // self.seq_len)

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} out of range [0, {len(self)})")
        start = i * self.seq_len
        return np.asarray(self.tokens[start : start + self.seq_len + 1], dtype=np.int32)


def train_batches(
    windows: PackedWindows,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """Infinite dataset of this host's share of each global batch: ``ds[step]`` is
    ``(batch_size // process_count, s + 1)`` int32.

    The window order is a seeded permutation, different in every epoch; host ``p`` takes
    windows ``p, p + P, p + 2P, ...`` of that order, so hosts never overlap.
    """
    if batch_size % process_count:
        raise DataError(
            f"train.batch_size={batch_size} must be a multiple of the {process_count} hosts."
        )
    ds = grain.MapDataset.source(windows).shuffle(seed=seed).repeat()
    ds = ds[process_index::process_count]
    return ds.batch(batch_size // process_count, drop_remainder=True)


def eval_batches(
    windows: PackedWindows,
    batch_size: int,
    num_batches: int,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """The first ``num_batches`` batches of validation windows in order (fewer when the
    validation stream is short): the same tokens at every evaluation."""
    per_host = max(1, batch_size // process_count)
    ds = grain.MapDataset.source(windows)[process_index::process_count]
    ds = ds.batch(per_host, drop_remainder=True)
    return ds[: min(num_batches, len(ds))]

"""Text documents: where they come from (``data.path``) and which are held out.

Sources (``data.path``):
* ``builtin:stdlib``: the ``.py`` files of this Python's standard library
  (``sysconfig.get_paths()["stdlib"]``, without tests and site-packages), sorted; real
  text (code, docstrings, comments) that ships with every Python. No download.
* a file or a folder of ``.txt``/``.md`` (one document per file), ``.jsonl`` (one
  document per line, field ``data.text_field``) and ``.parquet`` (column
  ``data.text_field``) files;
* a folder written by ``python -m train.prepare_data`` (memory-mapped tokens, the path for
  large corpora; read by ``train.data.text.corpus``);
* ``hf:NAME_OR_PATH``: a Hugging Face ``datasets`` dataset (``save_to_disk`` folder or a
  name), if the optional ``datasets`` package is installed.
"""

from __future__ import annotations

import json
import sysconfig
import zlib
from collections.abc import Iterator
from pathlib import Path

from train.config.schema import DataConfig
from train.errors import DataError

__all__ = ["BUILTIN_STDLIB", "check_source", "is_validation", "iter_documents"]

BUILTIN_STDLIB = "builtin:stdlib"
TEXT_SUFFIXES = (".txt", ".md", ".text", ".rst")
JSONL_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)
_SKIP_DIRS = {"test", "tests", "site-packages", "dist-packages", "__pycache__"}


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
        yield rel, _read_text(path)
    elif suffix in JSONL_SUFFIXES:
        yield from _jsonl_documents(path, rel, text_field)
    elif suffix in PARQUET_SUFFIXES:
        yield from _parquet_documents(path, rel, text_field)


def _read_text(path: Path) -> str:
    """``path``'s text; a binary file (a NUL byte, or bytes that are not UTF-8) is refused."""
    data = path.read_bytes()
    bad = data.find(b"\0")
    if bad < 0:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            bad = e.start
    raise DataError(
        f"{path} is not UTF-8 text (byte {bad + 1} is {data[bad : bad + 1]!r}): it looks like "
        f"a binary file. Exclude it from data.path, or convert it to UTF-8 text (iconv -t UTF-8)."
    )


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
            except (ValueError, RecursionError) as e:  # RecursionError: nested too deeply
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
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
        # UnicodeDecodeError: Parquet does not check that its text cells are UTF-8.
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
    supported = TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES
    if root.is_file() and root.suffix.lower() not in supported:
        hints = {
            ".csv": " A table of time series is forecasting data: data.path=series:FILE with "
            "a forecaster config (e.g. --config tirex_tiny).",
            ".bin": " Tokens from python -m train.prepare_data are given as its folder (the "
            "one holding meta.json).",
        }
        series = hints.get(root.suffix.lower(), "")
        raise DataError(
            f"data.path={cfg.path!r}: the suffix {root.suffix or '(none)'!r} is not a text "
            f"format the trainer reads ({', '.join(supported)}); a text file with another "
            f"name can be renamed to .txt.{series}"
        )
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

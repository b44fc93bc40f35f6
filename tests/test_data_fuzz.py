"""The readers of data files against hostile files: CSV and Parquet tables of series
(``read_series``), JSONL documents, a prepared token folder (``meta.json`` and the token
arrays) and ``tokenizer.json``. Random truncations, bit flips, NUL bytes, bytes that are not
UTF-8 and crafted content must each end in ``DataError`` naming the file, never another
exception, a hang, or a read past the stored bytes.

``XLSTM_JAX_FUZZ_COUNT`` mutations per format (40 by default) from the fixed seed
``XLSTM_JAX_FUZZ_SEED``; set them to search for more.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from helpers import FUZZ_COUNT, FUZZ_SEED, deadline, mutate_bytes, mutate_json

from train.config.schema import DataConfig
from train.data.series.tables import read_series
from train.data.series.timestamps import future_timestamps
from train.data.text.corpus import load_corpus
from train.data.text.documents import iter_documents
from train.data.text.tokenizer import ByteTokenizer, load_tokenizer
from train.errors import DataError

pytestmark = pytest.mark.one_jax

WIDE = b"timestamp,a,b\n2024-01-01,1.5,2\n2024-01-02,2.5,\n2024-01-03,NA,4\n2024-01-04,3,5\n"
LONG = b"id,timestamp,value\nx,1,1.0\nx,2,2.0\ny,1,3.0\ny,3,\ny,2,4e3\n"
# Cells of every wrong kind, put into a valid table.
CELLS = [
    b"",
    b"abc",
    b"inf",
    b"-inf",
    b"nan",
    b"1e999",
    b"9" * 400,
    b"\0",
    b"\xff\xfe",
    b'"a,b"',
    b'"unclosed',
    b"2024-13-45",
    b"2024-01-01T00:00:00+05:00",
    b"0x10",
    b"1,2,3",
    b"timestamp",
]


def _mutate_csv(rng: random.Random, data: bytes) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return mutate_bytes(rng, data)
    lines = data.split(b"\n")
    if kind == 1:  # a random cell (header included) replaced
        i = rng.randrange(len(lines) - 1)
        cells = lines[i].split(b",")
        cells[rng.randrange(len(cells))] = rng.choice(CELLS)
        lines[i] = b",".join(cells)
    elif kind == 2:  # a header duplicated, removed or renamed
        head = lines[0].split(b",")
        j = rng.randrange(len(head))
        head[j] = rng.choice([head[(j + 1) % len(head)], b"", b"id", b"value", b"\xff"])
        lines[0] = b",".join(head)
    else:  # rows dropped or repeated
        body = lines[1:-1]
        rng.shuffle(body)
        lines = [lines[0], *body[: rng.randrange(len(body) + 1)] * rng.randint(1, 2), b""]
    return b"\n".join(lines)


def _read(path, **kw):
    """``read_series`` and what the forecast command does with its timestamps."""
    with deadline(10):
        for s in read_series(path, **kw):
            assert s.values.dtype == np.float64 and s.values.ndim == 1 and s.values.size
            future_timestamps(s.timestamps, 3)


@pytest.mark.parametrize("table", ["wide", "long"])
def test_fuzz_csv(tmp_path, table):
    rng = random.Random(FUZZ_SEED)
    valid = WIDE if table == "wide" else LONG
    path = tmp_path / "series.csv"
    outcome = {"read": 0, "refused": 0}
    for _ in range(FUZZ_COUNT):
        path.write_bytes(_mutate_csv(rng, valid))
        try:
            _read(path)
            outcome["read"] += 1
        except DataError as err:
            assert str(path) in str(err), err
            outcome["refused"] += 1
    assert outcome["refused"] > 0


def _parquet(path) -> bytes:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "id": ["a", "a", "b", "b"],
            "timestamp": pa.array(np.arange(4).astype("datetime64[D]")),
            "value": [1.0, 2.0, None, 4.0],
        }
    )
    pq.write_table(table, path)
    return path.read_bytes()


def _each_mutation(path, mutate, read) -> None:
    """Writes ``FUZZ_COUNT`` mutations (``mutate(rng)``, fixed seed) to ``path``; each must
    read, or be refused with a ``DataError`` that names the file."""
    rng = random.Random(FUZZ_SEED)
    for _ in range(FUZZ_COUNT):
        path.write_bytes(mutate(rng))
        try:
            read(path)
        except DataError as err:
            assert str(path) in str(err), err


def test_fuzz_parquet(tmp_path):
    valid = _parquet(tmp_path / "valid.parquet")
    _read(tmp_path / "valid.parquet")
    _each_mutation(tmp_path / "series.parquet", lambda rng: mutate_bytes(rng, valid), _read)


@pytest.mark.parametrize(
    "columns",
    [
        {"id": [[1], [2]], "timestamp": [1, 2], "value": [1.0, 2.0]},
        {"id": ["a", "a"], "timestamp": [{"x": 1}, {"x": 2}], "value": [1.0, 2.0]},
        {"id": ["a", "a"], "timestamp": [1, 2], "value": [b"1", b"2"]},
        {"id": ["a", "a"], "timestamp": [1.0, float("nan")], "value": [1.0, 2.0]},
        {"timestamp": [[1], [2]], "a": [1.0, 2.0]},
        {"a": [True, False]},
        {"a": ["1", "x"]},
    ],
    ids=["list_ids", "struct_stamps", "binary_values", "nan_stamp", "list_stamps", "bool", "str"],
)
def test_parquet_columns_of_other_types_are_refused(tmp_path, columns):
    """Found by probing: nested or binary columns ended in pyarrow's ArrowNotImplementedError
    (sorting a struct) instead of a message."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table(columns), path)
    try:
        _read(path)
    except DataError as err:
        assert str(path) in str(err)


# --- JSONL documents ---------------------------------------------------------------------


def test_fuzz_jsonl(tmp_path):
    lines = [{"text": "hello"}, {"text": "ünïcode", "n": 1}, {"text": ""}]
    valid = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines).encode()
    rng = random.Random(FUZZ_SEED)
    path = tmp_path / "docs.jsonl"
    for _ in range(FUZZ_COUNT):
        data = mutate_bytes(rng, valid) if rng.random() < 0.8 else b"[" * 100_000 + b"\n"
        path.write_bytes(data)
        try:
            with deadline(10):
                docs = list(iter_documents(DataConfig(path=str(path))))
            assert all(isinstance(t, str) for _, t in docs)
        except DataError as err:
            assert str(path) in str(err), err


# --- a prepared token folder -------------------------------------------------------------


def _prepared(root, tokens: int = 40) -> dict:
    root.mkdir()
    ids = np.arange(tokens, dtype=np.uint16) % 257
    ids.tofile(root / "train.bin")
    ids[:8].tofile(root / "val.bin")
    meta = {
        "format": "xlstm-jax-tokens-v1",
        "source": "x",
        "tokenizer": "bytes",
        "vocab_size": 257,
        "eos_id": 256,
        "dtype": "uint16",
        "val_fraction": 0.1,
        "tokens": {"train": tokens, "val": 8},
        "created": "2024-01-01T00:00:00",
    }
    (root / "meta.json").write_text(json.dumps(meta))
    return meta


@pytest.mark.parametrize(
    "key, value",
    [
        ("tokens", {"train": 41, "val": 8}),
        ("tokens", {"train": -1, "val": 8}),
        ("tokens", {"train": 2**70, "val": 8}),
        ("tokens", {"train": "40", "val": 8}),
        ("tokens", [40, 8]),
        ("dtype", "float64"),
        ("dtype", "object"),
        ("dtype", "uint8"),
        ("dtype", "uint32"),
        ("dtype", ["uint16"]),
        ("dtype", "no such dtype"),
        ("tokenizer", None),
        ("tokenizer", ["bytes"]),
        ("vocab_size", 50304),
    ],
)
def test_a_meta_json_that_does_not_match_its_tokens_is_refused(tmp_path, key, value):
    """Found by probing: a meta.json declaring more tokens than stored, another dtype, or a
    value of the wrong type ended in KeyError / TypeError tracebacks, or memory-mapped the
    token files as something else (float64 tokens, object arrays)."""
    meta = _prepared(tmp_path / "p")
    meta[key] = value
    (tmp_path / "p" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError) as info:
        load_corpus(DataConfig(path=str(tmp_path / "p"), seq_len=4), ByteTokenizer())
    assert str(tmp_path / "p") in str(info.value)


def test_fuzz_prepared_folder(tmp_path):
    rng = random.Random(FUZZ_SEED)
    cfg_of = lambda root: DataConfig(path=str(root), seq_len=4)  # noqa: E731
    valid = _prepared(tmp_path / "valid")
    good = load_corpus(cfg_of(tmp_path / "valid"), ByteTokenizer())
    for i in range(FUZZ_COUNT):
        root = tmp_path / str(i)
        _prepared(root)
        target = rng.choice(["meta.json", "train.bin", "val.bin"])
        data = (root / target).read_bytes()
        if target == "meta.json" and rng.random() < 0.5:
            data = mutate_json(rng, valid)
        else:
            data = mutate_bytes(rng, data)
        (root / target).write_bytes(data)
        try:
            with deadline(10):
                corpus = load_corpus(cfg_of(root), ByteTokenizer())
            # What loads has the stored size and dtype, and ids the tokenizer knows.
            assert corpus.train.dtype == np.uint16 and corpus.train.size == valid["tokens"]["train"]
            assert int(corpus.train.max()) < 257 or target == "train.bin"
            np.testing.assert_array_equal(corpus.train[:0], good.train[:0])
        except DataError as err:
            assert str(root) in str(err), err


# --- tokenizer.json ----------------------------------------------------------------------


def _tokenizer_json() -> dict:
    vocab = {c: i for i, c in enumerate("abcdefgh")} | {"ab": 8, "<|endoftext|>": 9}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "BPE", "vocab": vocab, "merges": ["a b"], "unk_token": None},
    }


def _use_tokenizer(path):
    with deadline(10):
        tok = load_tokenizer(str(path))
        ids = tok.encode_batch(["ab cd", "hgf"])
        tok.decode(ids[0])
        assert tok.vocab_size >= 1 and 0 <= tok.eos_id < tok.vocab_size


def test_fuzz_tokenizer_json(tmp_path):
    pytest.importorskip("tokenizers")
    valid = _tokenizer_json()
    (tmp_path / "valid.json").write_text(json.dumps(valid))
    _use_tokenizer(tmp_path / "valid.json")
    _each_mutation(tmp_path / "tokenizer.json", lambda rng: mutate_json(rng, valid), _use_tokenizer)


@pytest.mark.parametrize(
    "model",
    [
        {"type": "BPE", "vocab": {"a": 2**31}, "merges": []},
        {"type": "BPE", "vocab": {"a": 2**32 + 5}, "merges": []},
        {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]},
        {"type": "WordPiece", "vocab": {"a": 0}, "unk_token": "[UNK]"},
        {"type": "Unigram", "vocab": [["a", 1e308]], "unk_id": 5},
    ],
    ids=["id_2_31", "id_2_32", "merge_unknown", "unk_missing", "unk_out_of_range"],
)
def test_a_crafted_tokenizer_json_is_refused_or_works(tmp_path, model):
    pytest.importorskip("tokenizers")
    tj = _tokenizer_json() | {"model": model}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(tj))
    try:
        _use_tokenizer(path)
    except DataError as err:
        assert str(path) in str(err)

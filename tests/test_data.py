"""Data pipeline: sources, tokenizers, packing, shuffling, resumption, host sharding."""

from __future__ import annotations

import json

import grain
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from train.config import DataConfig
from train.data.text import (
    PackedWindows,
    eval_batches,
    iter_documents,
    load_corpus,
    tokenize_documents,
    train_batches,
)
from train.data.text.tokenizer import ByteTokenizer, load_tokenizer, padded_vocab_size
from train.errors import DataError
from train.prepare_data import main as prepare_main

# CI runs these in leg 1 only: data sources, windows and tokenizers: NumPy and Python, not JAX.
pytestmark = pytest.mark.one_jax

SEQ = 8


@pytest.fixture
def windows():
    # 60 windows of SEQ inputs; the token value is its position, so windows are traceable.
    return PackedWindows(np.arange(60 * SEQ + 1, dtype=np.uint16), SEQ)


def _starts(batch: np.ndarray) -> list[int]:
    return [int(row[0]) // SEQ for row in batch]


def test_windows_tile_the_stream_and_shift_targets(windows):
    assert len(windows) == 60
    inputs = np.concatenate([windows[i][:-1] for i in range(len(windows))])
    np.testing.assert_array_equal(inputs, np.arange(60 * SEQ))
    w = windows[7]
    assert w.dtype == np.int32 and w.shape == (SEQ + 1,)
    np.testing.assert_array_equal(w[1:], w[:-1] + 1)  # targets are the next tokens
    with pytest.raises(IndexError):
        windows[60]


def test_an_epoch_sees_every_window_once_and_epochs_differ(windows):
    ds = train_batches(windows, batch_size=6, seed=3)
    epoch1 = [w for step in range(10) for w in _starts(ds[step])]
    epoch2 = [w for step in range(10, 20) for w in _starts(ds[step])]
    assert sorted(epoch1) == list(range(60)) == sorted(epoch2)
    assert epoch1 != list(range(60))  # shuffled
    assert epoch1 != epoch2  # reshuffled per epoch


def test_shuffle_is_deterministic_by_seed(windows):
    a = [ds_step.tolist() for ds_step in train_batches(windows, 6, seed=3)[:5]]
    b = [ds_step.tolist() for ds_step in train_batches(windows, 6, seed=3)[:5]]
    c = [ds_step.tolist() for ds_step in train_batches(windows, 6, seed=4)[:5]]
    assert a == b and a != c


def test_resuming_mid_epoch_continues_the_same_stream(windows):
    ds = train_batches(windows, 6, seed=1)
    uninterrupted = [ds[i] for i in range(4, 14)]  # crosses the epoch boundary at 10
    it = iter(train_batches(windows, 6, seed=1)[4:].to_iter_dataset(grain.ReadOptions(2, 4)))
    for expected in uninterrupted:
        np.testing.assert_array_equal(next(it), expected)


def test_hosts_split_each_global_batch_without_overlap(windows):
    full = train_batches(windows, 6, seed=2)
    hosts = [train_batches(windows, 6, seed=2, process_index=p, process_count=3) for p in range(3)]
    for step in range(12):
        parts = [_starts(h[step]) for h in hosts]
        assert all(len(p) == 2 for p in parts)
        merged = [w for p in parts for w in p]
        assert len(set(merged)) == 6
        assert sorted(merged) == sorted(_starts(full[step]))


def test_eval_batches_are_the_first_windows_in_order(windows):
    ev = eval_batches(windows, batch_size=4, num_batches=3)
    assert len(ev) == 3
    assert [_starts(b) for b in ev] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert len(eval_batches(windows, 4, 100)) == 15


def test_tokenized_stream_keeps_every_token_and_separates_documents():
    docs = [(f"doc{i}", "ab" * i + "é") for i in range(40)]
    tok = ByteTokenizer()
    parts = {"train": [], "val": []}
    for split, toks in tokenize_documents(iter(docs), tok, val_fraction=0.3):
        parts[split].append(toks)
    train, val = (np.concatenate(parts[s]) for s in ("train", "val"))
    assert len(val) > 0
    # Each document is its bytes plus one end-of-document token, none lost or repeated.
    assert len(train) + len(val) == sum(len(t.encode()) + 1 for _, t in docs)
    assert (train == tok.eos_id).sum() + (val == tok.eos_id).sum() == len(docs)
    decoded = tok.decode(train.tolist()).split("\n")
    assert "é" in decoded[0]


def test_builtin_stdlib_corpus_is_deterministic_and_split():
    cfg = DataConfig(path="builtin:stdlib")
    keys = [k for k, _ in iter_documents(cfg)]
    assert keys == sorted(keys) and "os.py" in keys and "json/decoder.py" in keys
    assert not any(k.startswith(("test/", "site-packages/")) for k in keys)
    a = load_corpus(cfg, ByteTokenizer())
    b = load_corpus(cfg, ByteTokenizer())
    np.testing.assert_array_equal(a.val, b.val)
    assert len(a.train) > 5_000_000 and 0 < len(a.val) < len(a.train) / 10


def _write_sources(root):
    (root / "a.txt").write_text("plain text document")
    (root / "sub").mkdir()
    with (root / "sub" / "b.jsonl").open("w") as f:
        f.write(json.dumps({"text": "first json"}) + "\n\n")
        f.write(json.dumps({"text": "second json", "id": 2}) + "\n")
    pq.write_table(pa.table({"text": ["parquet one", "parquet two"]}), root / "c.parquet")


def test_text_jsonl_and_parquet_sources(tmp_path):
    _write_sources(tmp_path)
    docs = list(iter_documents(DataConfig(path=str(tmp_path))))
    assert docs == [
        ("a.txt", "plain text document"),
        ("c.parquet:0", "parquet one"),
        ("c.parquet:1", "parquet two"),
        ("sub/b.jsonl:0", "first json"),
        ("sub/b.jsonl:2", "second json"),
    ]
    single = list(iter_documents(DataConfig(path=str(tmp_path / "sub" / "b.jsonl"))))
    assert [t for _, t in single] == ["first json", "second json"]
    with pytest.raises(DataError, match="data.text_field"):
        list(iter_documents(DataConfig(path=str(tmp_path), text_field="body")))


def test_missing_or_empty_data_path_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_corpus(DataConfig(path=str(tmp_path / "nope")), ByteTokenizer())
    with pytest.raises(DataError, match="no supported files"):
        load_corpus(DataConfig(path=str(tmp_path)), ByteTokenizer())
    (tmp_path / "x.txt").write_text("short")
    with pytest.raises(DataError, match="fewer than one window"):
        load_corpus(DataConfig(path=str(tmp_path), seq_len=64), ByteTokenizer())


def test_prepared_memmap_matches_in_memory_tokenization(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"{i:02d}.txt").write_text(f"document {i} " * (i + 1))
    out = tmp_path / "prepared"
    assert prepare_main(["--data", str(src), "--out", str(out), "--val-fraction", "0.2"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["tokens"]["val"] > 0
    direct = load_corpus(DataConfig(path=str(src), val_fraction=0.2, seq_len=16), ByteTokenizer())
    mapped = load_corpus(DataConfig(path=str(out), seq_len=16), ByteTokenizer())
    assert isinstance(mapped.train, np.memmap)
    np.testing.assert_array_equal(mapped.train, direct.train)
    np.testing.assert_array_equal(mapped.val, direct.val)
    other = tmp_path / "tok.json"
    _bpe_tokenizer(other)
    with pytest.raises(DataError, match="data.tokenizer=bytes"):
        load_corpus(DataConfig(path=str(out), seq_len=16), load_tokenizer(str(other)))


def _bpe_tokenizer(path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=100, special_tokens=["[UNK]", "</s>"])
    tok.train_from_iterator(["hello world", "hello there world"] * 10, trainer)
    tok.save(str(path))


def test_hf_tokenizer_file_by_path(tmp_path):
    _bpe_tokenizer(tmp_path / "tokenizer.json")
    for spec in (str(tmp_path / "tokenizer.json"), str(tmp_path)):
        tok = load_tokenizer(spec)
        assert tok.eos_id == 1  # its own </s>
        ids = tok.encode_batch(["hello world"])[0]
        assert tok.decode(ids).replace(" ", "") == "helloworld"
    padded = padded_vocab_size(tok.vocab_size)
    assert padded % 64 == 0 and tok.vocab_size <= padded < tok.vocab_size + 64
    assert padded_vocab_size(50257) == 50304 and padded_vocab_size(257) == 320


def test_unknown_tokenizer_offline_names_the_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as e:
        load_tokenizer("no-such-org/no-such-tokenizer")
    assert "--set data.tokenizer=bytes" in str(e.value) and "local path" in str(e.value)
    with pytest.raises(DataError, match="no such file"):
        load_tokenizer(str(tmp_path / "missing.json"))


def test_an_unreachable_hub_is_known_at_once_without_retries(monkeypatch):
    import socket

    import huggingface_hub

    from train.data.text import tokenizer

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for k in ("HF_ENDPOINT", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    tried = []

    def no_route(address, timeout=None):
        tried.append(address)
        raise OSError("no route")

    def must_not_download(*args, **kwargs):
        raise AssertionError("the hub client was asked although the hub is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_route)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", must_not_download)
    with pytest.raises(DataError, match="was not found offline"):
        tokenizer.load_tokenizer("gpt2")
    assert tried == [("huggingface.co", 443)]


def test_hf_datasets_folder_by_path(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["one", "two", "three"]}).save_to_disk(tmp_path / "ds")
    docs = list(iter_documents(DataConfig(path=f"hf:{tmp_path / 'ds'}")))
    assert docs == [("0", "one"), ("1", "two"), ("2", "three")]

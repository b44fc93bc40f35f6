"""Tokenize a corpus once into memory-mapped token files for ``train.main``.

    python -m train.prepare_data --data PATH --tokenizer gpt2 --out DIR [--val-fraction 0.005]

``PATH`` is anything ``data.path`` accepts (``builtin:stdlib``, text/JSONL/Parquet files or
folders, ``hf:NAME``). ``DIR`` receives ``train.bin`` and ``val.bin`` (raw uint16/uint32
token ids, each document followed by the end-of-document id) and ``meta.json``. Documents
are streamed, so memory stays flat for corpora of any size. Train with
``--set data.path=DIR data.tokenizer=<the same tokenizer>``.

Exit codes: 0 done, 2 a bad data path, tokenizer or output folder (found before anything
is written), 1 the disk refused the output (nothing half-written is left).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from train.cli import make_parser
from train.config import ConfigError, DataConfig
from train.data.text import (
    PREPARED_FORMAT,
    check_source,
    iter_documents,
    load_tokenizer,
    token_dtype,
    tokenize_documents,
)
from train.errors import run_command
from train.files import atomic_folder, atomic_write_text, read_only
from xlstm_jax.formats.jsonfile import read_json

__all__ = ["main", "prepare"]


def _check_out(out: Path) -> None:
    """Refuses an ``--out`` that is a file, or a folder holding anything but prepared data
    (replacing it would destroy what is there)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"--out {out} is a file; give a folder (new, or one made by this command)."
        )
    if out.is_dir() and any(out.iterdir()):
        meta = out / "meta.json"
        try:
            raw = read_json(meta, ConfigError, "")
        except ConfigError:
            raw = None
        ours = isinstance(raw, dict) and raw.get("format") == PREPARED_FORMAT
        if not ours:
            raise ConfigError(
                f"--out {out} is a folder with other files in it (not one made by "
                f"python -m train.prepare_data); nothing was written. Give a new or empty folder."
            )
        locked = sorted(p.name for p in out.iterdir() if p.is_file() and read_only(p))
        if locked:
            raise ConfigError(
                f"--out {out} holds files you cannot write ({', '.join(locked)}: read-only), "
                f"so they are not replaced; nothing was written. Make them writable "
                f"(chmod u+w) or give another --out."
            )


def prepare(data: DataConfig, out: Path) -> dict:
    """Writes ``out/{train,val}.bin`` and ``out/meta.json``; returns the metadata.

    Everything is checked before anything is written (the tokenizer, the source, ``out``),
    and the files are built in a temporary folder that replaces ``out`` only when complete:
    a bad source or an interrupted run leaves an earlier ``out`` exactly as it was.

    Raises:
        ConfigError: a bad tokenizer, source or ``out`` (``DataError`` for data problems,
            with the file and line).
    """
    out = Path(out)
    tokenizer = load_tokenizer(data.tokenizer, "--tokenizer")
    check_source(data)
    _check_out(out)
    dtype = token_dtype(tokenizer.vocab_size)
    counts = {"train": 0, "val": 0}
    bar = tqdm(unit=" tok", unit_scale=True, desc="tokenizing", file=sys.stderr)
    with atomic_folder(out) as tmp:
        files = {split: (tmp / f"{split}.bin").open("wb") for split in counts}
        try:
            docs = iter_documents(data)
            for split, toks in tokenize_documents(docs, tokenizer, data.val_fraction):
                files[split].write(toks.astype(dtype, copy=False).tobytes())
                counts[split] += len(toks)
                bar.update(len(toks))
        finally:
            bar.close()
            for f in files.values():
                f.close()
        meta = {
            "format": PREPARED_FORMAT,
            "source": data.path,
            "tokenizer": tokenizer.spec,
            "vocab_size": tokenizer.vocab_size,
            "eos_id": tokenizer.eos_id,
            "dtype": dtype.name,
            "val_fraction": data.val_fraction,
            "tokens": counts,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    p = make_parser(
        "python -m train.prepare_data",
        "Tokenize a corpus once into memory-mapped token files for train.main.",
        [
            "python -m train.prepare_data --data builtin:stdlib --out /tmp/stdlib_bytes",
            "python -m train.prepare_data --data /data/corpus_jsonl --tokenizer gpt2 "
            "--out /data/tokens",
        ],
        [
            "0 done",
            "2 a bad data path, tokenizer or output folder: found before anything is written",
            "1 the disk refused the output (full or read-only); nothing half-written is left",
        ],
    )
    p.add_argument("--data", required=True, help="builtin:stdlib, a file/folder, or hf:NAME")
    p.add_argument("--tokenizer", default="bytes", help="bytes, a tokenizer.json path, or gpt2")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--val-fraction", type=float, default=DataConfig.val_fraction)
    p.add_argument("--text-field", default=DataConfig.text_field)
    p.add_argument("--hf-split", default=DataConfig.hf_split)
    args = p.parse_args(argv)

    def body() -> int:
        data = DataConfig(
            path=args.data,
            tokenizer=args.tokenizer,
            val_fraction=args.val_fraction,
            text_field=args.text_field,
            hf_split=args.hf_split,
        )
        meta = prepare(data, Path(args.out))
        print(
            f"wrote {args.out}: {meta['tokens']['train']:,} train and "
            f"{meta['tokens']['val']:,} validation tokens ({meta['dtype']}, tokenizer "
            f"{meta['tokenizer']}); train with --set data.path={args.out} "
            f"data.tokenizer={meta['tokenizer']}"
        )
        return 0

    return run_command(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

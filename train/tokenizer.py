"""Tokenizers: the built-in byte-level one and Hugging Face ``tokenizers`` files.

``load_tokenizer(spec)`` takes ``bytes``, a path to a ``tokenizer.json`` (or a folder
holding one), or a hub name such as ``gpt2``. Names are looked up in the local Hugging
Face cache first; without a network (or with ``HF_HUB_OFFLINE=1``) a name that is not
cached raises ``DataError`` naming the fixes, before any compute starts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from xlstm_jax.config import ConfigError

__all__ = ["ByteTokenizer", "DataError", "HFTokenizer", "load_tokenizer", "padded_vocab_size"]

VOCAB_MULTIPLE = 64
# Hub repositories tried for a bare name (GPT-2 moved under openai-community/).
_ALIASES = {"gpt2": ("openai-community/gpt2", "gpt2")}
_EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "[SEP]")


class DataError(ConfigError):
    """Data or tokenizer problem found before any compute; the message names the fix."""


def padded_vocab_size(n: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (tensor-core friendly shapes)."""
    return -(-n // multiple) * multiple


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, end-of-document 256 (vocabulary 257, padded to 320)."""

    spec = "bytes"
    vocab_size = 257
    eos_id = 256

    def encode_batch(self, texts: Iterable[str]) -> list[np.ndarray]:
        """Token ids (uint8 values as int32 arrays), one array per text."""
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.int32) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """Bytes back to text; the end-of-document token becomes a newline."""
        return bytes(i if i < 256 else 10 for i in ids).decode("utf-8", errors="replace")


class HFTokenizer:
    """A Hugging Face ``tokenizers.Tokenizer`` with an end-of-document id.

    The end-of-document id is the tokenizer's own (``<|endoftext|>``, ``</s>``, ...) when
    it has one, else one id past its vocabulary (the padded model vocabulary covers it).
    """

    def __init__(self, path: Path, spec: str):
        from tokenizers import Tokenizer

        self.spec = spec
        self.path = path
        self._tok = Tokenizer.from_file(str(path))
        n = self._tok.get_vocab_size(with_added_tokens=True)
        eos = next(
            (
                self._tok.token_to_id(t)
                for t in _EOS_CANDIDATES
                if self._tok.token_to_id(t) is not None
            ),
            None,
        )
        self.eos_id = n if eos is None else eos
        self.vocab_size = max(n, self.eos_id + 1)

    def encode_batch(self, texts: Iterable[str]) -> list[np.ndarray]:
        """Token ids, one int32 array per text (special tokens are not added)."""
        encs = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encs]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids back to text."""
        return self._tok.decode([int(i) for i in ids])


def _from_hub(name: str) -> Path | None:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    repos = _ALIASES.get(name, (name,))
    for repo in repos:
        hit = try_to_load_from_cache(repo, "tokenizer.json")
        if isinstance(hit, str):
            return Path(hit)
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return None
    for repo in repos:
        try:
            return Path(hf_hub_download(repo, "tokenizer.json", etag_timeout=5))
        except Exception:  # noqa: BLE001 - any failure (offline, 404, auth) means "not found"
            continue
    return None


def load_tokenizer(spec: str) -> ByteTokenizer | HFTokenizer:
    """The tokenizer named by ``data.tokenizer``.

    Raises:
        DataError: the tokenizer is neither ``bytes``, a readable path, nor a cached (or
            downloadable) hub name; the message names the fixes.
    """
    if spec == "bytes":
        return ByteTokenizer()
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.is_file():
        return HFTokenizer(path, spec)
    # A hub name is "name" or "org/name"; anything else that is not on disk is a bad path.
    if spec.endswith(".json") or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise DataError(
            f"data.tokenizer={spec!r}: no such file. Give the path of a tokenizer.json (or "
            f"its folder), or use the built-in byte tokenizer: --set data.tokenizer=bytes."
        )
    found = _from_hub(spec)
    if found is None:
        raise DataError(
            f"data.tokenizer={spec!r} was not found offline (not a local file, not in the "
            f"Hugging Face cache, and it could not be downloaded). Fixes: give a local path, "
            f"--set data.tokenizer=/path/to/tokenizer.json; or use the built-in byte "
            f"tokenizer, --set data.tokenizer=bytes; or, on a machine with a network, "
            f'fetch it once into the cache: python -c "import huggingface_hub as h; '
            f"h.hf_hub_download('{_ALIASES.get(spec, (spec,))[0]}', 'tokenizer.json')\"."
        )
    return HFTokenizer(found, spec)

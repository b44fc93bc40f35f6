"""Tokenizers: the built-in byte-level one and Hugging Face ``tokenizers`` files.

``load_tokenizer(spec)`` takes ``bytes``, a path to a ``tokenizer.json`` (or a folder
holding one), or a hub name (``gpt2``, ``org/name`` or ``hf:NAME``). Hub names are looked
up in the local Hugging Face cache first and downloaded only if missing; without a network
(or with ``HF_HUB_OFFLINE=1``) a name that is not cached raises ``DataError`` naming the
fixes, before any compute starts. Other bare words never reach the network: a typo such as
``byte`` gets "did you mean 'bytes'?".
"""

from __future__ import annotations

import difflib
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from train.errors import DataError

__all__ = ["ByteTokenizer", "HFTokenizer", "load_tokenizer", "padded_vocab_size"]

VOCAB_MULTIPLE = 64
# Hub repositories tried for a bare name (GPT-2 moved under openai-community/).
_ALIASES = {"gpt2": ("openai-community/gpt2", "gpt2")}
# The most ids a tokenizer may have: ids are int32 here and in the model.
_MAX_VOCAB = 2**31 - 1
_EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "[SEP]")


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
        # The largest id, not the count of ids: a file may leave gaps (or give 2**31).
        ids = self._tok.get_vocab(with_added_tokens=True).values()
        n = max(self._tok.get_vocab_size(with_added_tokens=True), max(ids, default=-1) + 1)
        if n > _MAX_VOCAB:  # ids are int32 (and the embedding would not fit anyway)
            raise ValueError(f"its vocabulary has {n:,} ids, more than {_MAX_VOCAB:,}")
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
        try:
            encs = self._tok.encode_batch(list(texts), add_special_tokens=False)
        except BaseException as e:
            raise self._broken(e) from None
        return [np.asarray(e.ids, dtype=np.int32) for e in encs]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids back to text."""
        try:
            return self._tok.decode([int(i) for i in ids])
        except BaseException as e:
            raise self._broken(e) from None

    def _broken(self, e: BaseException) -> BaseException:
        """A ``DataError`` naming the file for a failure inside the Rust tokenizer: its
        errors are plain ``Exception``s, and a panic (a broken file that loaded) is a
        ``PanicException``, which derives from ``BaseException``. Anything else (Ctrl-C)
        is returned as it is."""
        if not _is_tokenizer_failure(e):
            return e
        return DataError(
            f"the tokenizer {self.path} failed ({' '.join(str(e).split())[:300]}): the file "
            f"is damaged or of a kind this tokenizers version cannot run; replace it, or use "
            f"--set data.tokenizer=bytes."
        )


def _from_hub(name: str, download: bool = True) -> Path | None:
    """The cached ``tokenizer.json`` of hub repository ``name``, downloading it only when
    asked and the network is allowed (``HF_HUB_OFFLINE`` unset)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    repos = _ALIASES.get(name, (name,))
    for repo in repos:
        hit = try_to_load_from_cache(repo, "tokenizer.json")
        if isinstance(hit, str):
            return Path(hit)
    if not download or os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return None
    if not _hub_reachable():
        return None
    for repo in repos:
        try:
            return Path(hf_hub_download(repo, "tokenizer.json", etag_timeout=5))
        except Exception:  # noqa: BLE001 - any failure (offline, 404, auth) means "not found"
            continue
    return None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host answers a TCP connection within ``timeout`` seconds.

    Offline is knowable at once: without this check the hub client retries for half a
    minute before giving up. Behind a proxy the direct connection says nothing, so the
    client is left to try.
    """
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError:  # no DNS, no route, refused, timed out
        return False
    return True


def _hub_name(spec: str) -> str | None:
    """The hub repository ``spec`` asks for explicitly, or None.

    Explicit means ``hf:NAME``, an ``org/name`` repository, or a known alias (``gpt2``);
    any other bare word is a local name that was not found, and never goes to the network.
    """
    if spec.startswith("hf:"):
        return spec[3:]
    if spec in _ALIASES or spec.count("/") == 1:
        return spec
    return None


def _is_tokenizer_failure(e: BaseException) -> bool:
    # pyo3's PanicException (a Rust panic) is a BaseException so that `except Exception`
    # does not swallow it; here it means a damaged file, not a reason to crash.
    return isinstance(e, Exception) or type(e).__name__ == "PanicException"


def _hf_tokenizer(path: Path, spec: str, flag: str | None = None) -> HFTokenizer:
    try:
        return HFTokenizer(path, spec)
    except BaseException as e:
        if not _is_tokenizer_failure(e):
            raise
        raise DataError(
            f"{_given(spec, flag)}: {path} is not a valid tokenizer.json ({e}). Give a "
            f"Hugging Face tokenizers file (tokenizer.json), or use {_use('bytes', flag)}."
        ) from None


def _given(spec: str, flag: str | None) -> str:
    """How the user gave ``spec``: a command's flag, or the config key."""
    return f"{flag} {spec}" if flag else f"data.tokenizer={spec!r}"


def _use(value: str, flag: str | None) -> str:
    """The argument that gives ``value`` in the command the tokenizer came from."""
    return f"{flag} {value}" if flag else f"--set data.tokenizer={value}"


def load_tokenizer(spec: str, flag: str | None = None) -> ByteTokenizer | HFTokenizer:
    """The tokenizer named by ``data.tokenizer``.

    ``spec`` is ``bytes``, a path to a ``tokenizer.json`` (or its folder), or a hub name
    (``gpt2``, ``org/name``, or ``hf:NAME``). Only a hub name is looked up on the network,
    and only when it is not in the local cache; a bare word close to a known name (e.g.
    ``byte``) gets "did you mean" at once. ``flag`` names the command's option that gave
    ``spec`` (e.g. ``--tokenizer``), so that the messages name that instead of the config.

    Raises:
        DataError: the tokenizer is neither ``bytes``, a readable tokenizer file, nor a
            cached (or downloadable) hub name; the message names the fixes.
    """
    if spec == "bytes":
        return ByteTokenizer()
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.is_file():
        return _hf_tokenizer(path, spec, flag)
    # A hub name is "name" or "org/name"; anything else that is not on disk is a bad path.
    if spec.endswith(".json") or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise DataError(
            f"{_given(spec, flag)}: no such file. Give the path of a tokenizer.json (or "
            f"its folder), or use the built-in byte tokenizer: {_use('bytes', flag)}."
        )
    repo = _hub_name(spec)
    cached = _from_hub(spec, download=False) if repo is None else None
    if cached is not None:  # a bare hub name already in the local cache
        return _hf_tokenizer(cached, spec, flag)
    if repo is None:
        close = difflib.get_close_matches(spec, ["bytes", *_ALIASES], n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise DataError(
            f"{_given(spec, flag)} is not a known tokenizer: {hint}Use bytes (built in), "
            f"a path to a tokenizer.json, or a Hugging Face hub name written as hf:NAME or "
            f"ORG/NAME (e.g. gpt2, openai-community/gpt2)."
        )
    found = _from_hub(repo)
    if found is None:
        raise DataError(
            f"{_given(spec, flag)} was not found offline (not a local file, not in the "
            f"Hugging Face cache, and it could not be downloaded). Fixes: give a local path, "
            f"{_use('/path/to/tokenizer.json', flag)}; or use the built-in byte "
            f"tokenizer, {_use('bytes', flag)}; or, on a machine with a network, "
            f'fetch it once into the cache: python -c "import huggingface_hub as h; '
            f"h.hf_hub_download('{_ALIASES.get(repo, (repo,))[0]}', 'tokenizer.json')\"."
        )
    return _hf_tokenizer(found, spec, flag)

"""Pieces of ``lm_quality.py``: the BPE corpus, per-position validation loss, FLOPs per token.

Shapes: B windows of L + 1 tokens (the model reads L tokens and is scored on the next
token at each of them), V vocabulary.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

BPE_VOCAB = 4096  # learnt on the training documents only; the model pads it to 4160


def train_bpe(out: Path, vocab_size: int = BPE_VOCAB) -> Path:
    """Learns a byte-level BPE tokenizer on the built-in corpus's training documents (this
    Python's standard library, validation documents held out as ``train.main`` holds them
    out) and writes it to ``out`` (a ``tokenizer.json``). Deterministic; no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from train.config import DataConfig
    from train.data.text.documents import is_validation, iter_documents

    cfg = DataConfig()
    texts = [t for key, t in iter_documents(cfg) if not is_validation(key, cfg.val_fraction)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out))
    return out


def prepare_corpus(corpus: str, root: Path) -> tuple[str, str]:
    """The ``(data.path, data.tokenizer)`` of ``corpus`` (``bytes`` or ``bpe``), tokenized
    once into ``root`` with ``python -m train.prepare_data`` (memory-mapped; later runs
    skip the tokenizing)."""
    folder = root / f"stdlib_{corpus}"
    if corpus == "bytes":
        tokenizer = "bytes"
    elif corpus == "bpe":
        tok_path = root / "bpe_tokenizer.json"
        if not tok_path.exists():
            print(f"learning a {BPE_VOCAB}-token BPE on the training documents", flush=True)
            train_bpe(tok_path)
        tokenizer = str(tok_path)
    else:
        raise ValueError(f"unknown corpus {corpus!r}: bytes or bpe")
    if not (folder / "meta.json").exists():
        cmd = [sys.executable, "-m", "train.prepare_data", "--data", "builtin:stdlib"]
        cmd += ["--tokenizer", tokenizer, "--out", str(folder)]
        subprocess.run(cmd, check=True)
    return str(folder), tokenizer


def vocab_size(folder: str) -> int:
    """The model vocabulary of a prepared corpus (its tokenizer's, padded as train.main pads)."""
    from train.data.text.tokenizer import padded_vocab_size

    meta = json.loads((Path(folder) / "meta.json").read_text())
    return padded_vocab_size(int(meta["vocab_size"]))


def val_windows(tokens: np.ndarray, length: int, count: int) -> np.ndarray:
    """The first ``count`` non-overlapping windows of ``length + 1`` validation tokens,
    int32 (count, length + 1). The same text opens every length's windows."""
    need = count * (length + 1)
    if len(tokens) < need:
        raise ValueError(f"{len(tokens)} validation tokens, fewer than {count} x {length + 1}")
    return np.asarray(tokens[:need], np.int32).reshape(count, length + 1)


def cut_windows(windows: np.ndarray, length: int) -> np.ndarray:
    """Windows (B, M + 1) cut into pieces of ``length + 1`` tokens: (B * M / length,
    length + 1). Consecutive pieces share one token, so the pieces score exactly the
    targets the whole windows score, each with at most ``length`` tokens of context."""
    m = windows.shape[1] - 1
    if m % length:
        raise ValueError(f"length {length} does not divide the windows' {m}")
    return np.stack(
        [w[j * length : (j + 1) * length + 1] for w in windows for j in range(m // length)]
    )


def position_loss(model, windows: np.ndarray, batch: int = 4) -> np.ndarray:
    """Cross-entropy (nats) of the next token at each position, averaged over windows:
    float64 (L,) for windows (B, L + 1). The model reads each whole window at once."""
    from flax import nnx

    graphdef, state = nnx.split(model)

    @jax.jit
    def losses(state, w):
        m = nnx.merge(graphdef, state)
        logits = m(w[:, :-1]).astype(jnp.float32)
        return optax.softmax_cross_entropy_with_integer_labels(logits, w[:, 1:]).sum(0)

    total = np.zeros(windows.shape[1] - 1)
    for i in range(0, len(windows), batch):
        total += np.asarray(losses(state, jnp.asarray(windows[i : i + batch])), np.float64)
    return total / len(windows)


def flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token: 3x XLA's count of the compiled forward on one row of
    ``seq_len`` tokens (backward about twice the forward), logits included."""
    from flax import nnx

    graphdef, state = nnx.split(model)

    def fwd(state, x):
        return nnx.merge(graphdef, state)(x)

    x = jax.ShapeDtypeStruct((1, seq_len), jnp.int32)
    cost = jax.jit(fwd).lower(state, x).compile().cost_analysis()
    if isinstance(cost, list | tuple):  # older JAX: one dict per computation
        cost = cost[0]
    return 3.0 * float(cost["flops"]) / seq_len

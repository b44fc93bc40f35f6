"""What a synthetic task is (``SyntheticTask``: vocabulary, chance level, generator), one
generated example (``Example``), and the accuracy scaled by a task's chance level."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Example", "SyntheticTask", "scaled_accuracy"]


@dataclass(frozen=True)
class Example:
    """One generated sequence: ``tokens`` (int32, all ids non-negative), ``scored``
    (bool, same length: whether predicting this token is scored) and ``length`` (n, the
    input length the metrics are bucketed by)."""

    tokens: np.ndarray
    scored: np.ndarray
    length: int


def scaled_accuracy(acc, s_rand: float):
    """``(acc - s_rand) / (1 - s_rand)``: 0 at chance level, 1 when perfect."""
    return (acc - s_rand) / (1.0 - s_rand)


@dataclass(frozen=True)
class SyntheticTask:
    """A task's vocabulary, chance level and generator.

    Attributes:
        name: the name after ``synthetic:``.
        vocab_size: the paper's vocabulary size (the model's ``vocab_size`` must be >= it).
        s_rand: accuracy of guessing (the paper's Table 6).
        sep: the separator id between input and answer (formal languages).
        answer_len: ``n -> k``, the number of answer tokens for input length n; for the
            tasks whose answer length depends on the sample (closed by an END symbol) the
            most there can be, which sizes the batches.
        valid_length: which input lengths the task can make (e.g. odd for arithmetic).
        generate: ``(rng, n) -> (x, y)`` (formal languages).
        kind: ``"formal"`` or ``"mqar"``.
    """

    name: str
    vocab_size: int
    s_rand: float
    sep: int = -1
    answer_len: Callable[[int], int] = lambda n: 1
    valid_length: Callable[[int], bool] = lambda n: n >= 1
    generate: Callable | None = None
    kind: str = "formal"

    def width(self, n: int) -> int:
        """Tokens in an example with input length n (input, SEP, answer)."""
        return n + 1 + self.answer_len(n)

    def lengths(self, lo: int, hi: int) -> np.ndarray:
        """The input lengths in ``[lo, hi]`` the task can make."""
        out = np.array([n for n in range(lo, hi + 1) if self.valid_length(n)], np.int64)
        if not len(out):
            raise ValueError(f"synthetic:{self.name} makes no input length in [{lo}, {hi}].")
        return out

    def example(self, rng: np.random.Generator, n: int) -> Example:
        """One formal-language example of input length n."""
        x, y = self.generate(rng, n)
        if len(x) != n or not 1 <= len(y) <= self.answer_len(n):
            raise ValueError(f"synthetic:{self.name} made a malformed example for n = {n}.")
        tokens = np.concatenate([x, [self.sep], y]).astype(np.int32)
        scored = np.zeros(len(tokens), bool)
        scored[n + 1 :] = True
        return Example(tokens, scored, n)

"""MQAR, multi-query associative recall (App. B.1.2; the Zoology generator of Arora et
al. 2023): key-value pairs, then the keys again at power-law gaps; the model is scored
where it must recall a queried key's value."""

from __future__ import annotations

import numpy as np

from train.data.synthetic.example import Example, SyntheticTask

__all__ = ["MQAR", "MQAR_POWER_A", "MQAR_VOCAB", "mqar_example"]

MQAR_VOCAB = 8192
# Zoology's power-law exponent for the query gaps.
MQAR_POWER_A = 0.01
MQAR = SyntheticTask("mqar", MQAR_VOCAB, 0.0, kind="mqar")


def mqar_example(rng: np.random.Generator, length: int, num_kv_pairs: int) -> Example:
    """One MQAR sequence of ``length`` tokens with ``num_kv_pairs`` pairs (Zoology layout).

    Raises:
        ValueError: the queries do not fit (``length`` must be >= 4 * num_kv_pairs).
    """
    p = num_kv_pairs
    space = (length - 2 * p) // 2
    if space < p:
        raise ValueError(
            f"MQAR with {p} key-value pairs needs a context of at least {4 * p} tokens; got "
            f"{length}: raise data.seq_len or lower data.num_kv_pairs."
        )
    half = MQAR_VOCAB // 2
    keys = rng.choice(np.arange(1, half), p, replace=False)
    values = rng.choice(np.arange(half, MQAR_VOCAB), p, replace=False)
    tokens = rng.integers(0, MQAR_VOCAB, length)
    tokens[0 : 2 * p : 2], tokens[1 : 2 * p : 2] = keys, values
    g = np.arange(1, space + 1, dtype=np.float64)
    prob = MQAR_POWER_A * g ** (MQAR_POWER_A - 1)
    gaps = rng.choice(space, p, replace=False, p=prob / prob.sum())
    query = 2 * p + 2 * gaps
    tokens[query], tokens[query + 1] = keys, values
    scored = np.zeros(length, bool)
    scored[query + 1] = True
    return Example(tokens.astype(np.int32), scored, length)

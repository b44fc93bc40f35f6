"""Packed windows over a token stream, and the batches of training and evaluation.

Shapes: b batch, s sequence length (``data.seq_len``). A training example is a window of
``s + 1`` consecutive tokens (inputs ``[:-1]``, targets ``[1:]``): window ``i`` is
``tokens[i*s : i*s + s + 1]``, so each token is an input exactly once per epoch.

Loading uses ``grain.MapDataset``: a seeded shuffle that changes every epoch, then each
host takes every ``process_count``-th window, then batches. The dataset is indexed by the
step, so resuming at step ``k`` is just reading from index ``k``: no iterator state to save.
"""

from __future__ import annotations

import grain
import numpy as np

from train.errors import DataError

__all__ = ["PackedWindows", "eval_batches", "train_batches"]


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

"""Training data for the forecaster (``data.path=series:...``): windows of real series.

``data.path`` names the series:

* ``series:m3`` / ``series:m3/monthly`` / ``series:m1+m3+tourism``: the competitions'
  *training* parts (``train.data.series.competitions``; the test horizons are never read
  here), all subsets or one (``+`` joins several names, each with an optional
  ``/subset``);
* ``series:PATH``: a CSV or Parquet file of the user's own series
  (``train.data.series.tables``: wide, or long with id, timestamp and value columns).

A fraction ``data.val_fraction`` of the series, chosen by a hash of their id, is held out
for validation. A training row is a window of ``data.seq_len`` values (a multiple of the
patch size) ending at a random point of a random training series, left-padded with NaN
where the series is shorter. The model reads patches ``0..N-2`` and is scored on each next
patch (``xlstm_jax.quantile_loss``); with probability
``data.series_mask_rate`` a row hides a contiguous run of up to ``data.series_mask_span``
input patches (TiRex's contiguous patch masking), so the model learns to forecast across
missing patches, which is how it rolls out beyond one patch. Validation rows are the
window ending at each held-out series' last value, unmasked. Everything is a pure function
of ``(seed, step)``, so a resumed run sees the same batches.

Shapes: b rows, L = ``data.seq_len`` values, N = L / P patches.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np

from train.errors import DataError

__all__ = [
    "PREFIX",
    "SeriesBatch",
    "TrainWindows",
    "held_out",
    "last_window",
    "load_training_series",
]

PREFIX = "series:"
_TRAIN_STREAM = 11  # keeps the training draws apart from any other stream of the seed


class SeriesBatch(NamedTuple):
    """``values`` float32 (..., L), NaN = missing; ``hidden`` bool (..., N - 1): input
    patches hidden from the model (their targets stay scored)."""

    values: np.ndarray
    hidden: np.ndarray


def _parse(spec: str) -> list[tuple[str, str | None]]:
    from train.data.series.competitions import available

    names = available()
    out = []
    for part in spec.split("+"):
        name, _, subset = part.strip().lower().partition("/")
        if name not in names:
            return []
        if subset and subset not in names[name]:
            raise DataError(
                f"data.path=series:{spec}: {name} has no subset {subset!r}; its subsets are "
                f"{', '.join(names[name])}."
            )
        out.append((name, subset or None))
    return out


def load_training_series(path: str) -> tuple[list[str], list[np.ndarray], str]:
    """``(ids, series (float64 1-D each), description)`` of ``data.path=series:...``.

    Raises:
      DataError: an unknown competition or subset, a missing data package, a file that
        cannot be read (named), or no series at all.
    """
    spec = path.removeprefix(PREFIX)
    if not spec:
        raise DataError(
            "data.path=series: needs a name: series:m3, series:m3/monthly, "
            "series:m1+m3+tourism, or series:PATH (a CSV or Parquet file)."
        )
    comps = _parse(spec)
    ids: list[str] = []
    values: list[np.ndarray] = []
    if comps:
        from train.data.series.competitions import available, load_competition

        for name, subset in comps:
            for sub in [subset] if subset else list(available()[name]):
                for s in load_competition(name, sub):
                    ids.append(f"{name}/{sub}/{s.id}")
                    values.append(np.asarray(s.train, np.float64))
        desc = f"competition training parts {spec}"
    else:
        from pathlib import Path

        from train.data.series.competitions import available
        from train.data.series.tables import read_series

        if not Path(spec).exists() and "/" not in spec and "." not in spec:
            raise DataError(
                f"data.path=series:{spec}: not a competition ({', '.join(available())}; "
                "join several with +, pick a subset with /) and no such file; give "
                "series:m3, series:m3/monthly or series:PATH.csv / .parquet."
            )

        for s in read_series(spec):
            ids.append(s.name)
            values.append(np.asarray(s.values, np.float64))
        desc = f"series from {spec}"
    if not values:
        raise DataError(f"data.path={path}: no series found.")
    return ids, values, desc


def held_out(series_id: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(series_id.encode()).digest()[:8], "little")
    return h / 2**64 < fraction


def last_window(s: np.ndarray, end: int, length: int) -> np.ndarray:
    out = np.full(length, np.nan, np.float32)
    part = s[max(0, end - length) : end]
    out[length - part.size :] = part
    return out


class TrainWindows:
    """``ds[step]``: the global ``SeriesBatch`` of a step, a pure function of (seed, step)."""

    def __init__(self, series, batch_size, length, patch, mask_rate, mask_span, seed):
        self.series, self.batch_size, self.length, self.patch = series, batch_size, length, patch
        self.mask_rate, self.mask_span, self.seed = mask_rate, mask_span, seed

    def __len__(self) -> int:
        return 2**40  # endless for any practical run

    def __getitem__(self, step: int) -> SeriesBatch:
        rng = np.random.default_rng([self.seed, _TRAIN_STREAM, int(step)])
        b, L, P = self.batch_size, self.length, self.patch
        n_in = L // P - 1
        values = np.empty((b, L), np.float32)
        hidden = np.zeros((b, n_in), bool)
        for r in range(b):
            s = self.series[rng.integers(len(self.series))]
            # Windows end after at least two patches of the series (or at its end when it
            # is shorter): the scaling of fewer values is too noisy to learn from (a window
            # of two values has a scale of ~0 and losses in the thousands).
            end = int(rng.integers(min(s.size, 2 * P), s.size + 1))
            values[r] = last_window(s, end, L)
            if self.mask_span and rng.random() < self.mask_rate:
                k = int(rng.integers(1, min(self.mask_span, n_in) + 1))
                start = int(rng.integers(0, n_in - k + 1))
                hidden[r, start : start + k] = True
        return SeriesBatch(values, hidden)

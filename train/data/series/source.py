"""The forecaster's data source (``data.path=series:...``) and its evaluator: windows of
real series (``train.data.series.windows``), the pinball loss of each next patch's
quantiles (``xlstm_jax.quantile_loss``) and its mean over the held-out series.

Shapes: b rows, L = ``data.seq_len`` values, N = L / P patches.
"""

from __future__ import annotations

import grain
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from train.data.evaluation import TextEvaluator
from train.data.series.windows import (
    SeriesBatch,
    TrainWindows,
    held_out,
    last_window,
    load_training_series,
)
from train.errors import DataError

__all__ = ["ForecastEvaluator", "SeriesSource"]


class ForecastEvaluator(TextEvaluator):
    """The forecaster's mean pinball loss (``val_loss``, scaled domain) over the fixed
    validation windows (each held-out series' last window)."""

    def __call__(self, params) -> dict[str, float]:
        return {
            "val_loss": float(
                np.mean([float(self._fn(params, self._put(b))) for b in self.batches])
            )
        }

    def describe(self, record: dict) -> str:
        return f"val_loss {record['val_loss']:.4f} (pinball)"

    @classmethod
    def of(cls, loss, graphdef, rest, batches, put, note: str) -> ForecastEvaluator:
        """The evaluator of ``loss(model, batch)`` over ``batches``, the model merged from
        ``graphdef``, the evaluated params and ``rest``; ``note`` said when ``batches`` is
        empty (evaluation off)."""

        def loss_fn(params, batch):
            return loss(nnx.merge(graphdef, params, rest), batch)

        return cls(loss_fn, batches, put, note)


class SeriesSource:
    """The forecaster's data source (``train.data.sources.DataSource``)."""

    vocab_size = 0  # no token vocabulary
    vocab_origin = ""
    max_scored = None
    reset_id = None

    def __init__(self, cfg, patch_size: int):
        self.cfg, self.patch = cfg, patch_size
        if cfg.seq_len % patch_size or cfg.seq_len < 2 * patch_size:
            raise DataError(
                f"data.seq_len={cfg.seq_len} must be a multiple of the model's patch size "
                f"{patch_size} and at least two patches (inputs and a next patch), e.g. "
                f"{max(2, cfg.seq_len // patch_size) * patch_size}."
            )
        self._ids, self._series, self._desc = load_training_series(cfg.path)
        self.train: list[np.ndarray] = []
        self.val: list[np.ndarray] = []

    def prepare(self) -> str:
        for sid, s in zip(self._ids, self._series, strict=True):
            observed = np.flatnonzero(~np.isnan(s))
            if observed.size < 2:
                continue  # nothing to predict from
            s = s[: observed[-1] + 1]  # windows end at an observed value
            (self.val if held_out(sid, self.cfg.val_fraction) else self.train).append(s)
        if not self.train:
            raise DataError(
                f"data.path={self.cfg.path}: no training series with two or more values "
                f"(lower data.val_fraction={self.cfg.val_fraction}?)."
            )
        n_values = sum(int(np.sum(~np.isnan(s))) for s in self.train)
        return (
            f"data: {self._desc}; {len(self.train):,} training series ({n_values:,} values), "
            f"{len(self.val):,} held out for validation; windows of {self.cfg.seq_len} values "
            f"({self.cfg.seq_len // self.patch} patches of {self.patch})"
        )

    def loss(self, model, batch: SeriesBatch) -> jax.Array:
        from xlstm_jax import quantile_loss

        return quantile_loss(model, batch.values, batch.hidden)

    def abstract_batch(self, leading: tuple[int, ...]) -> SeriesBatch:
        L, n_in = self.cfg.seq_len, self.cfg.seq_len // self.patch - 1
        return SeriesBatch(
            jax.ShapeDtypeStruct((*leading, L), jnp.float32),
            jax.ShapeDtypeStruct((*leading, n_in), jnp.bool_),
        )

    def train_batches(self, batch_size, seed, process_index, process_count) -> grain.MapDataset:
        c = self.cfg
        src = TrainWindows(
            self.train,
            batch_size,
            c.seq_len,
            self.patch,
            c.series_mask_rate,
            c.series_mask_span,
            seed,
        )
        ds = grain.MapDataset.source(src)
        if process_count > 1:
            ds = ds.map(lambda b: SeriesBatch(*(x[process_index::process_count] for x in b)))
        return ds

    def evaluator(
        self, graphdef, rest, batch_size, num_batches, seed, put, process_index, process_count
    ):
        del seed  # the validation windows are fixed: each held-out series' last window
        L, n_in = self.cfg.seq_len, self.cfg.seq_len // self.patch - 1
        rows = [last_window(s, s.size, L) for s in self.val[: batch_size * num_batches]]
        batches = []
        for i in range(len(rows) // batch_size):
            v = np.stack(rows[i * batch_size : (i + 1) * batch_size])
            b = SeriesBatch(v, np.zeros((batch_size, n_in), bool))
            batches.append(SeriesBatch(*(x[process_index::process_count] for x in b)))
        note = (
            f"note: {len(self.val)} held-out series make no validation batch of {batch_size}; "
            "evaluation is off (raise data.val_fraction)."
        )
        return ForecastEvaluator.of(self.loss, graphdef, rest, batches, put, note)

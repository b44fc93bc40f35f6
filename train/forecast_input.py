"""What ``python -m train.forecast`` reads with ``--target-columns`` or covariate flags: a
long table's series with several targets, past and future covariates (TiRex-2), and the
future table holding the covariates over the horizon."""

from __future__ import annotations

import argparse

__all__ = ["read_variates_input", "variate_columns"]


def _columns(text: str | None) -> list[str]:
    return [] if text is None else [c.strip() for c in text.split(",") if c.strip()]


def variate_columns(args: argparse.Namespace):
    """(targets, past, future) column lists when the table is read with covariates or
    several targets, else None (one value column per series)."""
    from xlstm_jax.layers.config import ConfigError

    targets = _columns(args.target_columns)
    past, future = _columns(args.past_covariates), _columns(args.future_covariates)
    if not (targets or past or future):
        if args.future_input is not None:
            raise ConfigError("--future-input gives --future-covariates' values; name them.")
        return None
    if args.layout == "wide":
        raise ConfigError(
            "--target-columns and the covariate flags read a long table (id, timestamp and "
            "value columns); drop --layout wide."
        )
    targets = targets or [args.value_column]
    roles = [args.id_column, args.timestamp_column, *targets, *past, *future]
    twice = sorted({c for c in roles if roles.count(c) > 1})
    if twice:
        raise ConfigError(f"columns {twice} are given more than one role; give each one role.")
    if future and args.future_input is None:
        raise ConfigError(
            f"--future-covariates {','.join(future)} need their values over the horizon: "
            "give --future-input FILE (id, timestamp and those columns)."
        )
    return targets, past, future


def read_variates_input(args, targets: list[str], past: list[str], future: list[str], say):
    """The table's series with covariates: (one ``tables.Series`` per series and target for
    the CSV and plots, the ``xlstm_jax.Series`` to forecast, the target name of each
    output row, their forecast timestamps)."""
    import numpy as np

    from train.data.series.tables import Series as Row
    from train.data.series.tables import read_variates
    from train.data.series.timestamps import future_timestamps
    from train.errors import DataError
    from xlstm_jax import Series

    H = args.horizon
    hint = (
        "name them with --id-column, --timestamp-column, --target-columns and the covariate flags"
    )
    cols = (*targets, *past, *future)
    read = read_variates(
        args.input,
        cols,
        id_column=args.id_column,
        timestamp_column=args.timestamp_column,
        roles_hint=hint,
    )
    ahead = {}
    if future:
        for name, values, ts in read_variates(
            args.future_input,
            tuple(future),
            id_column=args.id_column,
            timestamp_column=args.timestamp_column,
            roles_hint=hint,
        ):
            ahead[name] = (values, ts)
    rows, items, names, futures = [], [], [], []
    V, Vp = len(targets), len(past)
    for name, values, ts in read:
        fc, stamps = None, None
        if future:
            if name not in ahead:
                raise DataError(f"{args.future_input} has no rows for series {name!r}.")
            later, when = ahead[name]
            keep = when > ts[-1]
            if keep.sum() < H:
                raise DataError(
                    f"{args.future_input}: series {name!r} has {int(keep.sum())} rows after its "
                    f"history; the horizon needs {H}."
                )
            fc = np.concatenate([values[V + Vp :], later[:, keep][:, :H]], axis=1)
            stamps = when[keep][:H]
        else:
            try:
                stamps = future_timestamps(ts, H)
            except DataError as e:
                raise DataError(f"{args.input}: series {name!r}: {e}") from None
        items.append(Series(values[:V], values[V : V + Vp] if past else None, fc))
        for v, target in enumerate(targets):
            rows.append(Row(name if V == 1 else f"{name} {target}", values[v], ts))
            names.append(target)
            futures.append(stamps)
    say(f"read {len(items)} series: {V} target(s), {Vp} past and {len(future)} future covariate(s)")
    return rows, items, names, futures

"""What every model config shares: the error types (``ConfigError``, and ``ForecastError``
of the forecasters' input), the one validation helper, the allowed dtype, activation and
implementation names, and the rounding of widths to a multiple."""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal

from pallas_kernels.impls import IMPLS as _IMPLS

__all__ = [
    "ACT_FNS",
    "DTYPES",
    "IMPLS",
    "MAX_BLOCKS",
    "REMAT_POLICIES",
    "ConfigError",
    "ForecastError",
    "check_value",
    "is_pow2",
    "require",
    "round_up",
]

DTYPES = ("float32", "bfloat16", "float16", "float64")
ACT_FNS = ("gelu", "relu", "relu^2", "sigmoid", "swish", "selu")
# The implementation names the layers pass on to pallas_kernels, from their one source there
# ("xla" the pure-JAX reference, "pallas" the Triton kernels, "mosaic" the Mosaic GPU
# kernel (mLSTM chunkwise only), "auto" the best that passes its self-check).
IMPLS = _IMPLS
# The most blocks a model config may have. The largest models have tens; the configs and
# the model builders loop over the blocks, so a damaged file's 2**62 would never finish.
MAX_BLOCKS = 4096
# The ``jax.checkpoint_policies`` a rematerialised block may use: what the backward pass
# keeps instead of recomputing ("nothing_saveable", the default, keeps only block inputs).
REMAT_POLICIES = ("nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable")
RematPolicy = Literal["nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable"]


class ConfigError(ValueError):
    """An invalid configuration; the message names the field and the fix."""


class ForecastError(ValueError):
    """Input that a forecaster (TiRex, TiRex-2) cannot use; the message names the problem
    and the fix."""


def require(cond: bool, msg: str) -> None:
    """Raises ``ConfigError(msg)`` unless ``cond``: the one validation helper of all configs."""
    if not cond:
        raise ConfigError(msg)


def is_pow2(x: int) -> bool:
    """Whether ``x`` is a positive power of two."""
    return x > 0 and (x & (x - 1)) == 0


def round_up(x: float, multiple: int, *, rule: Literal["ceil", "floor", "torch"] = "ceil") -> int:
    """``x`` (a width such as ``proj_factor * E``) as a multiple of ``multiple``.

    Rules: ``"ceil"`` ``ceil(x / m) * m``; ``"floor"`` ``floor(x / m) * m`` (the paper
    model's ``round_proj_up_dim_up=False``); ``"torch"`` the PyTorch references'
    ``(x + m - 1) // m * m`` on the float ``x``, which equals ``"ceil"`` for whole ``x`` but
    not just above a multiple (x 2048.03, m 64: 2048, where ``"ceil"`` gives 2112). The
    xLSTM-7B and TiRex feed-forward widths use it, so checkpoints keep their shapes.
    """
    if rule == "torch":
        return int((x + multiple - 1) // multiple * multiple)
    q = x / multiple
    return int((math.ceil(q) if rule == "ceil" else math.floor(q)) * multiple)


# The largest integer a config may hold: int64, what JAX and NumPy shapes and seeds take; a
# larger one from a damaged file would overflow there (or make ``range`` run forever).
_MAX_INT = 2**63 - 1


def _type_name(tp) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(v) for v in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def check_value(value, tp, key: str):
    """``value`` (read from a JSON or YAML file) as the annotated type ``tp`` of the config
    field ``key``: lists become tuples; a value of another type raises ``ConfigError``.

    Checked: ``bool``, ``int`` (not a bool, at most int64), ``float`` (an int or a float,
    finite), ``str``, ``Literal``, ``None``, unions of these, ``tuple[X, ...]`` /
    ``Sequence[X]`` (a list of X), plain ``tuple`` / ``dict``, and a dataclass (a mapping,
    which the caller turns into the section). ``Any`` fields are left to the caller.
    """
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return check_value(value, arg, key)
            except ConfigError as err:
                errors.append(err)
        names = " | ".join(_type_name(a) for a in typing.get_args(tp))
        raise ConfigError(f"{key} must be {names}; got {_show(value)}.")
    if tp is Any or isinstance(tp, str | typing.TypeVar):
        return value
    if dataclasses.is_dataclass(tp):  # the caller builds sections from mappings
        require(
            isinstance(value, dict), f"{key} must be a section (a mapping); got {_show(value)}."
        )
        return value
    if origin is Literal:
        require(
            isinstance(value, str | int | bool | type(None)) and value in typing.get_args(tp),
            f"{key} must be {_type_name(tp)}; got {_show(value)}.",
        )
        return value
    if tp is type(None):
        require(value is None, f"{key} must be null; got {_show(value)}.")
        return value
    if tp is bool:
        require(isinstance(value, bool), f"{key} must be true or false; got {_show(value)}.")
        return value
    if tp is int:
        require(
            isinstance(value, numbers.Integral) and not isinstance(value, bool),
            f"{key} must be an integer; got {_show(value)}.",
        )
        require(abs(value) <= _MAX_INT, f"{key}={value} is out of range (|x| < 2**63).")
        return int(value)
    if tp is float:
        require(
            isinstance(value, numbers.Real) and not isinstance(value, bool),
            f"{key} must be a number; got {_show(value)}.",
        )
        try:
            as_float = float(value)
        except OverflowError:
            as_float = math.inf
        require(math.isfinite(as_float), f"{key}={value}: give a finite number.")
        return as_float
    if tp is str:
        require(isinstance(value, str), f"{key} must be a string; got {_show(value)}.")
        return value
    if tp is dict or origin is dict:
        require(isinstance(value, dict), f"{key} must be a mapping; got {_show(value)}.")
        return value
    if tp is tuple or origin in (tuple, Sequence):
        require(isinstance(value, list | tuple), f"{key} must be a list; got {_show(value)}.")
        args = typing.get_args(tp)
        if not args:  # a plain tuple (e.g. sharding rules): nested lists become tuples
            return _tuplify(value)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            require(len(value) == len(args), f"{key} must hold {len(args)} values.")
            return tuple(
                check_value(v, a, f"{key}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        return tuple(check_value(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    return value


def _tuplify(value):
    return tuple(_tuplify(v) for v in value) if isinstance(value, list | tuple) else value


def _show(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"

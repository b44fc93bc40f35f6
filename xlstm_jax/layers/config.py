"""What every model config shares: the error type, the one validation helper, the allowed
dtype, activation and implementation names, and the rounding of widths to a multiple."""

from __future__ import annotations

import math
from typing import Literal

from pallas_kernels.impls import IMPLS as _IMPLS

__all__ = ["ACT_FNS", "DTYPES", "IMPLS", "ConfigError", "is_pow2", "require", "round_up"]

DTYPES = ("float32", "bfloat16", "float16", "float64")
ACT_FNS = ("gelu", "relu", "relu^2", "sigmoid", "swish", "selu")
# The implementation names the layers pass on to pallas_kernels, from their one source there
# ("xla" the pure-JAX reference, "pallas" the Triton kernels, "mosaic" the Mosaic GPU
# kernel (mLSTM chunkwise only), "auto" the best that passes its self-check).
IMPLS = _IMPLS


class ConfigError(ValueError):
    """An invalid configuration; the message names the field and the fix."""


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

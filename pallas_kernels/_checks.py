"""Input validation shared by the ops: every check raises ``ValueError`` naming the argument."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from pallas_kernels.impls import IMPLS


def check_rank(name: str, x: jax.Array, rank: int, layout: str) -> None:
    if not hasattr(x, "ndim") or x.ndim != rank:
        got = getattr(x, "shape", type(x).__name__)
        raise ValueError(f"`{name}` must have rank {rank} with layout {layout}; got shape {got}.")


def check_shape(name: str, x: jax.Array, expected: Sequence[int], layout: str) -> None:
    if tuple(x.shape) != tuple(expected):
        raise ValueError(
            f"`{name}` must have shape {tuple(expected)} ({layout}); got {tuple(x.shape)}."
        )


def check_float(name: str, x: jax.Array) -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"`{name}` must be a floating-point array; got dtype {x.dtype}.")


def check_same_dtype(names: Sequence[str], arrays: Sequence[jax.Array]) -> None:
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) != 1:
        got = ", ".join(f"{n}={a.dtype}" for n, a in zip(names, arrays, strict=True))
        raise ValueError(
            f"{', '.join(f'`{n}`' for n in names)} must share one dtype; got {got}. "
            "Cast them to the same dtype first."
        )


def check_impl(impl: str) -> None:
    if impl not in IMPLS:
        raise ValueError(f"`impl` must be one of {IMPLS}; got {impl!r}.")


def state_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """State math runs in float32 (float64 when the inputs are float64)."""
    return jnp.promote_types(dtype, jnp.float32)

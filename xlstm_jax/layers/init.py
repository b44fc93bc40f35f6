"""Initialisers shared by the families (each returns an ``nnx.Initializer``)."""

from __future__ import annotations

import math

import jax.numpy as jnp
from flax import nnx

__all__ = ["linspace", "small_init", "wang_init"]


def small_init(dim: int) -> nnx.Initializer:
    """N(0, sqrt(2 / (5 dim))) (Nguyen & Salazar, "Transformers without Tears")."""
    return nnx.initializers.normal(math.sqrt(2.0 / (5.0 * dim)))


def wang_init(dim: int, num_blocks: int) -> nnx.Initializer:
    """N(0, 2 / (num_blocks sqrt(dim))), for output projections into the residual stream."""
    return nnx.initializers.normal(2.0 / num_blocks / math.sqrt(dim))


def linspace(start: float, end: float) -> nnx.Initializer:
    """A vector (n,) evenly spaced from ``start`` to ``end`` (forget-gate biases: a range of
    memory time scales across heads); draws no random numbers."""

    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.linspace(start, end, shape[0], dtype=dtype)

    return init

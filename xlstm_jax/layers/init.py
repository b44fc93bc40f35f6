"""Initialisers shared by the families (each returns an ``nnx.Initializer``)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["linspace", "normal", "small_init", "torch_linear", "uniform", "wang_init"]


def normal(stddev: float) -> nnx.Initializer:
    """N(0, stddev): ``nnx.initializers.normal``'s values, bit for bit, eager or jitted.

    ``jax.random.normal`` is ``sqrt(2) * erfinv(u)``; under an enclosing ``jit`` (the
    sharded initialisation of the train state) XLA would fold ``* stddev`` into that
    constant, one rounding fewer than the eager initialisation. The barrier keeps the two
    products apart, so a seed gives the same weights either way.
    """

    def init(key, shape, dtype=jnp.float32):
        z = jax.lax.optimization_barrier(jax.random.normal(key, shape, dtype))
        return z * jnp.array(stddev, dtype)

    return init


def small_init(dim: int) -> nnx.Initializer:
    """N(0, sqrt(2 / (5 dim))) (Nguyen & Salazar, "Transformers without Tears")."""
    return normal(math.sqrt(2.0 / (5.0 * dim)))


def wang_init(dim: int, num_blocks: int) -> nnx.Initializer:
    """N(0, 2 / (num_blocks sqrt(dim))), for output projections into the residual stream."""
    return normal(2.0 / num_blocks / math.sqrt(dim))


def linspace(start: float, end: float) -> nnx.Initializer:
    """A vector (n,) evenly spaced from ``start`` to ``end`` (forget-gate biases: a range of
    memory time scales across heads); draws no random numbers."""

    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.linspace(start, end, shape[0], dtype=dtype)

    return init


def uniform(bound: float) -> nnx.Initializer:
    """U(-bound, bound)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_linear(fan_in: int) -> nnx.Initializer:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): a freshly built ``torch.nn.Linear``'s weight
    (Kaiming-uniform with a = sqrt(5)) and bias, for models trained from that start."""
    return uniform(1.0 / math.sqrt(fan_in))

"""Helpers shared by the Pallas kernels (Triton lowering): sizes, dots, launch, dtype checks.

Every kernel module takes these from here; none keeps a copy of its own.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

F32 = jnp.float32
# Input dtypes the kernels compile for (the matmul operands); gates and states are fp32.
SUPPORTED_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
# fp32 operands: full-precision (IEEE) dots instead of Triton's TF32 default, to match the
# references; 16-bit operands are unaffected (bf16/fp16 MMA with fp32 accumulation).
PRECISION = jax.lax.Precision.HIGHEST


def is_pow2(x: int) -> bool:
    return x > 0 and (x & (x - 1)) == 0


def next_pow2(x: int) -> int:
    return 1 << (max(x, 1) - 1).bit_length()


def pad_dim(d: int) -> int:
    """A dim padded for Triton: a power of two, at least 16 (the smallest dot operand)."""
    return max(16, next_pow2(d))


def check_tiles(owner: str, sizes: dict[str, int], launch: dict[str, int]) -> None:
    """Tiles must be powers of two >= 16 and launch counts >= 1; ``ValueError`` otherwise."""
    for name, val in sizes.items():
        if val < 16 or not is_pow2(val):
            raise ValueError(f"{owner}.{name} must be a power of two >= 16; got {val}.")
    for name, val in launch.items():
        if val < 1:
            raise ValueError(f"{owner}.{name} must be >= 1; got {val}.")


def check_dtype(op: str, what: str, dtype) -> None:
    """Raises ``ValueError`` naming the fix when the kernels do not compile for ``dtype``."""
    if jnp.dtype(dtype) not in SUPPORTED_DTYPES:
        raise ValueError(
            f"The Pallas {op} kernel supports {what} in {[str(d) for d in SUPPORTED_DTYPES]}; "
            f"got {dtype}. Use impl='xla'."
        )


def kernel_state_dtype(op: str, dtype, interpret: bool) -> jnp.dtype:
    """The state/accumulation dtype of a kernel for q/k/v of ``dtype``: float32, or float64
    for float64 inputs in interpret mode (the exact-arithmetic check of a kernel's math).
    Raises ``ValueError`` for a dtype the kernels do not compile for."""
    if interpret and jnp.dtype(dtype) == jnp.float64:
        return jnp.dtype(jnp.float64)
    check_dtype(op, "q/k/v", dtype)
    return jnp.dtype(F32)


def dot(a, b, acc=F32):
    """a @ b with accumulation in ``acc``."""
    return jnp.dot(a, b, precision=PRECISION, preferred_element_type=acc)


def dot_nt(a, b, acc=F32):
    """a @ b^T with accumulation in ``acc``."""
    dims = (((1,), (1,)), ((), ()))
    return jax.lax.dot_general(a, b, dims, precision=PRECISION, preferred_element_type=acc)


def dot_tn(a, b, acc=F32):
    """a^T @ b with accumulation in ``acc``."""
    dims = (((0,), (0,)), ((), ()))
    return jax.lax.dot_general(a, b, dims, precision=PRECISION, preferred_element_type=acc)


def log_sigmoid(x):
    """log sigma(x) = min(x, 0) - log1p(e^{-|x|}): stable, and lowers to Triton."""
    return jnp.minimum(x, 0.0) - jnp.log1p(jnp.exp(-jnp.abs(x)))


def barrier(interpret: bool) -> None:
    """CTA barrier: this program's global stores become visible to all of its threads."""
    if not interpret:  # interpret mode runs the program sequentially
        pltriton.debug_barrier()


def call(kernel, *, name, grid, in_specs, out_specs, out_shape, num_warps, num_stages, interpret):
    """``pl.pallas_call`` with the Triton backend chosen explicitly (the default GPU backend of
    a bare ``pallas_call`` differs between JAX releases)."""
    return pl.pallas_call(
        kernel,
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages),
        interpret=interpret,
        name=name,
    )

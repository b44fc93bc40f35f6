"""The Triton backend (``impl="pallas"``): where its kernels run (``supports``) and the helpers
they share (sizes, dots, launch, dtype checks).

The kernels are Pallas ``pallas_call``s with the Triton lowering: ``mlstm/triton_*.py`` and
``slstm/triton_*.py``. Every kernel module takes these helpers from here; none keeps a copy of
its own.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

F32 = jnp.float32
F64 = jnp.dtype(jnp.float64)
# Input dtypes the kernels compile for (the matmul operands); gates and states are fp32.
SUPPORTED_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
# fp32 operands: full-precision (IEEE) dots instead of Triton's TF32 default, to match the
# references; 16-bit operands are unaffected (bf16/fp16 MMA with fp32 accumulation).
PRECISION = jax.lax.Precision.HIGHEST
# The ops with a Triton kernel (a test keeps this equal to the dispatch table's), each with
# the name its messages use and the inputs whose dtype the kernel compiles for.
OPS = {
    "mlstm_chunkwise": ("mLSTM", "q/k/v"),
    "mlstm_step": ("mLSTM", "q/k/v"),
    "slstm": ("sLSTM", "gates_x"),
}


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


def _dtype_reason(op: str, what: str, dtype) -> str | None:
    if jnp.dtype(dtype) in SUPPORTED_DTYPES:
        return None
    return (
        f"The Pallas {op} kernel supports {what} in {[str(d) for d in SUPPORTED_DTYPES]}; "
        f"got {dtype}. Use impl='xla'."
    )


def check_dtype(op: str, what: str, dtype) -> None:
    """Raises ``ValueError`` naming the fix when the kernels do not compile for ``dtype``."""
    reason = _dtype_reason(op, what, dtype)
    if reason is not None:
        raise ValueError(reason)


def _chunk_reason(chunk_size: int) -> str | None:
    if chunk_size >= 16 and is_pow2(chunk_size):
        return None
    return (
        f"The Pallas mLSTM kernel needs chunk_size to be a power of two >= 16; got "
        f"{chunk_size}. Use impl='xla' for other chunk sizes."
    )


def supports(
    op: str,
    *,
    interpret: bool = False,
    cuda_gpu: bool | None = None,
    sm90: bool | None = None,
    dtype=None,
    chunk_size: int | None = None,
    head_dim_qk: int | None = None,
) -> str | None:
    """Whether a Triton kernel can run ``op`` with the facts given: None if it can, else the
    reason (a sentence that names the fix). A fact left None is not judged.

    Args:
      op: the op's name in the dispatch table (``"mlstm_chunkwise"``, ...).
      interpret: the kernels run in Pallas interpret mode (any machine; float64 mLSTM too).
      cuda_gpu: the default device is a CUDA GPU (Ampere and Hopper both run Triton).
      sm90: not needed (any CUDA GPU will do).
      dtype: the matmul operands' dtype (q/k/v, or gates_x). chunk_size: the chunk length
        of ``mlstm_chunkwise``. head_dim_qk: not limited (padded to a power of two).
    """
    del sm90, head_dim_qk
    if op not in OPS:
        return (
            f"impl='pallas' was requested for `{op}`, but it has no Pallas kernel; use "
            f"impl='auto' or impl='xla' (the ops with kernels: {', '.join(OPS)})."
        )
    name, what = OPS[op]
    exact = interpret and name == "mLSTM" and dtype is not None and jnp.dtype(dtype) == F64
    if dtype is not None and not exact:
        reason = _dtype_reason(name, what, dtype)
        if reason is not None:
            return reason
    if op == "mlstm_chunkwise" and chunk_size is not None:
        reason = _chunk_reason(chunk_size)
        if reason is not None:
            return reason
    if cuda_gpu is False and not interpret:
        return (
            f"impl='pallas' for `{op}` needs a CUDA GPU; on this machine pass "
            "interpret=True (slow, for testing) or use impl='auto'."
        )
    return None


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

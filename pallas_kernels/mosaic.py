"""The Mosaic GPU backend (``impl="mosaic"``): where its kernels run, and why not elsewhere.

The kernels are Pallas ``plgpu.kernel`` calls lowered by Mosaic GPU (Hopper: TMA, swizzled
shared memory, wgmma), today one op: ``mlstm_chunkwise`` (``mlstm/mosaic_chunkwise.py``).
This module holds what every Mosaic kernel shares: the JAX version gate, the ``plgpu``
import behind it, the 64-row tile and the input dtypes, and ``supports``, the one answer
the dispatch asks for before it runs a Mosaic kernel and the kernel entries ask for the
facts of their call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# The ops with a Mosaic GPU kernel (a test keeps this equal to the dispatch table's).
OPS = ("mlstm_chunkwise",)
MIN_JAX = (0, 11, 2)
# wgmma M of one warpgroup and the 128-byte swizzle width of 16-bit operands.
TILE = 64
# wgmma multiplies 16-bit operands; fp32 would run at TF32 precision on a GPU.
DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
# mlstm_chunkwise: the chunk is a whole number of 64-row tiles, and its (L, L) fp32 score
# accumulator is 32 (L 64) or 128 (L 128) registers a thread.
CHUNK_SIZES = (64, 128)
# At L 128 the output kernel needs 234,536 B of shared memory at DHQK 256 (an H100 block
# has 232,448 B), so L 128 takes padded DHQK up to 128.
MAX_DHQK_AT_128 = 128


def _jax_version() -> tuple[int, ...]:
    return tuple(int(p) for p in jax.__version__.split(".")[:3] if p.isdigit())


def jax_reason() -> str | None:
    """Why the Mosaic GPU kernels cannot run with this JAX (None when they can)."""
    if _jax_version() < MIN_JAX:
        return (
            f"The Mosaic GPU mLSTM kernels need JAX >= {'.'.join(map(str, MIN_JAX))} "
            f"(plgpu.kernel with the Mosaic GPU interpreter and layout-typed loads; checked on "
            f"0.11.2 and 0.12.0); this is JAX {jax.__version__}. Upgrade JAX, or use "
            "impl='pallas' (Triton) or impl='xla'."
        )
    try:
        from jax.experimental.pallas import mosaic_gpu as plgpu
    except ImportError as e:  # pragma: no cover - depends on the installation
        return f"jax.experimental.pallas.mosaic_gpu does not import ({e}); use impl='xla'."
    for name in ("kernel", "emit_pipeline", "wgmma", "InterpretGPUParams", "load"):
        if not hasattr(plgpu, name):
            return (
                f"jax.experimental.pallas.mosaic_gpu.{name} is missing in JAX {jax.__version__}; "
                "use impl='pallas' or impl='xla'."
            )
    return None


def plgpu():
    """``jax.experimental.pallas.mosaic_gpu``; ``RuntimeError`` naming the version where
    this JAX cannot run the kernels (``jax_reason``)."""
    reason = jax_reason()
    if reason is not None:
        raise RuntimeError(reason)
    from jax.experimental.pallas import mosaic_gpu

    return mosaic_gpu


def pad_to(d: int, m: int = TILE) -> int:
    """``d`` rounded up to a multiple of ``m`` (head dims: whole 64-wide tiles)."""
    return -(-d // m) * m


def _call_reason(interpret, dtype, chunk_size, head_dim_qk) -> str | None:
    L = chunk_size
    if L is not None and L not in CHUNK_SIZES:
        return (
            f"The Mosaic mLSTM kernel needs chunk_size 64 or 128 (the 64-row wgmma tile); got "
            f"{L}. Use impl='pallas' or impl='xla' for other chunk sizes."
        )
    if L == 128 and head_dim_qk is not None and pad_to(head_dim_qk) > MAX_DHQK_AT_128:
        return (
            "The Mosaic mLSTM kernel at chunk_size 128 takes DHQK <= 128 (at 256 its output "
            f"kernel needs 234,536 B of shared memory, more than the 232,448 B of an H100); got "
            f"DHQK {head_dim_qk}. Use chunk_size=64."
        )
    if dtype is not None:
        dtype = jnp.dtype(dtype)
        if dtype not in DTYPES and not (interpret and dtype == jnp.float32):
            return (
                f"The Mosaic mLSTM kernel takes bf16 or fp16 q/k/v (wgmma would run fp32 at "
                f"TF32 precision; fp32 runs only in interpret mode); got {dtype}. Use "
                "impl='pallas' or impl='xla'."
            )
    return None


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
    """Whether a Mosaic GPU kernel can run ``op`` with the facts given: None if it can,
    else the reason (a sentence that names the fix). A fact left None is not judged.

    Args:
      op: the op's name in the dispatch table (``"mlstm_chunkwise"``, ...).
      interpret: the kernels run in the Mosaic GPU interpreter (any machine, fp32 too).
      cuda_gpu: the default device is a CUDA GPU (not needed: ``sm90`` implies it).
      sm90: the default device is a CUDA GPU of compute capability 9.0 or newer.
      dtype: the q/k/v dtype. chunk_size: the chunk length L. head_dim_qk: DHQK.
    """
    del cuda_gpu
    if op not in OPS:
        return (
            f"impl='mosaic' was requested for `{op}`, but it has no Mosaic GPU kernel; use "
            f"impl='auto', impl='pallas' or impl='xla' (the ops with Mosaic kernels: "
            f"{', '.join(OPS)})."
        )
    reason = jax_reason() or _call_reason(interpret, dtype, chunk_size, head_dim_qk)
    if reason is not None:
        return reason
    if sm90 is False and not interpret:
        return (
            f"impl='mosaic' for `{op}` needs a CUDA GPU of compute capability 9.0 or newer "
            "(H100/H200); on this machine pass interpret=True (slow, for testing) or use "
            "impl='auto'."
        )
    return None

"""Tensors (torch or NumPy) to NumPy arrays, under a dtype policy each caller states.

Torch is never imported unless a torch tensor is passed in (it is recognised by its
``detach`` method).
"""

from __future__ import annotations

from typing import Literal

import ml_dtypes
import numpy as np

__all__ = ["BF16_POLICIES", "fits_numpy", "to_numpy"]

BF16_POLICIES = ("keep", "widen")


def fits_numpy(shape) -> bool:
    """Whether NumPy can hold an array of ``shape`` (a tuple of non-negative ints) within its
    rank and size limits, checked without allocating it: a file's declared shape is checked
    with it before an array is made."""
    try:
        np.broadcast_to(np.zeros((), np.uint8), tuple(shape))
    except (ValueError, OverflowError, TypeError):
        return False
    return True


def to_numpy(x, *, bf16: Literal["keep", "widen"], dtype=None) -> np.ndarray:
    """``x`` (a torch tensor, NumPy array or array-like, any shape) as a NumPy array of the
    same shape.

    Args:
      x: the tensor.
      bf16: what becomes of a torch tensor narrower than float32, which NumPy cannot hold
        as bfloat16: ``"keep"`` keeps bfloat16 bit for bit (as ``ml_dtypes.bfloat16``) and
        float16 as float16; ``"widen"`` turns bfloat16 and float16 into float32 (exact).
        Arrays that are not torch tensors keep their dtype under both.
      dtype: a final cast (e.g. ``np.float32``) of every input, torch or not; None keeps
        the dtype the policy gives.

    Raises:
      ValueError: an unknown ``bf16`` policy.
    """
    if bf16 not in BF16_POLICIES:
        raise ValueError(f"bf16 must be one of {BF16_POLICIES}; got {bf16!r}.")
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < 4:
            if bf16 == "widen":
                x = x.float()
            elif str(x.dtype) == "torch.bfloat16":
                import torch

                x = x.view(dtype=torch.int16).numpy().view(ml_dtypes.bfloat16)
        x = x if isinstance(x, np.ndarray) else x.numpy()
    return np.asarray(x) if dtype is None else np.asarray(x, dtype)

"""The errors of reading, writing and converting checkpoints: one hierarchy.

    FormatError (ValueError)        a file, folder or state dict we cannot use
      CheckpointError               a file or folder that cannot be read or written
        PretrainedError             a pretrained checkpoint folder (``load_pretrained``)
      ConversionError               tensors that do not fit a model's name map or config,
                                    or a model a target format cannot express

Families subclass these where their callers already catch a family error as well (TiRex's
converters raise errors that are also ``ForecastError``s); every message names the problem
and the fix.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConversionError", "FormatError", "PretrainedError"]


class FormatError(ValueError):
    """A checkpoint file, folder or state dict that cannot be used; the message names the
    path or tensor and the fix."""


class CheckpointError(FormatError):
    """A checkpoint file or folder that cannot be read or written (missing, damaged, of an
    unknown or unsafe format)."""


class PretrainedError(CheckpointError):
    """A checkpoint folder that cannot be read or written; the message names the path and
    the fix."""


class ConversionError(FormatError):
    """Tensors that do not fit the model (a missing, unexpected or mis-shaped tensor), or a
    model that the target format cannot express."""

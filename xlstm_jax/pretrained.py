"""Old home of the checkpoint folders and the safetensors files: ``load_pretrained`` and
``save_pretrained`` now live in ``xlstm_jax.models.xlstm_large.checkpoint``, the
safetensors reader and writer in ``xlstm_jax.formats.safetensors``, ``PretrainedError`` in
``xlstm_jax.formats.errors``."""

from xlstm_jax.formats.errors import PretrainedError
from xlstm_jax.formats.safetensors import SafetensorsFile, SafetensorsWriter
from xlstm_jax.models.xlstm_large.checkpoint import load_pretrained, save_pretrained

__all__ = [
    "PretrainedError",
    "SafetensorsFile",
    "SafetensorsWriter",
    "load_pretrained",
    "save_pretrained",
]

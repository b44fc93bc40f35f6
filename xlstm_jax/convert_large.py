"""Old home of the xLSTM-Large converter: its names under their old spellings, from
``xlstm_jax.models.xlstm_large.convert`` (where they now live, without the ``_large``)."""

from xlstm_jax.models.xlstm_large.convert import (
    FORMATS,
    WEIGHT_MODES,
    detect_format,
)
from xlstm_jax.models.xlstm_large.convert import config_from_torch as config_from_torch_large
from xlstm_jax.models.xlstm_large.convert import from_state_dict as from_state_dict_large
from xlstm_jax.models.xlstm_large.convert import from_torch as from_torch_large
from xlstm_jax.models.xlstm_large.convert import iter_state_dict as iter_state_dict_large
from xlstm_jax.models.xlstm_large.convert import to_state_dict as to_state_dict_large

__all__ = [
    "FORMATS",
    "WEIGHT_MODES",
    "config_from_torch_large",
    "detect_format",
    "from_state_dict_large",
    "from_torch_large",
    "iter_state_dict_large",
    "to_state_dict_large",
]

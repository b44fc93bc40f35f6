"""Old home of the TiRex converter: its names under their old spellings, from
``xlstm_jax.models.tirex.convert`` (where they now live, without the ``_tirex``)."""

from xlstm_jax.models.tirex.convert import config_from_hparams, read_torch_checkpoint
from xlstm_jax.models.tirex.convert import from_state_dict as from_state_dict_tirex
from xlstm_jax.models.tirex.convert import from_torch as from_torch_tirex
from xlstm_jax.models.tirex.convert import load_checkpoint as load_tirex_checkpoint
from xlstm_jax.models.tirex.convert import to_state_dict as to_state_dict_tirex

__all__ = [
    "config_from_hparams",
    "from_state_dict_tirex",
    "from_torch_tirex",
    "load_tirex_checkpoint",
    "read_torch_checkpoint",
    "to_state_dict_tirex",
]

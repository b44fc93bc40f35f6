"""Our models from their PyTorch references, for every family: ``from_torch(torch_model)``.

    from xlstm_jax import convert
    jax_model = convert.from_torch(torch_model)   # xLSTMLMModel, xLSTMLarge, TiRex, ...

The family is the one whose registry entry (``xlstm_jax.registry``) lists the reference
model's class name in ``torch_classes``: the paper's ``xLSTMLMModel`` and
``xLSTMBlockStack`` (package ``xlstm``), ``xLSTMLarge`` (``xlstm``) and transformers'
``xLSTMForCausalLM`` (the xLSTM-7B family), ``TiRexZero`` (``tirex-ts``). Each family's
converter, with its name map and state-dict functions, lives in
``xlstm_jax.models.<family>.convert``.

The paper's xLSTM state-dict functions keep their names here: ``config_from_torch``,
``from_state_dict``, ``to_torch_state_dict`` and ``SLSTM_LAYOUTS``
(``xlstm_jax.models.xlstm.convert``).
"""

from __future__ import annotations

from xlstm_jax.models.xlstm.convert import (
    SLSTM_LAYOUTS,
    config_from_torch,
    from_state_dict,
    to_torch_state_dict,
)

__all__ = [
    "SLSTM_LAYOUTS",
    "config_from_torch",
    "from_state_dict",
    "from_torch",
    "to_torch_state_dict",
    "torch_classes",
]


def torch_classes() -> dict[str, str]:
    """Reference model class name -> the family (``xlstm_jax.registry``) that converts it."""
    from xlstm_jax.registry import FAMILY_NAMES, family

    return {cls: name for name in FAMILY_NAMES for cls in family(name).torch_classes}


def from_torch(torch_model, *args, **kwargs):
    """Our model (config and weights) from a PyTorch reference model of any family.

    Args:
      torch_model: a reference model; its class name picks the family (module docstring).
      *args, **kwargs: the family converter's options: ``slstm_backend`` for the paper's
        xLSTM (``models.xlstm.convert.from_torch``); config overrides such as ``dtype`` for
        xLSTM-Large, TiRex and TiRex-2 (``models.xlstm_large.convert.from_torch``,
        ``models.tirex.convert.from_torch``, ``models.tirex2.convert.from_torch``).

    Returns:
      The family's ``nnx.Module`` with the reference's weights.

    Raises:
      TypeError: no family converts ``type(torch_model)`` (the message lists the classes
        that are converted).
    """
    from xlstm_jax.registry import family

    known = torch_classes()
    name = type(torch_model).__name__
    if name not in known:
        accepted = ", ".join(f"{cls} ({fam})" for cls, fam in known.items())
        raise TypeError(
            f"no model family converts a {name}; from_torch accepts {accepted} "
            "(the torch_classes of xlstm_jax.registry's families)."
        )
    return family(known[name]).from_torch(torch_model, *args, **kwargs)

"""The model families, by name: what the trainer, the converters and the loaders ask instead
of testing config classes.

    from xlstm_jax.registry import family, family_of
    fam = family_of(cfg.model)          # the Family whose config class cfg.model is
    model = fam.model(cfg.model, rngs=nnx.Rngs(0))
    family("tirex").task                # "forecast"

A family's name is the tag a run's ``config.json`` carries (``model.family``).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

__all__ = [
    "FAMILY_NAMES",
    "Activations",
    "Family",
    "family",
    "family_of",
    "family_of_class",
    "imported_on_call",
]


class Activations(NamedTuple):
    """What one micro-batch's backward pass keeps, in bytes (an estimate): ``per_block``
    for each block without rematerialisation, ``block_input`` the one (B, S, E) input each
    block keeps with it, ``head`` the output head's (logits or quantiles, their loss and
    gradient)."""

    per_block: list[int]
    block_input: int
    head: int


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family: its config, its model and what callers need to know about it.

    Attributes:
      name: the family's tag (``config.json``'s ``model.family``, ``family(name)``).
      description: one line for listings and errors.
      config: the frozen config dataclass.
      model: the ``nnx.Module`` class, built as ``model(config, rngs=rngs)``.
      task: ``"lm"`` (``model(tokens (B, S) int) -> logits (B, S, V)``) or ``"forecast"``
        (patches to quantiles; ``xlstm_jax.forecast``).
      summary: ``summary(config) -> str``, the block layout in a few words.
      activation_bytes: ``activation_bytes(config, B, S, compute_bytes) -> Activations``
        for a micro-batch of B sequences of S tokens (or values).
      doc_resets: ``doc_resets(config) -> str | None``: None when the model resets its
        state at document starts (``doc_starts``), else why it cannot.
      from_torch: ``from_torch(torch_model, **kw) -> model`` for the family's PyTorch
        reference classes (named in ``torch_classes``), or None.
      torch_classes: class names of the reference models ``from_torch`` accepts.
      load: ``load(path, **kw) -> model`` for the family's released checkpoints, or None.
      covariates: a forecaster that reads a series as several grouped rows (targets, past
        and future covariates: ``model(x, target_mask, group)``) and is trained on one
        pass's future window; False: one row per series, trained patch by patch.
      folder_config: ``folder_config(path, **knobs) -> config | None``: the model config of
        a released checkpoint folder of this family (None: not one), which a fine-tuning
        run (``train.init_from``) adopts; None when the family has no such folders.
    """

    name: str
    description: str
    config: type
    model: type
    task: Literal["lm", "forecast"]
    summary: Callable[[Any], str]
    activation_bytes: Callable[[Any, int, int, int], Activations]
    doc_resets: Callable[[Any], str | None]
    from_torch: Callable[..., Any] | None = None
    torch_classes: tuple[str, ...] = ()
    load: Callable[..., Any] | None = None
    covariates: bool = False
    folder_config: Callable[..., Any] | None = None


# Name -> the module whose ``FAMILY`` it is; imported on first use, so asking for one
# family never builds another's modules.
_MODULES = {
    "xlstm": "xlstm_jax.models.xlstm.family",
    "xlstm_large": "xlstm_jax.models.xlstm_large.family",
    "transformer": "xlstm_jax.models.transformer.family",
    "tirex": "xlstm_jax.models.tirex.family",
    "tirex2": "xlstm_jax.models.tirex2.family",
}
FAMILY_NAMES = tuple(_MODULES)


def imported_on_call(target: str) -> Callable[..., Any]:
    """A function that imports ``target`` (``"module:name"``) when first called and calls
    it: a family's converters and loaders stay unimported until asked for."""
    module, _, name = target.partition(":")

    def call(*args, **kw):
        return getattr(importlib.import_module(module), name)(*args, **kw)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"``{module}.{name}``, imported on first use."
    return call


def family(name: str) -> Family:
    """The family called ``name`` (one of ``FAMILY_NAMES``).

    Raises:
      KeyError: no such family (the message lists them).
    """
    if name not in _MODULES:
        raise KeyError(
            f"no model family {name!r}; the families are {', '.join(FAMILY_NAMES)} "
            "(xlstm_jax.registry.FAMILY_NAMES)."
        )
    return importlib.import_module(_MODULES[name]).FAMILY


def family_of_class(config_cls: type) -> Family | None:
    """The family whose config class is ``config_cls``, or None."""
    for name in FAMILY_NAMES:
        fam = family(name)
        if fam.config is config_cls:
            return fam
    return None


def family_of(config) -> Family:
    """The family of the model config ``config``.

    Raises:
      TypeError: ``config`` is no family's config (the message lists the families).
    """
    fam = family_of_class(type(config))
    if fam is None:
        raise TypeError(
            f"{type(config).__name__} is no model family's config; the families are "
            + ", ".join(f"{n} ({family(n).config.__name__})" for n in FAMILY_NAMES)
            + "."
        )
    return fam

"""The one name-map engine: tensors between a reference state dict and our parameter paths.

A family's table is a list of ``Rule`` rows, each saying that our parameter ``ours`` (an
NNX path, dot-joined: ``"blocks.0.xlstm.proj_up.kernel"``) is the reference's tensor
``theirs`` (``"blocks.0.xlstm.proj_up.weight"``) after ``transform`` (a layout change such
as a transpose), or rows ``[start, stop)`` of it when the reference fuses several of our
parameters into one tensor. The tables live with the families
(``xlstm_jax.models.<family>.convert``); this module moves the tensors and checks them:

    check_covers(rules, params)             the table names every parameter, once
    for path, value in load(rules, state_dict, shapes, to_numpy=..., what=..., hint=...):
        ...                                 our layout, shape-checked, one tensor at a time
    for name, value in save(rules, get):    the reference's names and layouts, fused
        ...                                 tensors as soon as their pieces are in

Arrays are NumPy throughout (placing them on devices is the caller's business); a state
dict may be lazy (a safetensors file), since each tensor is read once, when needed.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Literal, NamedTuple

import numpy as np

from xlstm_jax.formats.errors import ConversionError

__all__ = [
    "SAME",
    "TRANSPOSE",
    "Rule",
    "Transform",
    "check_covers",
    "linear",
    "load",
    "prefixed",
    "reshape",
    "save",
]


class Transform(NamedTuple):
    """A tensor's layout change: ``load`` maps the reference's array to ours, ``save`` ours
    to the reference's. ``load`` may raise ``ConversionError`` for a stored shape it cannot
    take (the engine adds the tensor's name)."""

    load: Callable[[np.ndarray], np.ndarray]
    save: Callable[[np.ndarray], np.ndarray]


def _same(a: np.ndarray) -> np.ndarray:
    return a


SAME = Transform(_same, _same)
"""The same layout on both sides."""
TRANSPOSE = Transform(lambda a: a.T, lambda a: np.ascontiguousarray(a.T))
"""A torch ``Linear.weight`` (out, in) <-> our ``Dense.kernel`` (in, out)."""


def reshape(stored: tuple[int, ...], ours: tuple[int, ...]) -> Transform:
    """The same elements in the same order, viewed as ``stored`` by the reference and as
    ``ours`` here; a stored tensor of any other shape is refused (even of the same size)."""

    def load_(a: np.ndarray) -> np.ndarray:
        if tuple(a.shape) != tuple(stored):
            raise ConversionError(f"shape {tuple(a.shape)}, but the config needs {stored}")
        return a.reshape(ours)

    return Transform(load_, lambda a: a.reshape(stored))


@dataclasses.dataclass(frozen=True)
class Rule:
    """Our parameter ``ours`` is the reference's tensor ``theirs`` under ``transform``.

    ``rows=(start, stop)``: ours is rows ``[start, stop)`` of ``theirs`` (axis 0, in the
    reference's layout, before ``transform``), which the rules naming ``theirs`` tile
    exactly (a fused projection such as q | k | v).
    """

    ours: str
    theirs: str
    transform: Transform = SAME
    rows: tuple[int, int] | None = None


def linear(ours: str, theirs: str, bias: bool) -> list[Rule]:
    """Our ``Dense`` at ``ours`` <-> a torch ``Linear`` at ``theirs`` (kernel transposed;
    the bias when ``bias``)."""
    rules = [Rule(f"{ours}.kernel", f"{theirs}.weight", TRANSPOSE)]
    if bias:
        rules.append(Rule(f"{ours}.bias", f"{theirs}.bias"))
    return rules


def prefixed(rules: Iterable[Rule], ours: str, theirs: str) -> list[Rule]:
    """``rules`` with ``ours`` and ``theirs`` put before their two names (e.g. a block's
    ``"blocks.3."`` on both sides)."""
    return [dataclasses.replace(r, ours=ours + r.ours, theirs=theirs + r.theirs) for r in rules]


def check_covers(rules: Iterable[Rule], params: Collection[str]) -> None:
    """Raises ``ConversionError`` unless the rules name each of our ``params`` exactly once
    and nothing else (a table out of step with the model is our bug, caught here)."""
    ours = [r.ours for r in rules]
    twice = sorted(p for p, n in collections.Counter(ours).items() if n > 1)
    if set(ours) != set(params) or twice:
        raise ConversionError(
            "internal conversion table does not cover the model: "
            f"missing {sorted(set(params) - set(ours))}, "
            f"extra {sorted(set(ours) - set(params))}, twice {twice}"
        )


def _groups(rules: list[Rule]) -> dict[str, list[Rule]]:
    """Fused tensor name -> its rules (those with ``rows``)."""
    groups: dict[str, list[Rule]] = {}
    for r in rules:
        if r.rows is not None:
            groups.setdefault(r.theirs, []).append(r)
    return groups


def _examples(names: list[str]) -> str:
    return f"{names[:5]}{' ...' if len(names) > 5 else ''}"


def load(
    rules: Iterable[Rule],
    state_dict: Mapping,
    shapes: Mapping[str, tuple[int, ...]],
    *,
    to_numpy: Callable[[object], np.ndarray],
    what: str,
    hint: str,
    extra: Literal["error", "ignore"] = "error",
    optional: Collection[str] = (),
    error: type[ConversionError] = ConversionError,
) -> Iterator[tuple[str, np.ndarray]]:
    """(our path, NumPy array in our layout) for each rule, in the rules' order.

    The names are checked before any tensor is read; each tensor is read once (a fused one
    is kept until its last piece is out), converted by ``to_numpy`` (the caller's dtype
    policy: ``formats.tensors.to_numpy``), transformed and checked against ``shapes[ours]``.

    Args:
      rules: the family's table.
      state_dict: reference name -> tensor (torch, NumPy or a lazy mapping's).
      shapes: our path -> the parameter's shape.
      to_numpy: tensor -> NumPy array.
      what: the state dict in a few words, for messages ("the hf (fused) state dict").
      hint: the fix, for messages ("check num_blocks, ...").
      extra: whether tensors no rule reads are an ``"error"`` or ``"ignore"``d.
      optional: names that may be present unread either way.
      error: the ``ConversionError`` subclass to raise.

    Raises:
      ConversionError: (``error``) tensors missing or unexpected, a fused tensor of the
        wrong length, or a tensor whose converted shape is not the parameter's.
    """
    rules = list(rules)
    groups = _groups(rules)
    needed = list(dict.fromkeys(r.theirs for r in rules))
    keys = set(state_dict.keys())
    problems = []
    missing = [n for n in needed if n not in keys]
    if missing:
        problems.append(
            f"it lacks {len(missing)} parameter(s) the config needs, e.g. {_examples(missing)}"
        )
    unexpected = sorted(keys - set(needed) - set(optional)) if extra == "error" else []
    if unexpected:
        problems.append(
            f"it has {len(unexpected)} tensor(s) the config does not, e.g. {_examples(unexpected)}"
        )
    if problems:
        raise error(f"{what} does not match the config: {'; '.join(problems)}; {hint}")
    fused: dict[str, tuple[np.ndarray, int]] = {}  # name -> (tensor, pieces not yet out)
    for r in rules:
        if r.rows is None:
            stored = to_numpy(state_dict[r.theirs])
        else:
            if r.theirs not in fused:
                whole = to_numpy(state_dict[r.theirs])
                total = max(g.rows[1] for g in groups[r.theirs])
                if whole.shape[0] != total:
                    raise error(
                        f"{r.theirs}: {whole.shape[0]} rows, expected {total} for this config."
                    )
                fused[r.theirs] = (whole, len(groups[r.theirs]))
            whole, left = fused[r.theirs]
            stored = whole[r.rows[0] : r.rows[1]]
            if left == 1:
                del fused[r.theirs]  # free it as soon as its last piece is out
            else:
                fused[r.theirs] = (whole, left - 1)
        try:
            value = r.transform.load(stored)
        except ConversionError as err:
            raise error(f"{r.theirs}: {err}") from None
        want = tuple(shapes[r.ours])
        if tuple(value.shape) != want:
            raise error(
                f"{r.theirs}: converted shape {tuple(value.shape)} does not match {r.ours} "
                f"{want}; {hint}"
            )
        yield r.ours, value


def save(
    rules: Iterable[Rule], get: Callable[[str], np.ndarray]
) -> Iterator[tuple[str, np.ndarray]]:
    """(reference name, NumPy array in its layout) for each rule, in the rules' order; a
    fused tensor comes when the last of its pieces does, its pieces in row order.

    ``get(ours)`` gives our parameter's array (read when its rule comes, so a caller can
    stream a model out one tensor at a time).
    """
    rules = list(rules)
    groups = _groups(rules)
    pending: dict[str, dict[int, np.ndarray]] = {}
    for r in rules:
        value = r.transform.save(get(r.ours))
        if r.rows is None:
            yield r.theirs, value
            continue
        got = pending.setdefault(r.theirs, {})
        got[r.rows[0]] = value
        if len(got) == len(groups[r.theirs]):
            yield r.theirs, np.concatenate([got[start] for start in sorted(got)], axis=0)
            del pending[r.theirs]

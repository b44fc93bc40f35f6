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
    for path, read in load_slices(rules, state_dict, shapes, ...):
        read(index)                         a slice of ours in our layout, reading only
                                            its part of the stored tensor where it can
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
    "load_slices",
    "prefixed",
    "reshape",
    "save",
]


class Transform(NamedTuple):
    """A tensor's layout change: ``load`` maps the reference's array to ours, ``save`` ours
    to the reference's. ``load`` may raise ``ConversionError`` for a stored shape it cannot
    take (the engine adds the tensor's name). ``index``, when the change moves whole axes,
    maps a slice of ours (a tuple of ``slice``, one per axis) to the slice of the stored
    tensor that ``load`` turns into it; None when a slice of ours is no slice there."""

    load: Callable[[np.ndarray], np.ndarray]
    save: Callable[[np.ndarray], np.ndarray]
    index: Callable[[tuple[slice, ...]], tuple[slice, ...]] | None = None


def _same(a):
    return a


SAME = Transform(_same, _same, _same)
"""The same layout on both sides."""
TRANSPOSE = Transform(
    lambda a: a.T, lambda a: np.ascontiguousarray(a.T), lambda index: tuple(reversed(index))
)
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


def _check_names(rules, state_dict, what, hint, extra, optional, error) -> None:
    """Raises ``error`` for tensors the rules need that are missing, or (``extra="error"``)
    tensors no rule reads, before any tensor is read."""
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
    _check_names(rules, state_dict, what, hint, extra, optional, error)
    fused: dict[str, tuple[np.ndarray, int]] = {}  # name -> (tensor, pieces not yet out)
    for r in rules:
        if r.rows is None:
            stored = to_numpy(state_dict[r.theirs])
        else:
            if r.theirs not in fused:
                whole = _fused_rows(r, to_numpy(state_dict[r.theirs]), groups, error)
                fused[r.theirs] = (whole, len(groups[r.theirs]))
            whole, left = fused[r.theirs]
            stored = whole[r.rows[0] : r.rows[1]]
            if left == 1:
                del fused[r.theirs]  # free it as soon as its last piece is out
            else:
                fused[r.theirs] = (whole, left - 1)
        yield r.ours, _convert(r, stored, tuple(shapes[r.ours]), hint, error)


def load_slices(
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
) -> Iterator[tuple[str, Callable[[tuple[slice, ...]], np.ndarray]]]:
    """(our path, ``read``) for each rule, in the rules' order, where ``read(index)`` is
    ``value[index]`` of what ``load`` gives for that path (``index``: one ``slice`` per
    axis of ours, as ``jax.make_array_from_callback`` passes), read from the stored tensor
    as a slice where it can be: a host then reads only its devices' shards.

    A slice is read when the state dict reads slices (``state_dict.read_slice(name,
    index)`` and ``state_dict.info(name) -> (dtype, shape)``: a safetensors file) and the
    rule's transform moves whole axes (``Transform.index``: the same layout, a transpose,
    a fused tensor's rows). Otherwise ``read`` reads the whole tensor (a fused one whole)
    on its first call, on this host, keeps it for the path's other slices and frees it
    with ``read``: one tensor at a time. Names are checked as in ``load``, before any
    tensor is read; the converted shape of a sliced tensor from its stored shape (read
    from the header), of another when it is read.

    Raises:
      ConversionError: (``error``) as ``load``.
    """
    rules = list(rules)
    groups = _groups(rules)
    _check_names(rules, state_dict, what, hint, extra, optional, error)
    sliced = hasattr(state_dict, "read_slice")
    for r in rules:
        want = tuple(shapes[r.ours])
        if not (sliced and r.transform.index is not None):
            yield r.ours, _whole_reader(r, state_dict, groups, want, to_numpy, hint, error)
            continue
        # The header's shape as a zero-stride view: checked and converted without reading.
        stored = np.broadcast_to(np.zeros((), np.uint8), state_dict.info(r.theirs)[1])
        start = 0
        if r.rows is not None:
            stored = _fused_rows(r, stored, groups, error)[r.rows[0] : r.rows[1]]
            start = r.rows[0]
        _convert(r, stored, want, hint, error)
        yield r.ours, _slice_reader(r, state_dict, start, len(want), to_numpy)


def _slice_reader(r: Rule, state_dict, start: int, ndim: int, to_numpy):
    """``read(index)`` of our slice ``index`` for a rule whose transform moves whole axes,
    reading just the stored slice it comes from (``start``: the piece's first row within
    a fused tensor)."""

    def read(index):
        index = tuple(index) + (slice(None),) * (ndim - len(tuple(index)))
        theirs = list(r.transform.index(index))
        if r.rows is not None:  # the piece's rows within the fused tensor
            lo, hi, _ = theirs[0].indices(r.rows[1] - r.rows[0])
            theirs[0] = slice(start + lo, start + hi)
        return r.transform.load(to_numpy(state_dict.read_slice(r.theirs, tuple(theirs))))

    return read


def _whole_reader(r: Rule, state_dict, groups, want, to_numpy, hint, error):
    """``read(index)`` for a rule read whole: the converted tensor, read on the first call
    and kept while ``read`` lives."""
    kept: list[np.ndarray] = []

    def read(index):
        if not kept:
            whole = to_numpy(state_dict[r.theirs])
            if r.rows is not None:
                whole = _fused_rows(r, whole, groups, error)[r.rows[0] : r.rows[1]]
            kept.append(_convert(r, whole, want, hint, error))
        return kept[0][tuple(index)]

    return read


def _fused_rows(r: Rule, whole: np.ndarray, groups, error) -> np.ndarray:
    """``whole`` (the fused tensor ``r.theirs``) once its row count is checked."""
    total = max(g.rows[1] for g in groups[r.theirs])
    rows = whole.shape[0] if whole.ndim else 0
    if rows != total:
        raise error(f"{r.theirs}: {rows} rows, expected {total} for this config.")
    return whole


def _convert(r: Rule, stored: np.ndarray, want: tuple, hint: str, error) -> np.ndarray:
    """``stored`` in our layout (``r.transform``), checked to have our shape ``want``."""
    try:
        value = r.transform.load(stored)
    except ConversionError as err:
        raise error(f"{r.theirs}: {err}") from None
    if tuple(value.shape) != want:
        raise error(
            f"{r.theirs}: converted shape {tuple(value.shape)} does not match {r.ours} "
            f"{want}; {hint}"
        )
    return value


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

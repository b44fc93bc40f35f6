"""Logical axis names for parameters and activations, and their mapping to a device mesh.

Model code names *logical* axes only ("batch", "embed", "heads", ...); one rules table maps
them to the mesh axes ``("data", "fsdp", "tensor")``. With no active mesh (the default,
one device) every helper here is a no-op, so the model runs unsharded.

    mesh = make_mesh((2, 2, 2))
    with activate(mesh):                       # DEFAULT_RULES unless given
        shardings = tree_shardings(state)      # NamedSharding per leaf, by parameter path
        ...jit the train step with these shardings...

Recurrent ops (``pallas_kernels``) are opaque to the SPMD partitioner, so the layers call
them through ``shard_op``: inside ``jax.shard_map`` over the batch and head axes, so each
device runs the op on its own shard with no hidden all-gather.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axes. The batch is split over data x fsdp; FSDP shards parameters
# along the embedding dim; tensor parallelism splits heads, the mLSTM inner dim, the FFN
# hidden dim and the vocabulary.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("inner", "tensor"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
)

# Parameter path (suffix regex) -> logical axes, first match wins. Paths are the dotted
# NNX paths (an optimizer state that mirrors the parameters matches by the same suffix).
PARAM_AXES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r"token_embedding\.embedding$", ("vocab", "embed")),
    (r"lm_head\.kernel$", ("embed", "vocab")),
    (r"ffn\.proj_up\.kernel$", ("embed", "mlp")),
    (r"ffn\.proj_up\.bias$", ("mlp",)),
    (r"ffn\.proj_down\.kernel$", ("mlp", "embed")),
    (r"xlstm\.proj_up\.kernel$", ("embed", "inner")),
    (r"xlstm\.proj_up\.bias$", ("inner",)),
    (r"xlstm\.proj_down\.kernel$", ("inner", "embed")),
    (r"xlstm\.[qkv]_proj\.weight$", ("inner", None, None)),
    (r"xlstm\.[qkv]_proj\.bias$", ("inner",)),
    (r"xlstm\.[ifzo]gate\.weight$", ("heads", None, None)),  # sLSTM headwise gates
    (r"xlstm\.recurrent_kernel$", ("heads", None, None, None)),
    (r"xlstm\.bias$", ("heads", None, None)),
    (r"xlstm\.[if]gate\.kernel$", (None, "heads")),  # mLSTM scalar gates
    (r"xlstm\.[if]gate\.bias$", ("heads",)),
)

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]
# Parameters smaller than this stay replicated under FSDP (norm scales, biases, gates).
FSDP_MIN_SIZE = 1024
_ACTIVE: contextvars.ContextVar[tuple[Mesh, dict] | None] = contextvars.ContextVar(
    "xlstm_jax_mesh", default=None
)


class ShardingError(ValueError):
    """A mesh or sharding that cannot work; the message names the problem and the fix."""


def make_mesh(sizes: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``("data", "fsdp", "tensor")`` mesh; one size may be -1 (inferred).

    Raises ``ShardingError`` when the sizes do not multiply to the device count.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = list(sizes)
    if len(sizes) != 3:
        raise ShardingError(f"mesh needs 3 sizes (data, fsdp, tensor); got {sizes}.")
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ShardingError(f"mesh sizes must be >= 1 with at most one -1; got {sizes}.")
    fixed = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % fixed:
            raise ShardingError(
                f"mesh {sizes}: the fixed axes ({fixed}) do not divide the {len(devices)} devices."
            )
        sizes[sizes.index(-1)] = len(devices) // fixed
    if int(np.prod(sizes)) != len(devices):
        raise ShardingError(
            f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} = {int(np.prod(sizes))} "
            f"devices, but {len(devices)} are available; set the sizes so that their product is "
            f"{len(devices)} (or one of them to -1)."
        )
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """Makes ``mesh`` and ``rules`` the target of the helpers below (at trace time)."""
    token = _ACTIVE.set((mesh, dict(rules)))
    try:
        yield mesh
    finally:
        _ACTIVE.reset(token)


def active() -> tuple[Mesh, dict] | None:
    """The active (mesh, rules), or None when running unsharded."""
    return _ACTIVE.get()


def _axis_size(mesh: Mesh, axes) -> int:
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    return int(np.prod([mesh.shape[a] for a in axes])) if axes else 1


def logical_to_spec(
    logical: Sequence[str | None],
    shape: Sequence[int] | None = None,
    *,
    mesh: Mesh | None = None,
    rules: dict | None = None,
    what: str = "array",
) -> PartitionSpec:
    """PartitionSpec for logical axis names under the rules (unknown names replicate).

    With ``shape``, a dim not divisible by its mesh axes raises ``ShardingError``.
    """
    if mesh is None:
        mesh, rules = active()
    spec = []
    for d, name in enumerate(logical):
        axes = rules.get(name) if name is not None else None
        if axes is not None and _axis_size(mesh, axes) == 1:
            axes = None  # a size-1 mesh axis shards nothing: leave the dim replicated
        if axes is not None and shape is not None and shape[d] % _axis_size(mesh, axes):
            raise ShardingError(
                f"{what}: dim {d} (logical '{name}', size {shape[d]}) is not divisible by mesh "
                f"axes {axes} of size {_axis_size(mesh, axes)}; change the mesh sizes or map "
                f"'{name}' to another axis (or None) in the sharding rules."
            )
        spec.append(axes)
    return PartitionSpec(*spec)


def param_logical_axes(path: str, ndim: int) -> tuple[str | None, ...]:
    """Logical axes of the parameter at dotted ``path`` (replicated if no rule matches)."""
    for pattern, axes in PARAM_AXES:
        if re.search(pattern, path) and len(axes) == ndim:
            return axes
    return (None,) * ndim


def path_str(path) -> str:
    """Dotted path of a pytree leaf, without the ``.value`` of NNX variables."""
    parts = []
    for k in path:
        if getattr(k, "name", None) == "value":
            continue
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return ".".join(parts)


def tree_shardings(tree: Any, mesh: Mesh | None = None, rules: Rules | None = None) -> Any:
    """A ``NamedSharding`` for every array leaf of ``tree`` (params, grads, optimizer state),
    chosen by the leaf's path; scalars and unmatched leaves are replicated."""
    if mesh is None:
        mesh, rules_d = active()
    else:
        rules_d = dict(DEFAULT_RULES if rules is None else rules)

    def one(path, leaf):
        shape = getattr(leaf, "shape", ())
        p = path_str(path)
        logical = param_logical_axes(p, len(shape))
        spec = logical_to_spec(logical, shape, mesh=mesh, rules=rules_d, what=f"parameter {p}")
        return NamedSharding(mesh, _fsdp_fallback(spec, shape, mesh))

    return jax.tree_util.tree_map_with_path(one, tree)


def _fsdp_fallback(spec: PartitionSpec, shape, mesh: Mesh) -> PartitionSpec:
    """FSDP shards every sizeable parameter: one whose logical axes put nothing on ``fsdp``
    (headwise weights, conv kernels, gates) is split over ``fsdp`` along its largest free,
    divisible dim. Small ones (under ``FSDP_MIN_SIZE`` elements) stay replicated."""
    n = mesh.shape.get("fsdp", 1)
    used = {a for axes in spec for a in ((axes,) if isinstance(axes, str) else (axes or ()))}
    if n == 1 or "fsdp" in used or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
        return spec
    entries = list(spec) + [None] * (len(shape) - len(spec))
    free = [d for d in range(len(shape)) if entries[d] is None and shape[d] % n == 0]
    if free:
        entries[max(free, key=lambda d: shape[d])] = "fsdp"
    return PartitionSpec(*entries)


def constrain(x: jax.Array, logical: Sequence[str | None]) -> jax.Array:
    """``with_sharding_constraint`` by logical names; identity when no mesh is active."""
    ctx = active()
    if ctx is None:
        return x
    mesh, rules = ctx
    spec = logical_to_spec(logical, x.shape, mesh=mesh, rules=rules, what="activation")
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def shard_op(fn: Callable, args: Sequence[Any], in_logical: Sequence[Any], out_logical: Any) -> Any:
    """Calls ``fn(*args)`` inside ``jax.shard_map`` with specs from logical axes.

    ``in_logical``/``out_logical`` mirror the structure of ``args``/the output with a tuple
    of logical names per array (None for an absent optional argument). Without an active
    mesh this is ``fn(*args)``.
    """
    ctx = active()
    if ctx is None:
        return fn(*args)
    mesh, rules = ctx

    def is_axes(x):
        return isinstance(x, tuple) and all(a is None or isinstance(a, str) for a in x)

    def spec_tree(logical, values):
        return jax.tree.map(
            lambda lg, v: logical_to_spec(lg, v.shape, mesh=mesh, rules=rules, what="op input"),
            logical,
            values,
            is_leaf=is_axes,
        )

    in_specs = tuple(
        spec_tree(lg, a) if a is not None else None for lg, a in zip(in_logical, args, strict=True)
    )
    out_specs = jax.tree.map(
        lambda lg: logical_to_spec(lg, mesh=mesh, rules=rules), out_logical, is_leaf=is_axes
    )
    # Pallas calls are not partitionable and their interpret mode fails vma checks.
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)(
        *args
    )

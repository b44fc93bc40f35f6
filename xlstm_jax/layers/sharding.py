"""Logical axis names for parameters and activations, and their mapping to a device mesh.

Every parameter is created with its logical axes (``param(value, axes)``, stored as the
variable's ``logical_axes`` metadata), so how a weight is sharded follows from where it
was made, not from its attribute path. One rules table maps the logical names to the
mesh axes ``("data", "fsdp", "tensor")``; the mesh is JAX's own (``jax.set_mesh``) and the
rules Flax's (``nnx.logical_axis_rules``), both entered by ``activate``. With no active
mesh (the default, one device) every helper here is a no-op and the model runs unsharded.

    mesh = make_mesh((2, 2, 2))
    shardings = param_shardings(nnx.state(model, nnx.Param), mesh)   # NamedSharding per leaf
    with activate(mesh):                                             # DEFAULT_RULES unless given
        ...jit the train step with these shardings...

Recurrent ops (``pallas_kernels``) are opaque to the SPMD partitioner, so the layers call
them through ``shard_op``: inside ``jax.shard_map`` over the batch and head axes, so each
device runs the op on its own shard with no hidden all-gather.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from flax.core import spmd as flax_spmd
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

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

Axes = tuple[str | None, ...]
Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]
# Parameters smaller than this stay replicated under FSDP (norm scales, biases, gates).
FSDP_MIN_SIZE = 1024
# The variable metadata key that holds a parameter's logical axes.
AXES_KEY = "logical_axes"


class ShardingError(ValueError):
    """A mesh or sharding that cannot work; the message names the problem and the fix."""


def param(value: jax.Array, axes: Axes | None = None) -> nnx.Param:
    """An ``nnx.Param`` carrying its logical axes (one name or None per dim of ``value``).

    Dims left None (or no axes at all) are free: FSDP may still shard them (see
    ``param_shardings``).
    """
    if axes is None:
        return nnx.Param(value)
    if len(axes) != value.ndim:
        raise ValueError(f"logical axes {axes} do not match a parameter of shape {value.shape}.")
    return nnx.Param(value, **{AXES_KEY: tuple(axes)})


def logical_axes(variable: nnx.Variable) -> Axes:
    """The logical axes a parameter was created with (all None if it has none)."""
    axes = variable.get_metadata().get(AXES_KEY)
    return tuple(axes) if axes is not None else (None,) * np.ndim(variable.get_value())


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
        n = len(devices)
        have = f"{n} device is" if n == 1 else f"{n} devices are"
        simulate = (
            f" To try a mesh on a CPU, simulate its devices: XLA_FLAGS="
            f"--xla_force_host_platform_device_count={int(np.prod(sizes))} (set before JAX "
            "starts, e.g. in front of the command)."
            if devices[0].platform == "cpu"
            else ""
        )
        raise ShardingError(
            f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} = {int(np.prod(sizes))} "
            f"devices, but {have} available; set the sizes so that their product is {n} (or one "
            f"of them to -1).{simulate}"
        )
    return Mesh(
        np.asarray(devices).reshape(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(sizes)
    )


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """Makes ``mesh`` JAX's current mesh and ``rules`` Flax's logical-axis rules (read at
    trace time by ``constrain`` and ``shard_op``)."""
    with jax.set_mesh(mesh), nnx.logical_axis_rules(tuple(rules)):
        yield mesh


def _rules() -> dict:
    return dict(flax_spmd.get_logical_axis_rules() or DEFAULT_RULES)


def _mesh_for(x) -> Mesh | jax.sharding.AbstractMesh | None:
    """The active mesh, or None: abstract while tracing (under ``jax.jit``), concrete for
    eager calls."""
    abstract = jax.sharding.get_abstract_mesh()
    if abstract.empty:
        return None
    return abstract if isinstance(x, jax.core.Tracer) else jax.sharding.get_mesh()


def _axis_size(mesh, axes) -> int:
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    return int(np.prod([mesh.shape[a] for a in axes])) if axes else 1


def logical_to_spec(
    logical: Sequence[str | None],
    shape: Sequence[int] | None = None,
    *,
    mesh,
    rules: dict,
    what: str = "array",
) -> PartitionSpec:
    """PartitionSpec for logical axis names under the rules (unknown names replicate).

    With ``shape``, a dim not divisible by its mesh axes raises ``ShardingError``.
    """
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


def _fsdp_fallback(spec: PartitionSpec, shape, mesh) -> PartitionSpec:
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


def param_shardings(params: nnx.State, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> dict:
    """A ``NamedSharding`` for every parameter of ``params`` (an ``nnx.State`` of
    ``nnx.Param``s, e.g. ``nnx.state(model, nnx.Param)``), from the logical axes each was
    created with, as a pure dict shaped like ``nnx.to_pure_dict(params)``.

    Raises:
        ShardingError: a dim is not divisible by the mesh axes its logical name maps to.
    """
    rules_d = dict(rules)

    def one(path, var):
        shape = np.shape(var.get_value())
        name = ".".join(str(p) for p in path)
        spec = logical_to_spec(
            logical_axes(var), shape, mesh=mesh, rules=rules_d, what=f"parameter {name}"
        )
        return NamedSharding(mesh, _fsdp_fallback(spec, shape, mesh))

    flat = nnx.to_flat_state(params)
    out: dict = {}
    for path, var in flat:
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = one(path, var)
    return out


def constrain(x: jax.Array, logical: Sequence[str | None]) -> jax.Array:
    """``with_sharding_constraint`` by logical names; identity when no mesh is active."""
    mesh = _mesh_for(x)
    if mesh is None:
        return x
    spec = logical_to_spec(logical, x.shape, mesh=mesh, rules=_rules(), what="activation")
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def shard_op(fn: Callable, args: Sequence[Any], in_logical: Sequence[Any], out_logical: Any) -> Any:
    """Calls ``fn(*args)`` inside ``jax.shard_map`` with specs from logical axes.

    ``in_logical``/``out_logical`` mirror the structure of ``args``/the output with a tuple
    of logical names per array. Without an active mesh this is ``fn(*args)``.
    """
    mesh = _mesh_for(args[0])
    if mesh is None:
        return fn(*args)
    rules = _rules()

    def is_axes(x):
        return isinstance(x, tuple) and all(a is None or isinstance(a, str) for a in x)

    in_specs = tuple(
        jax.tree.map(
            lambda lg, v: logical_to_spec(lg, v.shape, mesh=mesh, rules=rules, what="op input"),
            lg,
            a,
            is_leaf=is_axes,
        )
        for lg, a in zip(in_logical, args, strict=True)
    )
    out_specs = jax.tree.map(
        lambda lg: logical_to_spec(lg, mesh=mesh, rules=rules), out_logical, is_leaf=is_axes
    )
    # Pallas calls are not partitionable and their interpret mode fails vma checks.
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)(
        *args
    )


def place(
    read: Callable[[tuple[slice, ...]], np.ndarray],
    shape: tuple[int, ...],
    dtype,
    sharding: jax.sharding.Sharding | None,
) -> jax.Array:
    """A global array of ``shape`` and ``dtype`` with ``sharding``, built from its pieces:
    each of this process's devices gets ``read(index)`` (``index``: one ``slice`` per axis,
    its shard), cast like ``jnp.asarray``; a slice several devices share is read once. So
    a host reads (and holds, one parameter at a time) only its own devices' slices.

    A ``sharding`` of None, or one that does not divide ``shape`` (a checkpoint of another
    config, which the caller's shape check then reports), places the whole array on the
    default device.
    """
    try:
        if sharding is not None:
            sharding.shard_shape(shape)
    except ValueError:
        sharding = None
    if sharding is None:
        return jax.numpy.asarray(read(tuple(slice(None) for _ in shape)), dtype)
    got: dict[tuple, np.ndarray] = {}

    def shard(index: tuple[slice, ...]) -> np.ndarray:
        key = tuple((s.start, s.stop) for s in index)
        if key not in got:
            got[key] = np.asarray(read(index), dtype)
        return got[key]

    return jax.make_array_from_callback(tuple(shape), sharding, shard)


def set_placed(params: dict, values, shardings: dict | None = None) -> None:
    """Sets each ``(path, value)`` of ``values`` (an array-like ``value``, e.g. from
    ``formats.namemap.load``) into the parameter ``params[path]`` (an ``nnx.Variable``),
    placed by ``place`` with ``shardings[path]`` (no sharding: the default device)."""
    for path, value in values:
        var = params[path]
        sharding = None if shardings is None else shardings.get(path)
        var.set_value(place(value.__getitem__, var.shape, var.dtype, sharding))

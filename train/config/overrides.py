"""``--set key=value`` overrides of the config tree, and its JSON round trip.

Overrides address any field by its dotted path (``train.steps=200``,
``model.mlstm_block.mlstm.num_heads=2``); the string is coerced to the field's type, and
the tree is rebuilt bottom-up so every section's validation runs again. An unknown key
raises ``ConfigError`` listing the valid keys at that level. ``to_dict`` / ``from_dict``
turn a config into the JSON of a run's ``config.json`` and back.

The model section of that JSON names its family (``"family": "xlstm"``, a name of
``xlstm_jax.registry.FAMILY_NAMES``), and ``from_dict`` builds the family's config class
from it. Runs written before the tag existed have none; their class is guessed from the
section's fields, as it was when they were written.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import math
import types
import typing
from typing import Any, Literal

from train.config.schema import ConfigError, ExperimentConfig
from xlstm_jax.layers.config import check_value

__all__ = [
    "FAMILY_KEY",
    "apply_overrides",
    "config_diff",
    "flatten",
    "from_dict",
    "read_run_config",
    "to_dict",
    "with_defaults",
]

# The key of the model section that names the model's family.
FAMILY_KEY = "family"
# Untagged (older) runs: the families tried in this order, the first whose config has
# every field of the section wins (the order of the model union of the old schema).
_LEGACY_GUESS = ("xlstm", "xlstm_large", "transformer", "tirex")


@functools.cache
def _known() -> dict[str, type]:
    """Classes a ``--set`` may instantiate when a section that is None gets a field set,
    and that the model configs' string annotations name (imported on first use, so this
    module needs no model code to be imported)."""
    from xlstm_jax import (
        FeedForwardConfig,
        mLSTMBlockConfig,
        mLSTMLayerConfig,
        sLSTMBlockConfig,
        sLSTMLayerConfig,
    )

    classes = (mLSTMBlockConfig, mLSTMLayerConfig, sLSTMBlockConfig, sLSTMLayerConfig)
    return {c.__name__: c for c in (*classes, FeedForwardConfig)}


def _public_fields(obj_or_cls) -> list[dataclasses.Field]:
    # Underscore fields (_num_blocks, _block_idx) are filled in by the model config itself.
    return [f for f in dataclasses.fields(obj_or_cls) if not f.name.startswith("_")]


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls, localns=_known())


def _union_args(tp) -> tuple:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def _dataclass_in(tp):
    """The (first) dataclass in the (union) type ``tp``, or None."""
    classes = [a for a in _union_args(tp) if dataclasses.is_dataclass(a)]
    return classes[0] if classes else None


def _tuple_of_dataclass(tp):
    """The dataclass ``X`` of a ``tuple[X, ...]`` type (TiRex-2's block templates), or None."""
    if typing.get_origin(tp) is not tuple:
        return None
    args = typing.get_args(tp)
    return args[0] if len(args) == 2 and dataclasses.is_dataclass(args[0]) else None


def _coerce(raw: str, tp, key: str):
    """Parses the string ``raw`` into a value of type ``tp`` (for the field ``key``)."""
    args = _union_args(tp)
    low = raw.strip().lower()
    if type(None) in args and low in ("none", "null"):
        return None
    for arg in args:
        if arg is bool:
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ConfigError(f"--set {key}={raw}: expected true or false.")
    if int in args and float not in args:
        try:
            value = int(raw)
        except ValueError:
            pass
        else:
            if not -(2**63) <= value < 2**63:  # the arrays and counters that hold it are int64
                raise ConfigError(f"--set {key}={raw}: give an integer within int64 (|n| < 2**63).")
            return value
    if float in args:
        try:
            value = float(raw)
        except ValueError:
            pass
        else:
            if not math.isfinite(value):
                raise ConfigError(f"--set {key}={raw}: give a finite number (not inf or NaN).")
            return value
    literals = [v for a in args if typing.get_origin(a) is Literal for v in typing.get_args(a)]
    if raw in literals:
        return raw
    if str in args:
        return raw
    if any(typing.get_origin(a) is tuple for a in args):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = tuple(int(v) for v in raw.split(",") if v.strip()) if raw.strip() else ()
        if isinstance(value, int):
            value = (value,)
        if isinstance(value, list | tuple):
            return tuple(value)
    expected = ", ".join(sorted(str(v) for v in literals)) or " | ".join(
        getattr(a, "__name__", str(a)) for a in args
    )
    raise ConfigError(f"--set {key}={raw}: cannot parse the value; expected {expected}.")


def _apply(obj, updates: dict, prefix: str):
    """Returns ``obj`` with ``updates`` (field name -> raw string or nested dict) applied,
    in one ``replace`` per section so that fields validated together change together."""
    valid = [f.name for f in _public_fields(obj)]
    hints = _hints(type(obj))
    changes = {}
    for name, raw in updates.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in valid:
            where = f"under '{prefix}'" if prefix else "at the top level"
            raise ConfigError(
                f"unknown config key '{key}'; valid keys {where}: {', '.join(valid)}."
            )
        current = getattr(obj, name)
        if isinstance(raw, dict):
            if current is None:
                cls = _dataclass_in(hints[name])
                if cls is None:
                    raise ConfigError(f"config key '{key}' is not a section.")
                current = cls()
            if not dataclasses.is_dataclass(current):
                raise ConfigError(
                    f"config key '{key}' is a value, not a section; set it as --set {key}=VALUE."
                )
            changes[name] = _apply(current, raw, key)
        else:
            if dataclasses.is_dataclass(current) and raw.strip().lower() not in ("none", "null"):
                fields = ", ".join(f.name for f in _public_fields(current))
                raise ConfigError(
                    f"config key '{key}' is a section; set one of its keys: {fields}."
                )
            changes[name] = _coerce(raw, hints[name], key)
    return dataclasses.replace(obj, **changes)


def apply_overrides(cfg: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """Applies ``key=value`` strings to ``cfg`` and returns the new config.

    Order does not matter (a repeated key keeps its last value): all changes to one
    section are applied together, then the section is validated, so e.g.
    ``model.num_blocks=1 model.slstm_at=[]`` works in either order.

    Raises:
        ConfigError: a malformed override, an unknown key (the message lists the valid
            keys at that level) or a value the section's validation rejects.
    """
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.steps=100.")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r}: the key is empty.")
        node = tree
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(
                    f"--set {key}: '{'.'.join(parts[: i + 1])}' is also set as a value."
                )
        if isinstance(node.get(parts[-1]), dict):
            raise ConfigError(f"--set {key}: its fields are also set one by one.")
        node[parts[-1]] = raw
    return _apply(cfg, tree, "")


def to_dict(cfg) -> dict:
    """The config as plain JSON-ready data (tuples become lists, private fields dropped).

    An ``ExperimentConfig``'s model section starts with its family tag (``FAMILY_KEY``);
    a model config converted on its own (a checkpoint's record of the model) has none.
    """
    if isinstance(cfg, ExperimentConfig):
        from xlstm_jax.registry import family_of

        out = _fields_dict(cfg)
        out["model"] = {FAMILY_KEY: family_of(cfg.model).name, **out["model"]}
        return out
    if dataclasses.is_dataclass(cfg):
        return _fields_dict(cfg)
    if isinstance(cfg, tuple | list):
        return [to_dict(v) for v in cfg]
    return cfg


def _fields_dict(cfg) -> dict:
    return {f.name: to_dict(getattr(cfg, f.name)) for f in _public_fields(cfg)}


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def config_diff(old: dict, new: dict) -> list[str]:
    """Human-readable ``key: old -> new`` lines for the keys that differ."""
    a, b = flatten(old), flatten(new)
    return [
        f"{k}: {json.dumps(a.get(k))} -> {json.dumps(b.get(k))}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def from_dict(cls, data: dict, prefix: str = ""):
    """The inverse of ``to_dict``: rebuilds the frozen config ``cls`` (e.g. the
    ``config.json`` of a run: ``from_dict(ExperimentConfig, json.load(f))``).

    ``data`` comes from a file, so every value is checked against its field's type
    (``xlstm_jax.layers.config.check_value``) before the config is built; keys it does not
    know are ignored (a run written by a newer version). ``prefix`` is the dotted path of
    ``data`` in the tree, for the messages.

    Raises:
        ConfigError: a section that is not a mapping, a value of the wrong type, a
            required field missing, a value the section's validation rejects, or a model
            section naming no known family; the message names the dotted key.
    """
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "the config"
        raise ConfigError(f"{where} must be a mapping of fields; got {type(data).__name__}.")
    hints = _hints(cls)
    kw = {}
    for f in _public_fields(cls):
        key = prefix + f.name
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key} is missing (a required field of {cls.__name__}).")
            continue
        value = data[f.name]
        if cls is ExperimentConfig and f.name == "model":
            kw[f.name] = _model_from_dict(value)
            continue
        sub = _dataclass_in(hints[f.name])
        item = _tuple_of_dataclass(hints[f.name])
        if sub and isinstance(value, dict):
            kw[f.name] = from_dict(sub, value, key + ".")
        elif item and isinstance(value, list):
            kw[f.name] = tuple(from_dict(item, v, f"{key}.{i}.") for i, v in enumerate(value))
        else:
            kw[f.name] = check_value(value, hints[f.name], key)
    try:
        return cls(**kw)
    except ConfigError:
        raise
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as err:
        # A section's own validation tripping over values of the right types but absurd
        # sizes or combinations: still a bad file, not a bug to show as a traceback.
        raise ConfigError(
            f"{prefix.rstrip('.') or cls.__name__}: invalid values ({err})."
        ) from None


def _model_from_dict(section: dict):
    """The model config of a ``config.json`` model section: the class of the family it
    names, or for an untagged (older) section the first family whose config has all of
    its fields."""
    from xlstm_jax.registry import FAMILY_NAMES, family

    if not isinstance(section, dict):
        raise ConfigError(f"model must be a mapping of fields; got {type(section).__name__}.")
    section = dict(section)
    tag = section.pop(FAMILY_KEY, None)
    if tag is not None:
        if tag not in FAMILY_NAMES:
            raise ConfigError(
                f"model.{FAMILY_KEY}={tag!r} is not a model family this version knows "
                f"({', '.join(FAMILY_NAMES)})."
            )
        return from_dict(family(tag).config, section, "model.")
    classes = [family(name).config for name in _LEGACY_GUESS]
    for config_cls in classes:
        if set(section) <= {f.name for f in _public_fields(config_cls)}:
            return from_dict(config_cls, section, "model.")
    return from_dict(classes[0], section, "model.")


def with_defaults(record: dict, like: dict) -> dict:
    """A checkpoint's record of its model config (``to_dict`` of it, written by any version)
    with the fields it lacks at their defaults: a key added since (e.g. ``scan_layers``)
    is then no difference from a model that leaves it at its default. ``like`` is this
    version's record of a model of the same family (it picks the config class); a record
    that does not read back is returned as it is.
    """
    from xlstm_jax.registry import FAMILY_NAMES, family

    for name in FAMILY_NAMES:
        cls = family(name).config
        if set(like) == {f.name for f in _public_fields(cls)}:
            try:
                return to_dict(from_dict(cls, record, "model."))
            except ConfigError:
                return record
    return record


def read_run_config(path, fix: str) -> ExperimentConfig:
    """The ``ExperimentConfig`` of a run's ``config.json`` at ``path``.

    Raises:
        ConfigError: the file cannot be read, is not JSON, has no "model" section, or
            holds a value ``from_dict`` refuses; one paragraph naming ``path``, the key,
            and ``fix`` (what to do, e.g. the command that rewrites the file).
    """
    from xlstm_jax.formats.jsonfile import read_json

    raw = read_json(path, ConfigError, fix)
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise ConfigError(f'{path} is not a run\'s config (no "model" section); {fix}.')
    try:
        return from_dict(ExperimentConfig, raw)
    except ConfigError as err:
        raise ConfigError(f"{path} is damaged or from another version: {err} {fix}.") from None

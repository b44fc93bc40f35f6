"""Old module paths, kept for one release: ``xlstm_jax.large``, ``xlstm_jax.config``, ...

Before the families got their own packages, the modules sat flat in ``xlstm_jax/``. Each
old path in ``MOVED`` is now served by a small module that forwards its old public names
to their new homes (looked up on each access, so the objects are the very same ones) and
warns ``DeprecationWarning`` once, when it is imported, naming the new path.

``xlstm_jax/__init__.py`` installs ``LegacyFinder`` at the *end* of ``sys.meta_path``: a
module file that still exists at an old path is found first, so only paths whose files are
gone are forwarded.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Callable

__all__ = ["MOVED", "LegacyFinder", "install"]

_L = "xlstm_jax.layers."
_X = "xlstm_jax.models.xlstm."
_XL = "xlstm_jax.models.xlstm_large."
_T = "xlstm_jax.models.tirex."
_TR = "xlstm_jax.models.transformer."
_F = "xlstm_jax.formats."


def _names(module: str, *names: str) -> dict[str, str]:
    return {n: module for n in names}


def round_up_dim(factor: float, dim: int, multiple: int, up: bool = True) -> int:
    """``ceil(factor * dim / multiple) * multiple`` (floor when ``up`` is False): the old
    ``xlstm_jax.config.round_up_dim``, now ``xlstm_jax.layers.config.round_up``."""
    from xlstm_jax.layers.config import round_up

    return round_up(factor * dim, multiple, rule="ceil" if up else "floor")


def _families() -> dict:
    from xlstm_jax.registry import FAMILY_NAMES, family

    return {n: family(n) for n in FAMILY_NAMES}


# Old module -> (its new home(s), for the warning; old name -> "new.module" or
# "new.module:new_name", or a function computing the old value).
MOVED: dict[str, tuple[str, dict[str, str | Callable[[], object]]]] = {
    "xlstm_jax.config": (
        f"{_X}config, {_XL}config, {_TR}config and {_L}config",
        {
            **_names(_L + "config", "DTYPES", "ACT_FNS", "IMPLS", "ConfigError", "require"),
            "round_up_dim": lambda: round_up_dim,
            **_names(_L + "mlstm", "MLSTM_FORMS"),
            **_names(_L + "slstm", "SLSTM_FUNCTIONS", "SLSTM_BIAS_INITS", "sLSTMLayerConfig"),
            **_names(_L + "feedforward", "FeedForwardConfig"),
            **_names(
                _X + "config",
                "mLSTMLayerConfig",
                "mLSTMBlockConfig",
                "sLSTMBlockConfig",
                "xLSTMBlockStackConfig",
                "xLSTMLMModelConfig",
            ),
            **_names(_TR + "config", "TransformerConfig"),
            **_names(
                _XL + "config",
                "LARGE_TORCH_ONLY_FIELDS",
                "HF_GENERIC_FIELDS",
                "LARGE_HF_ALIASES",
                "xLSTMLargeConfig",
            ),
        },
    ),
    "xlstm_jax.components": (
        f"{_L}dense, {_L}norms, {_L}conv, {_L}feedforward and {_L}init",
        {
            **_names(_L + "init", "small_init", "wang_init"),
            **_names(_L + "dense", "Dense", "Embedding", "LinearHeadwiseExpand"),
            **_names(_L + "norms", "LayerNorm", "MultiHeadLayerNorm"),
            **_names(_L + "conv", "CausalConv1d"),
            **_names(_L + "feedforward", "FeedForwardConfig", "GatedFeedForward"),
        },
    ),
    "xlstm_jax.model": (
        f"{_X}model",
        _names(_X + "model", "run_blocks", "xLSTMBlockStack", "xLSTMLMModel"),
    ),
    "xlstm_jax.mlstm": (
        f"{_X}blocks and {_L}mlstm",
        {
            **_names(
                _L + "mlstm", "RESET_FGATE_PREACT", "reset_forget_gate", "cell_form", "mlstm_cell"
            ),
            **_names(_X + "blocks", "mLSTMLayer", "mLSTMBlock"),
        },
    ),
    "xlstm_jax.slstm": (
        f"{_L}slstm and {_X}blocks",
        {"sLSTMLayer": _L + "slstm", "sLSTMBlock": _X + "blocks"},
    ),
    "xlstm_jax.state": (
        f"{_L}state",
        _names(_L + "state", "BlockState", "ConvState", "MLSTMState", "SLSTMState", "StackState"),
    ),
    "xlstm_jax.sharding": (
        f"{_L}sharding",
        _names(
            _L + "sharding",
            "MESH_AXES",
            "DEFAULT_RULES",
            "Axes",
            "Rules",
            "FSDP_MIN_SIZE",
            "AXES_KEY",
            "ShardingError",
            "param",
            "logical_axes",
            "make_mesh",
            "activate",
            "logical_to_spec",
            "param_shardings",
            "constrain",
            "shard_op",
        ),
    ),
    "xlstm_jax.large": (
        f"{_XL}model",
        {
            **_names(
                _XL + "model",
                "soft_cap",
                "xLSTMLargeLayer",
                "xLSTMLargeBlock",
                "xLSTMLargeBlockStack",
                "xLSTMLarge",
            ),
            **_names(_L + "norms", "RMSNorm", "HeadwiseLayerNorm"),
        },
    ),
    "xlstm_jax.transformer": (
        f"{_TR}model",
        {
            **_names(_TR + "model", "apply_rotary", "TransformerLM"),
            "TransformerConfig": _TR + "config",
        },
    ),
    "xlstm_jax.tirex": (
        f"{_T}model, {_T}forecast, {_T}config and {_T}convert",
        {
            **_names(_T + "config", "ForecastError", "TiRexConfig"),
            **_names(_T + "model", "ResidualBlock", "TiRexBlock", "TiRex"),
            **_names(
                _T + "forecast",
                "ScaleState",
                "instance_scale",
                "Forecast",
                "context_windows",
                "forecast",
                "quantile_loss",
            ),
            "load_forecaster": _T + "convert",
        },
    ),
    "xlstm_jax._families": (
        "xlstm_jax.registry (family(name)) and xlstm_jax.models.<family>.family",
        {
            "XLSTM": _X + "family:FAMILY",
            "LARGE": _XL + "family:FAMILY",
            "TRANSFORMER": _TR + "family:FAMILY",
            "TIREX": _T + "family:FAMILY",
            "FAMILIES": _families,
        },
    ),
    # Conversion and checkpoints (their new homes are written by the formats work).
    "xlstm_jax.convert_large": (
        f"{_XL}convert",
        {
            "from_torch_large": _XL + "convert:from_torch",
            "config_from_torch_large": _XL + "convert:config_from_torch",
            "from_state_dict_large": _XL + "convert:from_state_dict",
            "iter_state_dict_large": _XL + "convert:iter_state_dict",
            "to_state_dict_large": _XL + "convert:to_state_dict",
            **_names(_XL + "convert", "detect_format", "FORMATS", "WEIGHT_MODES"),
        },
    ),
    "xlstm_jax.convert_tirex": (
        f"{_T}convert",
        {
            "from_torch_tirex": _T + "convert:from_torch",
            "config_from_hparams": _T + "convert",
            "from_state_dict_tirex": _T + "convert:from_state_dict",
            "to_state_dict_tirex": _T + "convert:to_state_dict",
            "load_tirex_checkpoint": _T + "convert:load_checkpoint",
            "read_torch_checkpoint": _F + "torch_pickle",
        },
    ),
    "xlstm_jax.pretrained": (
        f"{_XL}checkpoint and {_F}safetensors",
        {
            **_names(_XL + "checkpoint", "load_pretrained", "save_pretrained", "PretrainedError"),
            **_names(_F + "safetensors", "SafetensorsFile", "SafetensorsWriter"),
        },
    ),
}


# Files whose frames sit between an import statement and ``exec_module``.
_MACHINERY = frozenset(
    {__file__, importlib.__file__, __file__.replace("_legacy.py", "__init__.py")}
)


def resolve(target: str | Callable[[], object], name: str) -> object:
    """The object an old name stands for: ``"module"`` (same name), ``"module:new_name"``,
    or a function's value."""
    if callable(target):
        return target()
    module, _, new_name = target.partition(":")
    return getattr(importlib.import_module(module), new_name or name)


class _OldModule(types.ModuleType):
    """An old module path: each of its names is looked up in its new home when read."""

    def __getattr__(self, name: str):
        table = MOVED[self.__name__][1]
        if name not in table:
            raise AttributeError(
                f"module {self.__name__!r} (moved to {MOVED[self.__name__][0]}) has no "
                f"attribute {name!r}"
            )
        return resolve(table[name], name)

    def __dir__(self):
        return sorted(set(MOVED[self.__name__][1]) | set(super().__dir__()))


class LegacyFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old module paths of ``MOVED`` and makes their forwarding modules."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        return _OldModule(spec.name)

    def exec_module(self, module):
        new, table = MOVED[module.__name__]
        module.__all__ = sorted(table)
        module.__doc__ = f"Deprecated path: moved to {new}."
        # Point the warning at the import statement: count the frames up to it that
        # ``warnings`` counts (it skips the frozen import machinery itself).
        frame, level = sys._getframe(1), 1
        while frame is not None:
            name = frame.f_code.co_filename
            if not ("importlib" in name and "_bootstrap" in name):
                level += 1
                if name not in _MACHINERY:
                    break
            frame = frame.f_back
        warnings.warn(
            f"{module.__name__} is now {new}; import from there (the old path goes in the "
            "next release).",
            DeprecationWarning,
            stacklevel=level,
        )


def install() -> None:
    """Appends one ``LegacyFinder`` to ``sys.meta_path`` (once)."""
    if not any(isinstance(f, LegacyFinder) for f in sys.meta_path):
        sys.meta_path.append(LegacyFinder())

"""``xlstm_jax.formats``, the model-free half of conversion: the name-map engine on its own
(fused rows both ways, the errors it names), the tensor dtype policies, the one error
hierarchy and the rule that nothing in it imports a model."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from xlstm_jax.formats import namemap
from xlstm_jax.formats.errors import (
    CheckpointError,
    ConversionError,
    FormatError,
    PretrainedError,
)
from xlstm_jax.formats.namemap import TRANSPOSE, Rule
from xlstm_jax.formats.tensors import to_numpy

FORMATS = Path(__file__).resolve().parents[1] / "xlstm_jax" / "formats"

# q (4 outputs) and k (2 outputs) of 3 inputs, stored as one fused torch weight (6, 3);
# ours are (in, out) = (3, 4) and (3, 2).
RULES = [
    Rule("q.kernel", "qk.weight", TRANSPOSE, rows=(0, 4)),
    Rule("k.kernel", "qk.weight", TRANSPOSE, rows=(4, 6)),
    Rule("norm.weight", "norm.weight"),
]
SHAPES = {"q.kernel": (3, 4), "k.kernel": (3, 2), "norm.weight": (3,)}


def _load(sd, **kw):
    kw = dict(to_numpy=np.asarray, what="the test state dict", hint="check the test.") | kw
    return dict(namemap.load(RULES, sd, SHAPES, **kw))


def test_fused_rows_load_and_save_back_exactly():
    rng = np.random.default_rng(0)
    sd = {"qk.weight": rng.normal(size=(6, 3)), "norm.weight": rng.normal(size=3)}
    ours = _load(sd)
    np.testing.assert_array_equal(ours["q.kernel"], sd["qk.weight"][:4].T)
    np.testing.assert_array_equal(ours["k.kernel"], sd["qk.weight"][4:].T)
    back = dict(namemap.save(RULES, ours.__getitem__))
    assert list(back) == ["qk.weight", "norm.weight"]
    for name, value in sd.items():
        np.testing.assert_array_equal(back[name], value)
    namemap.check_covers(RULES, SHAPES)
    with pytest.raises(ConversionError, match=r"missing \['v.kernel'\]"):
        namemap.check_covers(RULES, [*SHAPES, "v.kernel"])


def test_load_names_missing_unexpected_and_misshaped_tensors():
    sd = {"qk.weight": np.zeros((6, 3)), "norm.weight": np.zeros(3)}
    with pytest.raises(ConversionError, match=r"lacks 1 parameter.*'norm.weight'.*check the"):
        _load({"qk.weight": sd["qk.weight"]})
    with pytest.raises(ConversionError, match=r"has 1 tensor\(s\).*'extra'"):
        _load(sd | {"extra": np.zeros(1)})
    assert set(_load(sd | {"extra": np.zeros(1)}, extra="ignore")) == set(SHAPES)
    assert set(_load(sd | {"extra": np.zeros(1)}, optional=["extra"])) == set(SHAPES)
    with pytest.raises(ConversionError, match="qk.weight: 7 rows, expected 6"):
        _load(sd | {"qk.weight": np.zeros((7, 3))})
    with pytest.raises(ConversionError, match=r"norm.weight: converted shape \(4,\)"):
        _load(sd | {"norm.weight": np.zeros(4)})

    class MineError(ConversionError):
        pass

    with pytest.raises(MineError):
        _load({}, error=MineError)
    reshape = namemap.reshape((2, 6), (2, 2, 3))
    np.testing.assert_array_equal(reshape.load(np.arange(12).reshape(2, 6)).ravel(), np.arange(12))
    with pytest.raises(ConversionError, match=r"shape \(3, 4\), but the config needs \(2, 6\)"):
        reshape.load(np.zeros((3, 4)))


def test_to_numpy_keeps_or_widens_half_floats_as_asked():
    torch = pytest.importorskip("torch")
    x = torch.tensor([1.0, 1 / 3, -2.5e-3], dtype=torch.float32)
    for half in (torch.bfloat16, torch.float16):
        kept = to_numpy(x.to(half), bf16="keep")
        widened = to_numpy(x.to(half), bf16="widen")
        assert widened.dtype == np.float32
        np.testing.assert_array_equal(kept.astype(np.float32), widened)
        np.testing.assert_array_equal(widened, x.to(half).float().numpy())
    assert to_numpy(x.bfloat16(), bf16="keep").dtype == ml_dtypes.bfloat16
    assert to_numpy(x.half(), bf16="keep").dtype == np.float16
    assert to_numpy(x.double(), bf16="widen").dtype == np.float64
    assert to_numpy(x.double(), bf16="widen", dtype=np.float32).dtype == np.float32
    arr = np.ones(2, ml_dtypes.bfloat16)
    assert to_numpy(arr, bf16="widen").dtype == ml_dtypes.bfloat16  # arrays keep theirs
    with pytest.raises(ValueError, match="bf16 must be one of"):
        to_numpy(arr, bf16="round")


def test_one_error_hierarchy_that_callers_old_catches_still_catch():
    from xlstm_jax.layers.config import ConfigError
    from xlstm_jax.models.tirex.config import ForecastError
    from xlstm_jax.models.tirex.convert import TiRexCheckpointError, TiRexConversionError
    from xlstm_jax.models.xlstm_large.convert import HFFormatError

    assert issubclass(FormatError, ValueError)
    assert issubclass(PretrainedError, CheckpointError)
    assert issubclass(CheckpointError, FormatError) and issubclass(ConversionError, FormatError)
    assert issubclass(TiRexCheckpointError, CheckpointError)
    assert issubclass(TiRexCheckpointError, ForecastError)
    assert issubclass(TiRexConversionError, ConversionError)
    assert issubclass(TiRexConversionError, ForecastError)
    assert issubclass(HFFormatError, ConversionError) and issubclass(HFFormatError, ConfigError)


def test_formats_import_no_model_code():
    """Only the standard library, NumPy, ml_dtypes and the package itself (and torch, inside
    a function, for a torch tensor a caller passed in)."""
    allowed = set(sys.stdlib_module_names) | {"numpy", "ml_dtypes", "torch"}
    for path in sorted(FORMATS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module]
            else:
                continue
            for name in names:
                ok = name.split(".")[0] in allowed or name.startswith("xlstm_jax.formats")
                assert ok, f"{path.name} imports {name}"

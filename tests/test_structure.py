"""The house's rules, read from the source (no imports run): which folder may import which,
no import cycle, file sizes, and no trainer code testing model config classes.

``docs/architecture.md`` explains the rules; this file enforces them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pallas_kernels", "xlstm_jax", "train")
MAX_LINES = {"pallas_kernels": 700, "xlstm_jax": 500, "train": 500}
FAMILIES = ("xlstm", "xlstm_large", "tirex", "tirex2", "transformer")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


SOURCES = _sources()


def _resolve(name: str) -> str | None:
    """The module of ours that importing ``name`` loads (``a.b.c`` may name an attribute of
    ``a.b``), or None for a third-party name."""
    while name:
        if name in SOURCES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> set[str]:
    """The modules of ours that ``module`` imports, inside functions too."""
    tree = ast.parse(SOURCES[module].read_text(encoding="utf-8"))
    package = module if SOURCES[module].name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    for child in ast.walk(tree):
        if isinstance(child, ast.Import):
            found.update(filter(None, (_resolve(a.name) for a in child.names)))
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                up = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                base = ".".join(up + ([base] if base else []))
            for alias in child.names:
                target = _resolve(f"{base}.{alias.name}") or _resolve(base)
                if target:
                    found.add(target)
    found.discard(module)
    return found


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _violations(rule) -> list[str]:
    out = []
    for module in SOURCES:
        for target in sorted(_imports(module)):
            why = rule(module, target)
            if why:
                out.append(f"{module} imports {target}: {why}")
    return out


def test_layers_point_one_way():
    def rule(src, dst):
        if _under(src, "pallas_kernels") and not _under(dst, "pallas_kernels"):
            return "the kernels import nothing of the library or the trainer"
        if _under(src, "xlstm_jax") and _under(dst, "train"):
            return "the library never imports the trainer"
        return None

    assert _violations(rule) == []


def test_library_folders_point_one_way():
    """formats/ and layers/ import no model family; a family imports no other family; a
    family's model code does not import its own conversion code."""

    def family(module):
        parts = module.split(".")
        return parts[2] if len(parts) > 2 and parts[1] == "models" else None

    def rule(src, dst):
        if _under(src, "xlstm_jax.formats") and (
            _under(dst, "xlstm_jax.models") or _under(dst, "xlstm_jax.layers")
        ):
            return "formats/ reads and writes tensors and knows no model"
        if _under(src, "xlstm_jax.layers") and (
            _under(dst, "xlstm_jax.models") or _under(dst, "xlstm_jax.formats")
        ):
            return "layers/ are shared by the families and know none of them"
        a, b = family(src), family(dst)
        if a and b and a != b:
            return "a family uses layers/, never another family's code"
        src_kind, dst_kind = src.rsplit(".", 1)[-1], dst.rsplit(".", 1)[-1]
        model_code = src_kind in ("config", "model", "blocks", "forecast")
        if a and a == b and model_code and dst_kind in ("convert", "checkpoint"):
            return "model code does not import conversion code (it would be a cycle)"
        return None

    assert _violations(rule) == []


def test_every_family_has_a_home():
    for name in FAMILIES:
        for part in ("config", "family"):
            assert f"xlstm_jax.models.{name}.{part}" in SOURCES, (name, part)


def test_no_import_cycle():
    """Counting imports inside functions too: a lazy import hides a cycle, it does not
    remove it (the registry and the public API name their modules as strings instead)."""
    graph = {m: _imports(m) for m in SOURCES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def walk(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(" -> ".join(path[path.index(n) :] + [n]))
            elif n not in state:
                walk(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m, [m])
    assert cycles == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_file_is_too_long(package):
    limit = MAX_LINES[package]
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / package).rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > limit
    }
    assert long == {}, f"over {limit} lines"


def test_the_trainer_asks_the_registry_instead_of_testing_config_classes():
    config_classes = {"xLSTMLMModelConfig", "xLSTMLargeConfig", "TransformerConfig", "TiRexConfig"}
    found = []
    for module, path in SOURCES.items():
        if not _under(module, "train"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("isinstance", "type"):
                names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                names |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
                if names & config_classes:
                    found.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
            text = ast.unparse(node) if isinstance(node, ast.Compare) else ""
            if "__name__" in text and any(c in text for c in config_classes):
                found.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


@pytest.mark.one_jax
def test_the_gpu_check_needs_no_training_only_package():
    """``benchmarks/gpu_check.py`` runs on the GPU machine, which has JAX, Flax and Optax but
    not the trainer's data and logging packages: what its model section imports must not
    pull them in (a package ``__init__`` importing its whole folder would)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for m in ('grain', 'tokenizers', 'tensorboardX', 'matplotlib', 'pyarrow', 'tqdm'):\n"
        "    sys.modules[m] = None  # importing any of them now fails\n"
        "from configs import xlstm_125m, xlstm_tiny\n"
        "from train.data.batch import all_scored\n"
        "from train.loop.step import make_train_step\n"
        "from xlstm_jax import xLSTMLMModel\n"
        "xlstm_tiny.get_config(); xlstm_125m.get_config()\n"
    )
    env = {"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin", "HOME": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]

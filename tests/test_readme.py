"""The README's Python blocks run as written: the ones without the PyTorch reference in
order in one interpreter (later blocks use earlier names), the conversion block where
the reference is installed (always in CI)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import require_reference

ROOT = Path(__file__).resolve().parents[1]


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_readme_blocks_run_as_written(tmp_path):
    blocks = [b for b in _blocks() if "import torch" not in b]
    assert len(blocks) >= 2  # the model and generation examples
    proc = _run("\n\n".join(blocks), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.reference
def test_readme_conversion_block_runs_as_written(tmp_path):
    blocks = [b for b in _blocks() if "import torch" in b]
    assert blocks  # the conversion example
    require_reference()
    for block in blocks:
        proc = _run(block, tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]

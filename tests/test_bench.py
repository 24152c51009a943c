"""The benchmark runs on a tiny configuration and writes every field (speed goals live in its
output, never in tests)."""

import importlib.util
import json

from helpers import ROOT, run_python


def test_quick_benchmark_writes_every_row_and_field(tmp_path, sample, tfds_dir):
    result = run_python(ROOT / "benchmarks" / "bench.py", "--quick",
                        f"--json={tmp_path / 'bench.json'}", f"--data_dir={tfds_dir}",
                        timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "bench.json").read_text())
    have_torch = importlib.util.find_spec("torch") is not None
    expected = {("static", "train"), ("dynamic", "train"), ("pipeline", "train"),
                ("dynamic plain", "serve"), ("dynamic compiled", "serve")}
    if have_torch:
        expected |= {("pytorch", "train"), ("pytorch", "serve")}
    else:
        assert "torch is not installed" in result.stderr
    if importlib.util.find_spec("jax") is not None:
        expected.add(("jax dynamic", "train"))
    else:
        assert "JAX is not installed" in result.stderr
    assert {(r["contender"], r["task"]) for r in rows} == expected
    for row in rows:
        assert {"contender", "units", "timesteps", "features", "task", "samples_per_s"} <= set(
            row)
        assert (row["units"], row["timesteps"], row["features"]) == (32, 28, 28)
        assert row["samples_per_s"] > 0
        if row["task"] == "serve":
            assert 0 < row["p50_ms"] <= row["p99_ms"]
    served = {r["contender"]: r for r in rows if r["task"] == "serve"}
    # The quick sweep's sizes 1, 2, 3, 5, 100 and 1000 reach six buckets: six programs.
    assert served["dynamic compiled"]["programs"] == 6
    assert served["dynamic plain"]["programs"] == 0
    assert "| 32, 28x28 | dynamic compiled |" in result.stdout

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
                ("keras", "infer"), ("savedmodel", "infer")}
    if have_torch:
        expected |= {("pytorch", "train"), ("pytorch", "infer")}
    else:
        assert "torch is not installed" in result.stderr
    assert {(r["contender"], r["task"]) for r in rows} == expected
    for row in rows:
        assert {"contender", "units", "timesteps", "features", "task", "samples_per_s"} <= set(
            row)
        assert (row["units"], row["timesteps"], row["features"]) == (32, 28, 28)
        assert row["samples_per_s"] > 0
    assert "| 32, 28x28 | train |" in result.stdout


def test_levers_measure_each_lever_in_its_own_process(tmp_path, sample, tfds_dir):
    levers = ["defaults (dynamic)", "intra_op threads=1"]
    result = run_python(ROOT / "benchmarks" / "levers.py", "--units=8", "--rounds=1",
                        "--steps=4", f"--levers={','.join(levers)}", f"--data_dir={tfds_dir}",
                        f"--json={tmp_path / 'levers.json'}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rates = json.loads((tmp_path / "levers.json").read_text())["rates"]
    assert list(rates) == levers and all(len(r) == 1 and r[0] > 0 for r in rates.values())
    assert "| defaults (dynamic) |" in result.stdout and "| 1.00x |" in result.stdout


def test_levers_reject_an_unknown_lever_by_name():
    result = run_python(ROOT / "benchmarks" / "levers.py", "--levers=warp drive", timeout=60)
    assert result.returncode == 2 and "unknown lever(s) ['warp drive']" in result.stderr

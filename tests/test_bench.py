"""The benchmark runs on a tiny configuration and writes every field (speed goals live in its
output, never in tests)."""

import importlib.util
import json
import math

import pytest

from helpers import ROOT, run_python
from mnist_rnn.model import lstm as model


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


def _time_to_accuracy():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import time_to_accuracy

    return time_to_accuracy


@pytest.mark.parametrize("flagfile", ["flags/mnist99.flags"])
def test_the_pytorch_contender_runs_the_flagfiles_own_recipe(flagfile, monkeypatch):
    race = _time_to_accuracy()
    ran = []
    monkeypatch.setattr(race, "torch_lstm", lambda mnist_dir, recipe, seed: ran.append(recipe))
    race.run_child("pytorch_ours", "mnist", str(ROOT / flagfile), seed=3)
    recipe = ran[0]
    for line in (ROOT / flagfile).read_text().splitlines():  # Every flag the file sets.
        if line.startswith("--") and "=" in line:
            name, value = line[2:].split("=", 1)
            if hasattr(recipe, name) and name != "model_dir":
                assert str(getattr(recipe, name)) == value, name
    # Its learning rate, step by step, is the one Keras follows.
    steps_per_epoch = math.ceil(60_000 / recipe.batch_size)
    rate = model.schedule_for(recipe, steps_per_epoch)
    factor = race.torch_schedule(recipe, steps_per_epoch)
    for step in (0, 1, steps_per_epoch, recipe.last_step(steps_per_epoch) // 2,
                 recipe.last_step(steps_per_epoch), recipe.last_step(steps_per_epoch) + 5):
        assert recipe.learning_rate * factor(step) == pytest.approx(
            model.learning_rate_at(rate, step), rel=1e-5, abs=1e-9)


def test_the_pytorch_contenders_model_has_ours_parameters():
    pytest.importorskip("torch", reason="needs torch: pip install '.[bench]'")
    race = _time_to_accuracy()
    from common import torch_model

    for recipe in (race.recipe_of(str(ROOT / "flags/mnist99.flags")), race.FAST_RECIPE):
        ours = model.build_model(recipe.rnn, recipe.units, recipe.timesteps,
                                 784 // recipe.timesteps).count_params()
        theirs = torch_model(recipe.units, 784 // recipe.timesteps)
        # PyTorch's LSTM has two bias vectors where Keras has one.
        assert sum(p.numel() for p in theirs.parameters()) == ours + 4 * recipe.units

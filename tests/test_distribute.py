"""tf.distribute: MirroredStrategy over two logical CPUs, two workers on loopback (and two JAX
processes, through keras.distribution), and the refusals that name what is missing."""

import json
import os
import pathlib
import socket
import subprocess

import pytest

from helpers import needs_jax, needs_keras2, run_python, start_python
from mnist_rnn import compat, errors
from mnist_rnn.compat import keras
from mnist_rnn.training import distribute

# Each test here is also run under Keras 2, but the two workers': they always run Keras 2.

TESTS = pathlib.Path(__file__).resolve().parent

MIRRORED = """
import io, json, sys
import tensorflow as tf
# Two logical CPU devices must be set up before TensorFlow starts.
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[3])
from helpers import tiny_config
from mnist_rnn.train import train_and_evaluate

results = {}
for strategy in ("mirrored", "one_device"):
    out = io.StringIO()
    config = tiny_config(sys.argv[1] + "/" + strategy, sys.argv[2], max_steps=20,
                         eval_every_steps=10, export=False, distribution_strategy=strategy,
                         tensorboard=True)
    _, metrics = train_and_evaluate(config, out=out)
    results[strategy] = {"accuracy": metrics["final_test_accuracy"], "steps": metrics["steps"],
                         "log": out.getvalue()}
print(json.dumps(results))
"""


@pytest.mark.keras2
def test_mirrored_over_two_cpus_matches_one_device(tmp_path, sample, tfds_dir):
    result = run_python("-c", MIRRORED, tmp_path, tfds_dir, TESTS)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    mirrored, single = runs["mirrored"], runs["one_device"]
    assert ("MirroredStrategy with 2 replica(s): global batch 100, 50 per replica"
            in mirrored["log"])
    assert "OneDeviceStrategy with 1 replica(s)" in single["log"]
    assert mirrored["steps"] == single["steps"] == 20
    assert mirrored["accuracy"] == pytest.approx(single["accuracy"], abs=0.02)
    assert mirrored["accuracy"] > 0.3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_together(args: list[str], envs: list[dict], timeout: float = 180) -> list[str]:
    """Runs `python -m mnist_rnn.train args` once per environment, all at once; asserts each
    exits 0 and returns their outputs. One that fails leaves the others waiting for it: the
    timeout ends that."""
    processes = [start_python("-m", "mnist_rnn.train", *args, stderr=subprocess.STDOUT,
                              env={**os.environ, **env}) for env in envs]
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    for index, process in enumerate(processes):
        assert process.returncode == 0, f"process {index}:\n{outputs[index][-3000:]}"
    return outputs


@needs_keras2
def test_two_workers_on_loopback_train_and_only_the_chief_writes(tmp_path, sample, tfds_dir):
    """MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1, under Keras 2
    (Keras 3's fit cannot run it yet)."""
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    model_dir = tmp_path / "run"
    outputs = train_together(
        ["--distribution_strategy=multi_worker", "--dataset=mnist_sample",
         f"--data_dir={tfds_dir}", f"--model_dir={model_dir}", "--units=8", "--max_steps=4",
         "--eval_every_steps=2", "--noexport"],
        [{"TF_USE_LEGACY_KERAS": "1",
          "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                "index": index}})}
         for index in range(2)], timeout=300)
    for output in outputs:
        assert "MultiWorkerMirroredStrategy with 2 replica(s)" in output
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["steps"] == 4
    assert sorted(os.listdir(model_dir)) == [
        ".lock", "accuracy_by_step.png", "backup", "confident_errors.png", "confusion_matrix.png",
        "evaluation.json", "logs", "metrics.json", "model.keras"]  # worker_1_temp is gone.
    check = run_python(
        "-c", "import sys; from mnist_rnn.compat import keras; "
        "print(keras.models.load_model(sys.argv[1]).count_params())",
        model_dir / "model.keras", timeout=120, env={**os.environ,
                                                     "TF_USE_LEGACY_KERAS": "1"})
    assert check.returncode == 0 and int(check.stdout.strip().splitlines()[-1]) > 0


@needs_jax
def test_two_jax_processes_on_loopback_train_as_one_and_only_the_chief_writes(tmp_path, sample,
                                                                              tfds_dir):
    """keras.distribution's data parallelism over two JAX processes on 127.0.0.1, each given
    half of every global batch: the same evaluations as one process given all of it."""
    args = ["--dataset=mnist_sample", f"--data_dir={tfds_dir}", "--units=8", "--max_steps=4",
            "--eval_every_steps=2", "--noexport"]
    address = f"127.0.0.1:{free_port()}"
    outputs = train_together(
        args + ["--distribution_strategy=multi_worker", f"--model_dir={tmp_path / 'run'}"],
        [{"KERAS_BACKEND": "jax", "KERAS_DISTRIBUTION_JOB_ADDRESSES": address,
          "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": str(index)}
         for index in range(2)])
    for output in outputs:
        assert "DataParallel over 2 JAX processes: global batch 100, 50 per process" in output
    assert sorted(os.listdir(tmp_path / "run")) == [
        ".lock", "accuracy_by_step.png", "backup", "confident_errors.png", "confusion_matrix.png",
        "evaluation.json", "logs", "metrics.json", "model.keras"]  # process_1_temp is gone.
    train_together(args + [f"--model_dir={tmp_path / 'one'}"], [{"KERAS_BACKEND": "jax"}])
    evaluations = [json.loads((tmp_path / run / "metrics.json").read_text())["evaluations"]
                   for run in ("run", "one")]
    assert [e["step"] for e in evaluations[0]] == [e["step"] for e in evaluations[1]] == [2, 4]
    for two, alone in zip(*evaluations):
        assert two["accuracy"] == alone["accuracy"]
        assert two["loss"] == pytest.approx(alone["loss"], abs=1e-5)


@pytest.mark.keras2
def test_multi_worker_where_fit_cannot_run_it_says_what_to_do(monkeypatch):
    """Keras 3's fit cannot run MultiWorkerMirroredStrategy: the strategy is refused before
    any worker starts. Keras 2's can (its two workers train in another test), so there the
    refusal is checked as it would read."""
    if compat.LEGACY:
        monkeypatch.setattr(compat, "MULTI_WORKER_FIT", False)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    with pytest.raises(errors.UserError, match="needs Keras 2 or JAX.*TF_USE_LEGACY_KERAS=1"):
        distribute.make_strategy("multi_worker")


@pytest.mark.keras2
def test_multi_worker_without_tf_config_is_refused(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setattr(compat, "MULTI_WORKER_FIT", True)
    with pytest.raises(errors.UserError, match="needs TF_CONFIG"):
        distribute.make_strategy("multi_worker")


@pytest.mark.keras2
@pytest.mark.parametrize("tf_config, chief", [
    (None, True),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "worker",
                                                                 "index": 0}}, False),
])
def test_only_the_chief_writes_to_model_dir(monkeypatch, tf_config, chief):
    import tensorflow as tf

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    # The chief decision only looks at the strategy's type and TF_CONFIG.
    strategy = object.__new__(tf.distribute.MultiWorkerMirroredStrategy) if tf_config else (
        tf.distribute.get_strategy())
    assert distribute.is_chief(strategy) == chief
    expected = "run" if chief else os.path.join("run", "worker_" + str(
        tf_config["task"]["index"]) + "_temp")
    assert distribute.write_dir("run", strategy) == expected


@pytest.mark.keras2
def test_keras_is_the_one_the_environment_asks_for():
    assert keras.__version__.startswith("2." if compat.LEGACY else "3.")

"""Static vs dynamic, measured: graph facts and the compare CLI."""

import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from helpers import EXPECTED_TFLITE_OPS, HAS_JAX, run_module, tiny_config
from mnist_rnn import errors, train
from mnist_rnn.config import TrainConfig
from mnist_rnn.data import sample, sequences
from mnist_rnn.model.lstm import build_model, compile_model
from mnist_rnn.study import comparison, graphs
from mnist_rnn.training import tensorboard


def facts(rnn, timesteps, **kwargs):
    model = build_model(rnn, 8, timesteps, 784 // timesteps, seed=0, **kwargs)
    return graphs.graph_facts(compile_model(model, 0.01))


def test_static_graph_grows_with_timesteps_and_holds_one_cell_per_step():
    small, large = facts("static", 7), facts("static", 28)
    assert (small["cell_copies"], large["cell_copies"]) == (7, 28)
    assert small["while_ops"] == large["while_ops"] == 0
    assert large["train_step_ops"] > 2.5 * small["train_step_ops"]


def test_dynamic_graph_is_one_loop_whatever_the_length():
    small, large = facts("dynamic", 7), facts("dynamic", 28)
    assert small == large
    assert small["while_ops"] == 1 and small["cell_copies"] == 2  # Loop body + shape probe.
    assert small["train_step_ops"] < facts("static", 28)["train_step_ops"]


def test_tensorboard_graph_is_written(tmp_path):
    model = compile_model(build_model("dynamic", 8, 28, 28), 0.01)
    tensorboard.write_graph(model, str(tmp_path))
    events = list(tmp_path.glob("events.out.tfevents.*"))
    assert len(events) == 1
    graph_events = [e for e in tf.compat.v1.train.summary_iterator(str(events[0]))
                    if e.graph_def]
    assert graph_events  # A serialized graph TensorBoard can draw.


def test_static_rejects_variable_length_saying_why():
    with pytest.raises(errors.UserError,
                       match="needs rnn=dynamic: the static model is unrolled"):
        build_model("static", 8, 28, 28, variable_length=True)
    with pytest.raises(errors.UserError, match="needs rnn=dynamic: the static model"):
        TrainConfig(rnn="static", variable_length=True)
    result = run_module("mnist_rnn.train", "--rnn=static", "--variable_length", timeout=120)
    assert result.returncode != 0
    assert "--variable_length needs --rnn=dynamic" in result.stderr


def test_variable_length_training_saves_and_serves(tmp_path, tfds_dir):
    config = tiny_config(tmp_path, tfds_dir, variable_length=True)
    model, metrics = train.train_and_evaluate(config, out=io.StringIO())
    assert metrics["final_test_accuracy"] > 0.4
    served = tf.saved_model.load(f"{config.model_dir}/saved_model")
    images = sample.load_arrays()[0][:8]
    probabilities = served.signatures["serving_default"](images=tf.constant(images))
    expected = tf.nn.softmax(model(sequences.to_sequences(images, 28))).numpy()
    np.testing.assert_allclose(probabilities["probabilities"].numpy(), expected, atol=1e-5)


def test_compare_cli_end_to_end(tmp_path, tfds_dir):
    # 7 steps of 112 pixels: the unrolled graphs compile four times sooner than at 28.
    # Without the variable-length row (its batches are tested above); with JAX's two.
    result = run_module("mnist_rnn.compare", "--timesteps=7", "--units=8", "--steps=2",
                        "--novariable_length",
                        "--dataset=mnist_sample", f"--data_dir={tfds_dir}",
                        f"--output_dir={tmp_path}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "compare.json").read_text())
    rows = report["rows"]
    # One length here: other lengths' graphs are tested above without the CLI's processes.
    assert [(r["backend"], r["rnn"], r["timesteps"], r["variable_length"]) for r in rows] == [
        ("tensorflow", "static", 7, False), ("tensorflow", "dynamic", 7, False)] + [
        ("jax", "static", 7, False), ("jax", "dynamic", 7, False)] * HAS_JAX
    for row in rows:
        assert row["status"] == "ok"
        for field in comparison.ROW_FIELDS:
            assert row.get(field) is not None, field
        assert row["time_to_first_step_s"] > 0 and row["samples_per_s"] > 0
    assert [r["accepts_other_length"] for r in rows[:2]] == [False, True]
    # The same lesson in both compilers' programs: 7 cells unrolled, or one in a loop.
    for static, dynamic in (rows[0:2], rows[2:4])[:1 + HAS_JAX]:
        assert (static["cell_copies"], static["while_ops"]) == (7, 0)
        assert dynamic["while_ops"] == 1 and dynamic["cell_copies"] <= 2
        assert static["train_step_ops"] > dynamic["train_step_ops"]
    markdown = (tmp_path / "compare.md").read_text()
    assert "| static | 7 |" in markdown
    assert ("| JAX dynamic | 7 |" in markdown) == HAS_JAX
    for row in rows[:2]:  # TFLite: the ops test_tflite checks, and each file's accuracy.
        assert row["tflite_ops"] == EXPECTED_TFLITE_OPS[row["rnn"]]
        assert row["tflite_test_accuracy"] == pytest.approx(row["test_accuracy"], abs=2e-3)
        assert row["tflite_ms"] > 0 and row["tflite_int8_kb"] <= row["tflite_kb"]
    assert "| static | 7 | yes | no | no | any |" in markdown
    assert "| dynamic | 7 | yes | yes | no | 1 |" in markdown
    with Image.open(tmp_path / "compare.png") as chart:
        assert chart.format == "PNG" and chart.size[0] >= 800
    for rnn in ("static", "dynamic"):
        assert list((tmp_path / "tensorboard" / rnn).glob("events.out.tfevents.*"))


def test_a_configuration_past_its_compile_timeout_is_reported_not_waited_for(tmp_path,
                                                                             tfds_dir):
    report = comparison.compare([28], str(tmp_path), units=8, steps=2, compile_timeout=0.0,
                                dataset="mnist_sample", data_dir=tfds_dir, variable_length=False,
                                log=lambda line: None)
    assert [r["status"] for r in report["rows"]] == ["compile_timeout", "compile_timeout"]
    assert "> 0.0" in (tmp_path / "compare.md").read_text()
    with Image.open(tmp_path / "compare.png") as chart:
        assert chart.format == "PNG"

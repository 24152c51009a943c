"""The model for edge runtimes: .tflite files with built-in ops only, checked against the
model, read by predict and evaluate, and one clear line for a bad file."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from helpers import EXPECTED_TFLITE_OPS as EXPECTED_OPS, run_module
from mnist_rnn import errors
from mnist_rnn.data import sample
from mnist_rnn.model.lstm import build_model
from mnist_rnn.model.predictor import KerasPredictor
from mnist_rnn.serving import formats, saved_model, tflite


@pytest.fixture(scope="module")
def test_digits():
    images, labels = sample.load_arrays()
    rows = sample.split_indices(labels, "test")
    return images[rows], labels[rows]


@pytest.mark.keras2  # The converter's routes differ by Keras version: also run under Keras 2.
def test_training_writes_both_files_matching_the_model(trained, test_digits):
    """float32 within 1e-4 of the Keras model; int8 the same class on >= 98 % of the
    sample's test digits; the ops are built-in, with a WHILE only for the loop."""
    config, model, metrics = trained
    images, _ = test_digits
    expected = KerasPredictor(model).probabilities(images)
    described = {info["file"]: info for info in metrics["tflite"]}
    assert list(described) == ["model.tflite", "model_int8.tflite"]
    for name, info in described.items():
        path = os.path.join(config.model_dir, name)
        assert os.path.getsize(path) == info["bytes"]
        assert info["ops"] == EXPECTED_OPS[config.rnn] and info["builtin_ops_only"]
        assert info["while_loop"] == (config.rnn == "dynamic") and not info["fused_lstm"]
        assert info["batch"] == ("any" if config.rnn == "static" else 1)
        got = formats.load(path).probabilities(images)
        assert got.shape == (1000, 10)
        if name == "model.tflite":
            np.testing.assert_allclose(got, expected, atol=1e-4)
        else:
            assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.98


@pytest.mark.keras2
def test_variable_length_converts_too(test_digits):
    model = build_model("dynamic", 8, 28, 28, seed=0, variable_length=True)
    images = test_digits[0][:20]
    float32, _ = tflite.conversions(model, images)
    assert float32.runner.batch == 1 and tflite.LOOP_OP in float32.runner.ops
    np.testing.assert_allclose(float32.runner.probabilities(images),
                               KerasPredictor(model).probabilities(images), atol=1e-4)


def test_evaluate_reads_a_tflite_as_the_model(trained, tfds_dir, tmp_path):
    config, _, metrics = trained
    result = run_module("mnist_rnn.evaluate", f"--model={config.model_dir}/model.tflite",
                        "--dataset=mnist_sample", f"--data_dir={tfds_dir}",
                        f"--output_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["accuracy"] == pytest.approx(metrics["final_test_accuracy"], abs=1.5e-3)
    assert report["reading"] is None and "while reading" not in result.stdout
    assert result.stderr.strip() == ""  # No interpreter or converter chatter.


def foreign_tflite() -> bytes:
    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def double(x):
        return 2 * x

    return tf.lite.TFLiteConverter.from_concrete_functions(
        [double.get_concrete_function()]).convert()


def test_corrupt_or_foreign_tflite_is_one_clear_line(trained, tmp_path):
    config, _, _ = trained
    good = open(os.path.join(config.model_dir, "model.tflite"), "rb").read()
    (tmp_path / "truncated.tflite").write_bytes(good[:len(good) // 3])
    (tmp_path / "foreign.tflite").write_bytes(foreign_tflite())
    (tmp_path / "text.tflite").write_text("not a model")
    for name, message in [
        ("truncated.tflite", "corrupt or not a TFLite model"),
        ("text.tflite", "corrupt or not a TFLite model"),
        ("foreign.tflite", "not a digit model of this project: it takes float32 [1, 4], not "
                           "uint8 [batch, 28, 28]; write one with python -m mnist_rnn.export"),
    ]:
        with pytest.raises(errors.ModelLoadError) as err:
            formats.load(str(tmp_path / name))
        assert message in str(err.value) and "\n" not in str(err.value), name


def test_export_command_writes_tflite_and_savedmodel_of_a_model(trained, tmp_path):
    config, model, _ = trained
    result = run_module("mnist_rnn.export", f"--model={config.model_dir}/model.keras",
                        "--tflite", "--saved_model", "--saved_model_xla=off",
                        f"--output_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.strip() == ""
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"{tmp_path}/saved_model: SavedModel, " + saved_model.describe_export(
        {"xla": False})
    assert lines[1].startswith(f"{tmp_path}/model.tflite: float32, ")
    assert lines[2].startswith(f"{tmp_path}/model_int8.tflite: dynamic-range int8 weights, ")
    assert lines[1].endswith("built-in ops only: " + ", ".join(EXPECTED_OPS[config.rnn]))
    loaded = tf.saved_model.load(str(tmp_path / "saved_model"))
    assert "serve_steps" in loaded.signatures

    for args, message in [
        ([f"--model={config.model_dir}/model.keras"], "error: nothing to export: add --tflite"),
        ([f"--model={config.model_dir}/saved_model", "--tflite"],
         "saved_model: not a .keras file; pass the model.keras"),
    ]:
        result = run_module("mnist_rnn.export", *args)
        assert result.returncode == 1 and message in result.stderr.strip().splitlines()[-1]

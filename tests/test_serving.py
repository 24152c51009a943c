"""Issue-level promises of a trained model in use: the SavedModel's signatures, the same
predictions everywhere, predict on image files, evaluate's report."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from helpers import (keras_probabilities, needs_jax, needs_keras2, run_module, run_python,
                     start_python)
from mnist_rnn import compat, errors
from mnist_rnn.compat import keras
from mnist_rnn.model.lstm import build_model
from mnist_rnn.model.predictor import KerasPredictor
from mnist_rnn.outputs import CONFUSION_PNG
from mnist_rnn.serving import answers, formats, saved_model

# Core tests (marked keras2) also run under Keras 2; the commands' subprocess tests run under
# Keras 3 only, as the in-process tests cover what differs between the two.
keras2 = pytest.mark.keras2
# Those marked jax also run on Keras 3's JAX backend: its exports and its files read elsewhere.
jax = pytest.mark.jax


@keras2
def test_export_signatures_and_dtypes(trained):
    config, _, _ = trained
    loaded = tf.saved_model.load(os.path.join(config.model_dir, "saved_model"))
    assert set(loaded.signatures) == {"serving_default", "serve_sequences", "serve_steps"}
    images_fn = loaded.signatures["serving_default"]
    spec = images_fn.structured_input_signature[1]["images"]
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 28, 28]
    outputs = images_fn.structured_outputs
    assert outputs["probabilities"].dtype == tf.float32
    assert outputs["probabilities"].shape.as_list() == [None, 10]
    assert outputs["class"].dtype == tf.int64 and outputs["class"].shape.as_list() == [None]
    sequences = loaded.signatures["serve_sequences"].structured_input_signature[1]["sequences"]
    expected_time = 28 if config.rnn == "static" else None
    assert sequences.dtype == tf.float32 and sequences.shape.as_list() == [None, expected_time, 28]
    steps_fn = loaded.signatures["serve_steps"]
    assert steps_fn.structured_input_signature[1]["images"] == spec
    steps = steps_fn.structured_outputs["probabilities"]
    assert steps.dtype == tf.float32 and steps.shape.as_list() == [None, 28, 10]


@keras2
@jax
def test_same_predictions_in_memory_reloaded_and_savedmodel_in_a_fresh_process(
        trained, test_digits, tmp_path):
    config, model, _ = trained
    images = test_digits[0][:64]
    in_memory = keras_probabilities(model, images)
    reloaded = keras_probabilities(
        keras.models.load_model(os.path.join(config.model_dir, "model.keras")), images)
    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        "serve = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
        "out = serve(images=tf.constant(np.load(sys.argv[2])))\n"
        "np.save(sys.argv[3], out['probabilities'].numpy())\n"
        "np.save(sys.argv[4], out['class'].numpy())\n"
        "steps = tf.saved_model.load(sys.argv[1]).signatures['serve_steps']\n"
        "np.save(sys.argv[5], steps(images=tf.constant(np.load(sys.argv[2])))['probabilities'])\n"
    )
    ran = run_python("-c", script, os.path.join(config.model_dir, "saved_model"),
                     tmp_path / "images.npy", tmp_path / "p.npy", tmp_path / "c.npy",
                     tmp_path / "s.npy", timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]
    served = np.load(tmp_path / "p.npy")
    np.testing.assert_allclose(reloaded, in_memory, atol=1e-5)
    np.testing.assert_allclose(served, in_memory, atol=1e-5)
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), in_memory.argmax(1))
    # The answers after each step: the last is the model's output, in every format.
    served_steps = np.load(tmp_path / "s.npy")
    assert served_steps.shape == (64, 28, 10)
    np.testing.assert_allclose(served_steps[:, -1], in_memory, atol=1e-5)
    for artifact in ("model.keras", "saved_model"):
        steps = formats.load(os.path.join(config.model_dir, artifact)).step_probabilities(images)
        np.testing.assert_allclose(steps, served_steps, atol=1e-5)


def export_both(model, tmp_path):
    """The signatures of `model`'s SavedModel exported plain and compiled by XLA."""
    loaded = {}
    for xla in ("off", "on"):
        info = saved_model.export_saved_model(model, str(tmp_path / xla), xla)
        assert info["xla"] == (xla == "on")
        loaded[xla] = tf.saved_model.load(str(tmp_path / xla)).signatures
    return loaded["off"], loaded["on"]


@keras2
@pytest.mark.parametrize("rnn", ["static", "dynamic"])
def test_compiled_signatures_equal_the_plain_graph_at_any_batch_size(rnn, tmp_path, test_digits):
    model = build_model(rnn, 8, 7, 112, seed=0)  # 7 steps: the unrolled graph compiles fast.
    plain, compiled = export_both(model, tmp_path)
    images = np.concatenate([test_digits[0], test_digits[0]])
    # Empty, between two buckets, and above the largest (run in chunks of it).
    for n in (0, 3, saved_model.BATCH_BUCKETS[-1] + 1):
        digits = tf.constant(images[:n])
        sequences = tf.reshape(tf.cast(digits, tf.float32) / 255, [n, 7, 112])
        for name, kwargs in (("serving_default", dict(images=digits)),
                             ("serve_steps", dict(images=digits)),
                             ("serve_sequences", dict(sequences=sequences))):
            want, got = plain[name](**kwargs), compiled[name](**kwargs)
            for key in want:
                assert got[key].shape == want[key].shape
                np.testing.assert_allclose(got[key], want[key], atol=1e-5, err_msg=f"{name} {n}")


@jax
@pytest.mark.parametrize("rnn, variable_length", [("static", False), ("dynamic", True)])
def test_every_signature_serves_what_the_model_answers(rnn, variable_length, tmp_path,
                                                       test_digits):
    """On either backend (on JAX, through jax2tf), at any batch size."""
    model = build_model(rnn, 8, 7, 112, seed=0, variable_length=variable_length)
    saved_model.export_saved_model(model, str(tmp_path / "saved_model"))
    served = formats.load(str(tmp_path / "saved_model"))
    expected = KerasPredictor(model)
    for n in (3, 1025):  # Within the largest bucket, and over it (in chunks).
        images = np.resize(test_digits[0], (n, 28, 28))
        sequences = images.reshape(n, 7, 112) / np.float32(255)
        np.testing.assert_allclose(served.probabilities(images), expected.probabilities(images),
                                   atol=1e-5)
        np.testing.assert_allclose(served.step_probabilities(images),
                                   expected.step_probabilities(images), atol=1e-5)
        np.testing.assert_allclose(served.log_probabilities(sequences),
                                   expected.log_probabilities(sequences), atol=1e-4)


def test_xla_is_used_where_it_pays_and_refused_where_it_cannot_run():
    assert saved_model.uses_xla(build_model("dynamic", 4, 784, 1))  # The loop, at any length.
    assert saved_model.uses_xla(build_model("static", 4, 28, 28))
    assert not saved_model.uses_xla(build_model("static", 4, 196, 4))  # Compiles for seconds.
    assert saved_model.uses_xla(build_model("static", 4, 196, 4), "on")
    assert not saved_model.uses_xla(build_model("dynamic", 4, 28, 28), "off")
    variable = build_model("dynamic", 4, 28, 28, variable_length=True)
    assert not saved_model.uses_xla(variable)  # Its length per batch depends on the data.
    with pytest.raises(errors.UserError, match="variable-length model cannot be compiled"):
        saved_model.uses_xla(variable, "on")


COUNT_PROGRAMS = """
import glob, sys, numpy as np, tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
for n in map(int, sys.argv[3].split(",")):
    assert serve(images=tf.zeros([n, 28, 28], tf.uint8))["probabilities"].shape == (n, 10)
print(len(glob.glob(sys.argv[2] + "/*.before_optimizations.txt")))
"""


def test_compiled_savedmodel_runs_on_plain_tensorflow_in_bounded_programs(tmp_path):
    """In a fresh process that imports TensorFlow only, and in saved_model_cli: XLA compiles
    one program per batch size bucket reached, whatever the sizes asked."""
    path = str(tmp_path / "saved_model")
    info = saved_model.export_saved_model(build_model("dynamic", 8, 28, 28, seed=0), path)
    assert info == {"xla": True, "backend": "tensorflow",
                    "batch_buckets": list(saved_model.BATCH_BUCKETS)}
    sizes = [1, 2, 3, 5, 7, 1000, 1025, 1500]  # Buckets 1, 2, 4, 8 and 1024: five programs.
    env = {**os.environ, "XLA_FLAGS": f"--xla_dump_to={tmp_path / 'xla'}"}
    counted = run_python("-c", COUNT_PROGRAMS, path, tmp_path / "xla",
                         ",".join(map(str, sizes)), env=env, timeout=180)
    assert counted.returncode == 0, counted.stderr[-2000:]
    assert int(counted.stdout.split()[-1]) == 5
    np.save(tmp_path / "digits.npy", np.zeros([3, 28, 28], np.uint8))
    ran = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "saved_model_cli"), "run", "--dir",
         path, "--tag_set", "serve", "--signature_def", "serve_steps", "--inputs",
         f"images={tmp_path / 'digits.npy'}"], capture_output=True, text=True, timeout=180)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "Result for output key probabilities" in ran.stdout


@keras2
@pytest.mark.parametrize("artifact", ["model.keras", "saved_model"])
def test_predict_files_gives_the_right_digits(trained, digit_files, artifact):
    config, _, _ = trained
    model = formats.load(os.path.join(config.model_dir, artifact))
    paths, labels = digit_files
    results = [r for chunk, _ in answers.predict_files(model, paths, top_k=3)
               for r in chunk]
    assert [r["class"] for r in results] == labels
    for r in results:
        assert len(r["top_k"]) == 3 and r["top_k"][0]["probability"] == r["probability"]
        assert r["probability"] >= r["top_k"][1]["probability"] >= r["top_k"][2]["probability"]


def test_predict_cli_reports_bad_files_and_still_predicts_the_rest(trained, digit_files,
                                                                   tmp_path):
    config, _, _ = trained
    paths, labels = digit_files
    (tmp_path / "notes.png").write_text("not an image")
    np.save(tmp_path / "batch.npy", np.zeros((2, 28, 28), np.uint8))
    bad = [str(tmp_path / "missing.png"), str(tmp_path / "notes.png"),
           str(tmp_path / "batch.npy")]
    result = run_module("mnist_rnn.predict", f"--model={config.model_dir}/model.keras", "--json",
                        "--per_step", paths[0], *bad, paths[1])
    assert result.returncode == 1
    output = json.loads(result.stdout)
    assert [r.get("class") for r in output] == [labels[0], None, None, None, labels[1]]
    for r in (output[0], output[-1]):  # Per step: the answer settles, and its chart is drawn.
        steps = np.array(r["step_probabilities"])
        assert r["timesteps"] == 28 and steps.shape == (28, 10)
        assert steps[-1].argmax() == r["class"] and steps[-1].max() == pytest.approx(
            r["probability"], abs=1e-5)
        assert (steps[r["settled_step"] - 1:].argmax(1) == r["class"]).all()
        assert r["settled_step"] == 1 or steps[r["settled_step"] - 2].argmax() != r["class"]
        assert r["chart"] == r["file"][:-len(".png")] + ".steps.png"
        with Image.open(r["chart"]) as chart:
            assert chart.format == "PNG" and chart.size[0] > 600
    assert not list(tmp_path.glob("notes.steps.png"))
    errors_seen = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors_seen == [
        f"error: {bad[0]}: no such file",
        f"error: {bad[1]}: not a readable image (UnidentifiedImageError); use PNG, JPEG, BMP, "
        "GIF or .npy",
        f"error: {bad[2]}: array of shape (2, 28, 28); expected one grayscale image "
        "[height, width] (or [height, width, channels])",
    ]
    assert "Traceback" not in result.stderr


def test_predict_cli_text_output(trained, digit_files, tmp_path):
    config, _, _ = trained
    paths, labels = digit_files
    result = run_module("mnist_rnn.predict", f"--model={config.model_dir}/saved_model",
                        "--top_k=2", "--per_step", f"--output_dir={tmp_path}/charts", *paths)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == paths
    assert [int(line.split(": ")[1][0]) for line in lines] == labels
    assert all(line.count("(") == 2 and "; settled at step " in line for line in lines)
    charts = sorted(p.name for p in (tmp_path / "charts").iterdir())
    assert charts == ["big_rgb.steps.png", "inverted.steps.png", "plain.steps.png"]


@pytest.fixture
def broken_models(trained, tmp_path):
    config, _, _ = trained
    good = (pathlib.Path(config.model_dir) / "model.keras").read_bytes()
    (tmp_path / "truncated.keras").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.keras").write_bytes(os.urandom(4096))
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "bad_saved_model").mkdir()
    (tmp_path / "bad_saved_model" / "saved_model.pb").write_bytes(b"\x00corrupt")
    return {name: str(tmp_path / name) for name in
            ("truncated.keras", "garbage.keras", "empty_dir", "bad_saved_model", "missing.keras")}


@keras2
def test_missing_or_corrupt_models_are_one_clear_error(broken_models):
    for name, path in broken_models.items():
        with pytest.raises(errors.ModelLoadError) as err:
            formats.load(path)
        message = str(err.value)
        assert path in message and "\n" not in message, name


def test_predict_cli_corrupt_model_is_one_line(broken_models, digit_files):
    result = run_module("mnist_rnn.predict", f"--model={broken_models['truncated.keras']}",
                        digit_files[0][0])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"error: cannot load model {broken_models['truncated.keras']}: corrupt or not a model")


def test_evaluate_cli_agrees_with_model_evaluate_and_writes_its_report(
        trained, sample, tfds_dir, tmp_path):
    config, model, _ = trained
    result = run_module("mnist_rnn.evaluate", f"--model={config.model_dir}/saved_model",
                        "--dataset=mnist_sample", f"--data_dir={tfds_dir}",
                        f"--output_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "confusion matrix" in result.stdout and "precision" in result.stdout
    report = json.loads((tmp_path / "evaluation.json").read_text())
    loss, accuracy = model.evaluate(sample.test, verbose=0)
    assert report["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert report["loss"] == pytest.approx(loss, rel=1e-3)
    confusion = np.array(report["confusion_matrix"])
    assert confusion.sum() == 1000 and list(confusion.sum(1)) == [100] * 10
    assert np.trace(confusion) / 1000 == pytest.approx(report["accuracy"])
    recalls = [c["recall"] for c in report["per_class"]]
    np.testing.assert_allclose(recalls, np.diag(confusion) / 100)
    probabilities = [e["probability"] for e in report["confident_errors"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(e["true"] != e["predicted"] for e in report["confident_errors"])
    for png in ("confusion_matrix.png", "confident_errors.png", "accuracy_by_step.png"):
        with Image.open(tmp_path / png) as image:
            assert image.format == "PNG" and image.size[0] > 300
    check_reading(report)
    assert "while reading 28 steps: test accuracy 50% after " in result.stdout


def check_reading(report):
    """The accuracy after each step read ends at the model's test accuracy, from a pass of
    its own; settle steps lie within the steps."""
    reading = report["reading"]
    accuracy = reading["accuracy_after_steps"]
    assert reading["timesteps"] == len(accuracy) == 28
    assert accuracy[-1] == pytest.approx(report["accuracy"], abs=1.5e-3)  # A tie may flip one.
    assert accuracy[0] < 0.5 < accuracy[-1]
    reached = reading["first_step_reaching"]["50%"]
    assert accuracy[reached - 1] >= 0.5 > max(accuracy[:reached - 1], default=0)
    medians = reading["median_settled_step_by_digit"]
    assert len(medians) == 10 and all(1 <= m <= 28 for m in medians)


@keras2
def test_training_writes_the_same_report(trained):
    config, _, metrics = trained
    report = json.loads((pathlib.Path(config.model_dir) / "evaluation.json").read_text())
    assert report["accuracy"] == pytest.approx(metrics["final_test_accuracy"], abs=1e-6)
    assert (pathlib.Path(config.model_dir) / CONFUSION_PNG).is_file()
    assert (pathlib.Path(config.model_dir) / "accuracy_by_step.png").is_file()
    check_reading(report)


OTHER_KERAS_MODEL = """
import sys
from mnist_rnn.serving import saved_model
from mnist_rnn.model.lstm import build_model
model = build_model("dynamic", 4, 28, 28, seed=0)
model.save(sys.argv[1] + "/model.keras")
saved_model.export_saved_model(model, sys.argv[1] + "/saved_model")
"""


@keras2
@needs_keras2
def test_a_model_from_the_other_keras_says_which_wrote_it_and_what_reads_it(tmp_path,
                                                                            test_digits):
    from mnist_rnn import compat

    other = {**os.environ, "TF_USE_LEGACY_KERAS": "" if compat.LEGACY else "1"}
    written = run_python("-c", OTHER_KERAS_MODEL, tmp_path, env=other, timeout=180)
    assert written.returncode == 0, written.stderr[-2000:]
    with pytest.raises(errors.ModelLoadError) as err:
        formats.load(str(tmp_path / "model.keras"))
    message = str(err.value)
    assert f"written by Keras {'3' if compat.LEGACY else '2'}." in message and "\n" not in message
    assert ("unset TF_USE_LEGACY_KERAS" if compat.LEGACY else "TF_USE_LEGACY_KERAS=1") in message
    assert "saved_model/" in message
    # ...and the SavedModel beside it does load, whichever Keras wrote it.
    probabilities = formats.load(str(tmp_path / "saved_model")).probabilities(test_digits[0][:4])
    assert probabilities.shape == (4, 10)


@jax
@needs_jax
def test_a_model_keras_reads_the_same_on_the_other_backend(tmp_path, test_digits):
    """A .keras written on this backend and read on the other (TensorFlow or JAX), and the
    reverse, answer the same. The variable-length model's first layer works differently on
    each (stripping steps on TensorFlow, padding them in place on JAX)."""
    images = test_digits[0][:32]
    np.save(tmp_path / "images.npy", images)
    mine = build_model("dynamic", 8, 28, 28, seed=0, variable_length=True)
    mine.save(tmp_path / "mine.keras")
    script = (
        "import sys, numpy as np\n"
        "from mnist_rnn.model.predictor import KerasPredictor\n"
        "from mnist_rnn.serving import formats\n"
        "from mnist_rnn.model.lstm import build_model\n"
        "images = np.load(sys.argv[1])\n"
        "np.save(sys.argv[3], formats.load(sys.argv[2]).probabilities(images))\n"
        "theirs = build_model('static', 8, 28, 28, seed=1)\n"
        "theirs.save(sys.argv[4])\n"
        "np.save(sys.argv[5], KerasPredictor(theirs).probabilities(images))\n"
    )
    other = "tensorflow" if compat.JAX else "jax"
    result = run_python("-c", script, tmp_path / "images.npy", tmp_path / "mine.keras",
                        tmp_path / "mine_there.npy", tmp_path / "theirs.keras",
                        tmp_path / "theirs_there.npy", env={**os.environ, "KERAS_BACKEND": other},
                        timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "mine_there.npy"),
                               KerasPredictor(mine).probabilities(images), atol=1e-5)
    theirs = formats.load(str(tmp_path / "theirs.keras"))
    np.testing.assert_allclose(theirs.probabilities(images),
                               np.load(tmp_path / "theirs_there.npy"), atol=1e-5)


def test_predict_never_replaces_an_input_or_a_chart_unless_asked(trained, digit_files,
                                                                 tmp_path):
    config, _, _ = trained
    paths, _ = digit_files
    a, b = pathlib.Path(paths[0]), pathlib.Path(paths[1])
    a_chart, b_chart = a.with_suffix(".steps.png"), b.with_suffix(".steps.png")
    shutil.copy(paths[2], a_chart)  # An image of the user's, given as an input too.
    b_chart.write_bytes(b"the user's chart")
    model = f"--model={config.model_dir}/model.keras"
    result = run_module("mnist_rnn.predict", model, "--per_step", a, a_chart, b)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {b_chart} exists: pass --overwrite to replace the chart, or --output_dir to "
        "write the charts elsewhere")
    assert a_chart.read_bytes() == pathlib.Path(paths[2]).read_bytes()
    assert b_chart.read_bytes() == b"the user's chart"
    assert a.with_name(a.stem + "-2.steps.png").is_file()  # a's chart, beside its input.

    result = run_module("mnist_rnn.predict", model, "--per_step", "--overwrite", a, a_chart, b)
    assert result.returncode == 0, result.stderr[-2000:]
    assert a_chart.read_bytes() == pathlib.Path(paths[2]).read_bytes()
    with Image.open(b_chart) as chart:
        assert chart.format == "PNG"


def test_sigterm_during_predict_is_the_stop_line_alone(trained, digit_files, tmp_path):
    config, _, _ = trained
    paths, _ = digit_files
    process = start_python("-m", "mnist_rnn.predict", f"--model={config.model_dir}/model.keras",
                           "--per_step", f"--output_dir={tmp_path}", *(paths * 100))
    process.stdout.readline()  # The first chunk is answered: the next is being read.
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143
    assert stderr.strip().splitlines() == [
        "stopped on SIGTERM; every file written is whole: run the same command again to finish"]

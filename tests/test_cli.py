"""The training CLI end to end, in subprocesses, as a user runs it."""

import json
import math
import os

import pytest
from absl import flags

from helpers import HAS_JAX, ROOT, run_module, run_python
from mnist_rnn import compat, config, errors, train
from mnist_rnn.serving import saved_model, tflite
from mnist_rnn.training import checkpoint, distribute


def run_train(*args, timeout=300):
    return run_module("mnist_rnn.train", *args, timeout=timeout)


def test_flagfile_then_overrides_trains_saves_and_exports(tmp_path, tfds_dir):
    model_dir = tmp_path / "run"
    result = run_train(
        f"--flagfile={ROOT / 'flags' / 'dynamic_rnn.flags'}", "--units=8", "--max_steps=3",
        "--eval_every_steps=2", "--dataset=mnist_sample", f"--data_dir={tfds_dir}",
        f"--model_dir={model_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test accuracy" in result.stdout and "step      2" in result.stdout
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["flags"]["units"] == 8  # The later flag wins over the flagfile...
    assert metrics["flags"]["learning_rate"] == 0.0001  # ...which still sets the rest.
    assert metrics["flags"]["epochs"] == 6 and metrics["steps"] == 3
    assert [e["step"] for e in metrics["evaluations"]] == [2, 3]
    assert (model_dir / "model.keras").is_file()
    assert (model_dir / "saved_model" / "saved_model.pb").is_file()
    assert not [p for p in os.listdir(model_dir) if ".tmp-" in p]


def parse_flagfile(name):
    """The train command's flags, parsed from flags/NAME into fresh FlagValues."""
    fv = flags.FlagValues()
    train.define_flags(fv)
    fv(["prog", f"--flagfile={ROOT / 'flags' / name}"])
    return fv


def test_both_flagfiles_parse_to_the_original_programs():
    expected = {
        "static_rnn.flags": dict(rnn="static", units=256, batch_size=100, learning_rate=0.01,
                                 eval_every_steps=10, target_accuracy=0.9, timesteps=28),
        "dynamic_rnn.flags": dict(rnn="dynamic", units=100, batch_size=100,
                                  learning_rate=1e-4, epochs=6, eval_every_steps=0,
                                  target_accuracy=0.9, timesteps=28),
    }
    for name, values in expected.items():
        fv = parse_flagfile(name)
        assert {k: fv[k].value for k in values} == values, name
        assert train.config_from_flags(fv).model_dir == f"runs/{values['rnn']}"


def test_best_flagfile_reaches_its_target_on_the_sample(tmp_path, tfds_dir):
    """flags/best.flags promises 0.96 on the sample; its time is the benchmark's business."""
    config = train.config_from_flags(parse_flagfile("best.flags"))
    assert config.target_accuracy == 0.96
    config.dataset, config.data_dir, config.verbose = "mnist_sample", tfds_dir, 0
    config.model_dir, config.export = str(tmp_path / "best"), False
    _, metrics = train.train_and_evaluate(config)
    assert metrics["reached_target"] and metrics["final_test_accuracy"] >= 0.96
    cap = config.epochs * math.ceil(metrics["dataset"]["train_size"] / config.batch_size)
    assert metrics["steps"] < cap  # Stopped by the target, not the epoch cap.


@pytest.mark.parametrize("flag, message", [
    ("--timesteps=30", "--timesteps must divide 784"),
    ("--rnn=gru", "value should be one of <static|dynamic>"),
    ("--learning_rate=0", "--learning_rate must be a finite number > 0"),
    ("--learning_rate=inf", "--learning_rate must be a finite number > 0"),
    ("--model_dir=", "--model_dir must name a directory"),
    ("--target_accuracy=1.5", "--target_accuracy=1.5: --target_accuracy must be between 0"),
    ("--units=0", "--units=0: --units must be at least 1"),
    ("--dataset=cifar", "value should be one of <auto|mnist|mnist_sample>"),
    ("--flagfile=no/such.flags", "no/such.flags"),
])
def test_bad_flag_exits_non_zero_naming_the_problem(flag, message):
    result = run_train(flag, "--dataset=mnist_sample", timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr


def test_unwritable_model_dir_is_one_clear_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_train("--dataset=mnist_sample", f"--model_dir={blocker}/run", timeout=120)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot write to --model_dir=")
    assert "Traceback" not in result.stderr


def test_a_bad_data_dir_is_one_line_and_creates_no_model_dir(tmp_path):
    (tmp_path / "file").write_text("")
    result = run_train(f"--data_dir={tmp_path / 'file'}", f"--model_dir={tmp_path / 'run'}",
                       timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --data_dir={tmp_path / 'file'} is not a directory: pass the directory where "
        "TFDS keeps (or may write) its datasets")
    assert not (tmp_path / "run").exists()


def test_helpfull_lists_the_flags():
    result = run_train("--helpfull", timeout=120)  # absl exits 1 after printing help.
    assert result.stdout.startswith("Train the static or the dynamic LSTM")
    for flag in ("--rnn", "--units", "--timesteps", "--eval_every_steps", "--target_accuracy",
                 "--dataset", "--model_dir", "--[no]export", "--[no]dry_run", "--lr_schedule",
                 "--mnist_dir"):
        assert flag in result.stdout, flag


LAYERS = """
import importlib, sys
heavy = ("tensorflow", "tensorflow_datasets")
for module in sys.argv[1:]:
    importlib.import_module(module)
    print(module, [name for name in heavy if name in sys.modules])
"""


def test_each_layer_imports_only_what_it_needs():
    """The commands check their flags before TensorFlow loads (and can all be imported in one
    process); a model and its serving never need TFDS."""
    commands = ["mnist_rnn.train", "mnist_rnn.predict", "mnist_rnn.evaluate",
                "mnist_rnn.export", "mnist_rnn.demo", "mnist_rnn.compare"]
    serving = ["mnist_rnn.model.lstm", "mnist_rnn.model.predictor",
               "mnist_rnn.serving.saved_model", "mnist_rnn.serving.formats",
               "mnist_rnn.serving.answers", "mnist_rnn.serving.tflite", "mnist_rnn.serving.page"]
    result = run_python("-c", LAYERS, *commands, *serving, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [f"{m} []" for m in commands] + [
        f"{m} ['tensorflow']" for m in serving]


def test_the_console_shows_our_lines_keras_progress_and_nothing_else(tmp_path):
    """A first run on a fresh data dir: one line for preparing the sample, one progress line
    per epoch, the evaluation lines, and none of TFDS's or TensorFlow's start-up lines."""
    result = run_train("--dataset=mnist_sample", f"--data_dir={tmp_path / 'tfds'}",
                       f"--model_dir={tmp_path / 'run'}", "--units=8", "--epochs=2",
                       "--noexport", "--notensorboard")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()  # The bar's redraws after "\r" become lines here.
    assert [line for line in lines if "sample" in line and "Preparing" in line] == [
        f"Preparing the bundled sample (5,000 MNIST digits) once, in "
        f"{tmp_path / 'tfds' / 'mnist_sample' / '1.0.0'}"]
    evaluations = [i for i, line in enumerate(lines) if line.startswith("time ")]
    assert len(evaluations) == 2
    # Each epoch's bar is done before its evaluation line, and not drawn again after it.
    assert all("40/40" in lines[i - 1] and "40/40" not in lines[i + 1] for i in evaluations)
    for noise in ("Downloading and preparing", "Variant folder", "dataset_info.json"):
        assert noise not in result.stdout + result.stderr, noise
    for noise in ("cpu_feature_guard", "cuInit", "oneDNN custom operations", "I0000"):
        assert noise not in result.stderr, noise
    assert not os.path.exists(tmp_path / "run" / "logs")


def test_tensorflow_start_up_lines_show_when_asked(tmp_path, tfds_dir):
    result = run_train("--dataset=mnist_sample", "--verbosity=1", "--dry_run", "--noexport",
                       "--notensorboard", f"--model_dir={tmp_path / 'run'}",
                       f"--data_dir={tfds_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cpu_feature_guard" in result.stderr


def test_what_a_backend_cannot_do_is_one_line_naming_the_way(monkeypatch):
    """KERAS_BACKEND: only tensorflow and jax, and JAX without Keras 2; on JAX, what needs
    TensorFlow's graphs or tf.distribute, and several processes without their variables."""
    for environ, match in [({"KERAS_BACKEND": "torch"}, "KERAS_BACKEND=torch is not supported"),
                           ({"KERAS_BACKEND": "jax", "TF_USE_LEGACY_KERAS": "1"},
                            "Keras 2 .* runs only on TensorFlow")]:
        with pytest.raises(errors.UserError, match=match):
            config.check_runtime(environ)
    if HAS_JAX:
        config.check_runtime({"KERAS_BACKEND": "jax"})
    else:
        with pytest.raises(errors.UserError, match=r"needs JAX: pip install 'mnist_rnn\[jax\]'"):
            config.check_runtime({"KERAS_BACKEND": "jax"})
    for state, runtime in [({"backend": "jax"}, "Keras 3 on JAX"),
                           ({"runtime": "Keras 2 on TensorFlow"}, "Keras 2 on TensorFlow"),
                           ({"backend": "tensorflow"}, "Keras 3 on TensorFlow")]:
        state.update(flags={}, dataset="mnist_sample")
        if runtime == compat.RUNTIME:
            checkpoint.check_compatible(state, {}, "mnist_sample")
            continue
        with pytest.raises(errors.UserError, match=f"{compat.RUNTIME} .the run in progress was "
                                                   f"trained with {runtime}: "):
            checkpoint.check_compatible(state, {}, "mnist_sample")
    for capability, on_jax in [("HAS_TF_GRAPHS", False), ("HAS_TF_DISTRIBUTE", False),
                               ("HAS_JAX_PROCESSES", True)]:  # What JAX can and cannot do.
        monkeypatch.setattr(compat, capability, on_jax)
    for refused, match in [(tflite.check_backend, "tflite export needs the TensorFlow backend"),
                           (lambda: distribute.make_strategy("mirrored"),
                            "mirrored is a tf.distribute strategy"),
                           (lambda: saved_model.uses_xla(None, "off"),
                            "only compiled signatures")]:
        with pytest.raises(errors.UserError, match=match):
            refused()
    for name in compat.JAX_PROCESS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(errors.UserError, match="multi_worker on JAX needs KERAS_DISTRIBUTION_"):
        distribute.make_strategy("multi_worker")

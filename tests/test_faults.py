"""Training that survives faults: resume after SIGKILL, crash-safe files, NaN, bad input."""

import errno
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import run_python, start_python, tensorboard_scalars, tiny_config, tmpfs
from mnist_rnn import errors, files, train
from mnist_rnn.compat import keras
from mnist_rnn.training import checkpoint, trainer
from mnist_rnn.training.callbacks import StopOnSignal


def train_command(model_dir, tfds_dir, *extra):
    # A learning rate that changes every step: a resumed run must follow it exactly.
    return [sys.executable, "-m", "mnist_rnn.train", "--rnn=dynamic", "--units=32",
            "--learning_rate=0.01", "--lr_schedule=cosine", "--epochs=3",
            "--eval_every_steps=10",
            "--backup_every_steps=30", "--noexport",
            "--dataset=mnist_sample", f"--data_dir={tfds_dir}", f"--model_dir={model_dir}",
            *extra]


def run(command):
    return run_python(*command[1:])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tfds_dir):
    model_dir = tmp_path_factory.mktemp("uninterrupted")
    result = run(train_command(model_dir, tfds_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir


def start_and_wait_past_a_backup(command, timeout=240, **popen):
    """Starts `command` and returns its process once it has printed the evaluation of a step
    past its last backup (backups every 30 steps and at each epoch end, of 40: step 50 is
    one). Fails here if that does not come in time."""
    process = start_python(*command[1:], **{"stderr": None, **popen})
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        if " step     50 " in line:
            return process
        if time.monotonic() > deadline:
            break
    process.kill()
    pytest.fail(f"no evaluation at step 50 within {timeout} s (exit status {process.wait()})")


def weights_of(model_dir):
    return keras.models.load_model(model_dir / "model.keras").get_weights()


@pytest.mark.jax  # Also on Keras 3's JAX backend...
@pytest.mark.keras2  # ...and under Keras 2.
def test_sigkill_then_the_same_command_resumes_to_the_same_result(uninterrupted, tmp_path,
                                                                  tfds_dir):
    model_dir = tmp_path / "killed"
    command = train_command(model_dir, tfds_dir)
    process = start_and_wait_past_a_backup(command, stderr=subprocess.DEVNULL)
    state_file = model_dir / "backup" / "state.json"
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    killed_at = json.loads(state_file.read_text())["step"]
    assert 40 <= killed_at < 120 and not (model_dir / "metrics.json").exists()

    result = run(command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resuming from the backup at step {killed_at}" in result.stdout
    assert "deprecated" not in result.stderr  # Reading the curves back says nothing.
    resumed = trainer.load_metrics(model_dir)
    reference = trainer.load_metrics(uninterrupted)
    assert resumed["resumed_from_step"] == killed_at
    assert resumed["steps"] == reference["steps"] == 120
    assert resumed["final_test_accuracy"] == pytest.approx(reference["final_test_accuracy"],
                                                           abs=0.005)
    assert [e["step"] for e in resumed["evaluations"]] == [e["step"] for e in
                                                           reference["evaluations"]]
    # Same optimizer state and data order from the backup on: the weights agree too.
    for a, b in zip(weights_of(model_dir), weights_of(uninterrupted)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # The TensorBoard curves go on where the backup was, with no step twice.
    test = tensorboard_scalars(model_dir / "logs" / "test")["accuracy"]
    assert [step for step, _ in test] == [e["step"] for e in resumed["evaluations"]]
    assert [value for _, value in test] == pytest.approx(
        [e["accuracy"] for e in resumed["evaluations"]])
    train = [step for step, _ in tensorboard_scalars(model_dir / "logs" / "train")["loss"]]
    assert train == list(range(10, 121, 10))


def test_a_finished_run_is_not_repeated(uninterrupted, tfds_dir):
    before = (uninterrupted / "metrics.json").read_bytes()
    result = run(train_command(uninterrupted, tfds_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already holds this run, finished at step 120" in result.stdout
    assert (uninterrupted / "metrics.json").read_bytes() == before


def test_other_flags_are_refused_by_name_and_overwrite_starts_over(uninterrupted, tmp_path,
                                                                   tfds_dir):
    refused = run(train_command(uninterrupted, tfds_dir, "--units=16", "--epochs=1"))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith("error: --model_dir holds a run with other flags: ")
    assert "--epochs=1 (the run in progress has 3)" in line
    assert "--units=16 (the run in progress has 32)" in line and "--overwrite" in line

    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("metrics.json", "model.keras"):
        (copy / name).write_bytes((uninterrupted / name).read_bytes())
    (copy / "backup").mkdir()
    (copy / "backup" / "state.json").write_bytes(
        (uninterrupted / "backup" / "state.json").read_bytes())
    fresh = run(train_command(copy, tfds_dir, "--units=16", "--epochs=1", "--overwrite"))
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    metrics = trainer.load_metrics(copy)
    assert metrics["flags"]["units"] == 16 and metrics["steps"] == 40
    assert metrics["resumed_from_step"] == 0


def test_backups_follow_evaluations_and_epoch_ends(tmp_path, tfds_dir, monkeypatch):
    config = tiny_config(tmp_path, tfds_dir, epochs=2, max_steps=70, eval_every_steps=25,
                         export=False)
    saved = []
    original = checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda model, directory, state: (
        saved.append(state["step"]), original(model, directory, state)))
    train.train_and_evaluate(config, out=io.StringIO())
    assert saved == [25, 40, 50, 70]  # Evaluations at 25 and 50, epoch ends at 40 and 70.
    state = checkpoint.load_state(os.path.join(config.model_dir, "backup"))
    assert state["finished"] and state["step"] == 70
    assert not [n for n in os.listdir(os.path.join(config.model_dir, "backup"))
                if n.endswith(".npz")]  # The final weights live in model.keras.


def test_nan_loss_stops_at_once_and_keeps_the_last_good_backup(tmp_path, tfds_dir):
    config = tiny_config(tmp_path, tfds_dir, learning_rate=1e38, backup_every_steps=1)
    with pytest.raises(errors.NumericalError) as err:
        train.train_and_evaluate(config, out=io.StringIO())
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("the training loss is nan at step 2: training stopped")
    assert "the last good backup (step 1) is kept" in message
    assert message.endswith("; lower learning_rate")
    assert err.value.as_flags().endswith("; lower --learning_rate")
    assert sorted(os.listdir(config.model_dir)) == [".lock", "backup"]  # No model written.
    state = checkpoint.load_state(os.path.join(config.model_dir, "backup"))
    assert state["step"] == 1 and os.path.exists(
        os.path.join(config.model_dir, "backup", state["weights"]))


def test_weights_that_are_not_finite_are_never_backed_up(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.layers[0].kernel.assign(np.full((3, 2), np.nan, np.float32))
    with pytest.raises(errors.NumericalError, match="no longer finite at step 7"):
        checkpoint.save(model, str(tmp_path), {"step": 7})
    assert os.listdir(tmp_path) == []


def test_a_failed_save_is_one_error_and_keeps_the_previous_files(tmp_path, tfds_dir,
                                                                 monkeypatch):
    config = tiny_config(tmp_path, tfds_dir, max_steps=5)
    model, _ = train.train_and_evaluate(config, out=io.StringIO())
    model_file = pathlib.Path(config.model_dir) / "model.keras"
    before = model_file.read_bytes()
    for code in (errno.ENOSPC, errno.EROFS):
        def failing_save(self, path, *args, code=code, **kwargs):
            pathlib.Path(path).write_bytes(b"half a model")
            raise OSError(code, os.strerror(code), str(path))

        monkeypatch.setattr(keras.Model, "save", failing_save)
        with pytest.raises(errors.OutputError) as err:
            files.write_or_fail(files.save_model, model, str(model_file))
        assert str(err.value).startswith(f"cannot write to {tmp_path}/model/")
        assert str(err.value).endswith(f": {os.strerror(code)}; the previous files are kept")
        assert model_file.read_bytes() == before
    # A run started over fails the same way at its end; its backup is complete by then, so
    # the earlier run's model is gone, and the same command resumes and writes this one's.
    overwrite = tiny_config(tmp_path, tfds_dir, max_steps=6, overwrite=True)
    with pytest.raises(errors.OutputError, match=os.strerror(errno.EROFS)):
        train.train_and_evaluate(overwrite, out=io.StringIO())
    assert not model_file.exists()
    assert not [n for n in os.listdir(config.model_dir) if ".tmp-" in n]
    monkeypatch.undo()
    _, metrics = train.train_and_evaluate(tiny_config(tmp_path, tfds_dir, max_steps=6),
                                          out=io.StringIO())
    assert metrics["resumed_from_step"] == 6 and model_file.exists()


KILL_DURING_SAVE = """
import os, sys, time, keras
from mnist_rnn import files
from mnist_rnn.model import lstm as model
m = model.build_model("dynamic", 8, 28, 28, seed=0)
files.save_model(m, sys.argv[1])
def slow_save(path, *args, **kwargs):
    with open(path, "wb") as f:
        f.write(b"PK half a zip")
        f.flush()
    print("writing", flush=True)
    time.sleep(600)
m.save = slow_save
files.save_model(m, sys.argv[1])
"""


def test_sigkill_during_a_save_leaves_the_previous_model_loadable(tmp_path):
    target = tmp_path / "model.keras"
    process = start_python("-c", KILL_DURING_SAVE, target, stderr=subprocess.DEVNULL)
    assert process.stdout.readline().strip() == "writing"
    process.kill()
    process.wait(timeout=60)
    leftovers = [n for n in os.listdir(tmp_path) if ".tmp-" in n]
    assert len(leftovers) == 1  # The killed write's temporary...
    assert keras.models.load_model(target).count_params() > 0  # ...beside the intact model.
    files.remove_stale_tmp(tmp_path, {"model.keras"}.__contains__)  # What a run does first.
    assert os.listdir(tmp_path) == ["model.keras"]


def test_unreadable_backup_state_is_one_line(tmp_path, tfds_dir):
    config = tiny_config(tmp_path, tfds_dir)
    os.makedirs(os.path.join(config.model_dir, "backup"))
    with open(os.path.join(config.model_dir, "backup", "state.json"), "w") as f:
        f.write('{"step": 1')  # Truncated.
    with pytest.raises(errors.UserError, match="a damaged backup state .* overwrite=True") as err:
        train.train_and_evaluate(config, out=io.StringIO())
    assert err.value.as_flags().endswith("rerun with --overwrite to start over")


def test_corrupt_model_shows_a_traceback_only_when_asked(tmp_path):
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"garbage")
    image = tmp_path / "digit.npy"
    np.save(image, np.zeros((28, 28), np.uint8))
    quiet = run([sys.executable, "-m", "mnist_rnn.predict", f"--model={bad}", str(image)])
    loud = run([sys.executable, "-m", "mnist_rnn.predict", f"--model={bad}", str(image),
                "--verbosity=1"])
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert quiet.stderr.strip().splitlines()[-1].startswith(f"error: cannot load model {bad}")
    assert loud.returncode != 0 and "Traceback" in loud.stderr


def test_a_second_run_on_a_busy_model_dir_stops_at_once_naming_the_first(tmp_path, tfds_dir):
    model_dir = tmp_path / "busy"
    first = start_python(*train_command(model_dir, tfds_dir, "--epochs=50")[1:],
                         stderr=subprocess.DEVNULL)
    try:
        # Past the lock (the data dir may first be prepared, in a line of its own).
        assert next(line for line in first.stdout
                    if not line.startswith("Preparing")).startswith("the default strategy")
        second = run(train_command(model_dir, tfds_dir, "--epochs=50"))
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert second.stderr.strip().splitlines()[-1] == (
            f"error: --model_dir={model_dir} is in use by another run (process {first.pid}): "
            "wait for it to end, or use another --model_dir")
        assert first.poll() is None  # The first run goes on, untouched.
    finally:
        first.kill()
        first.wait(timeout=60)
    with files.exclusive(str(model_dir)):  # A killed run leaves no stale lock behind.
        pass


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_are_caught_and_exit_as_the_shell_expects(signal_number):
    """Both stop the same way (the run below shows it for SIGTERM); Ctrl-C exits with 130."""
    stopper = StopOnSignal()
    with stopper.caught():
        os.kill(os.getpid(), signal_number)  # No KeyboardInterrupt, no death: marked only.
        time.sleep(0.1)
    assert stopper.signal_number == signal_number
    assert errors.Interrupted("stopped", signal_number).exit_status == 128 + signal_number


@pytest.mark.jax
@pytest.mark.keras2
def test_sigterm_backs_up_and_the_resumed_run_redoes_nothing(uninterrupted, tmp_path,
                                                             tfds_dir):
    signal_number, status = signal.SIGTERM, 143
    model_dir = tmp_path / "stopped"
    command = train_command(model_dir, tfds_dir)
    # Past a backup, so that the stop must back up itself.
    process = start_and_wait_past_a_backup(command, stderr=subprocess.PIPE)
    state_file = model_dir / "backup" / "state.json"
    process.send_signal(signal_number)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == status and "Traceback" not in stderr
    line = stderr.strip().splitlines()[-1]
    stopped_at = json.loads(state_file.read_text())["step"]
    assert line == (f"stopped at step {stopped_at} on {signal.Signals(signal_number).name}; "
                    "run the same command to resume")
    assert 50 <= stopped_at < 120 and not (model_dir / "metrics.json").exists()

    result = run(command)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = trainer.load_metrics(model_dir)
    reference = trainer.load_metrics(uninterrupted)
    assert resumed["resumed_from_step"] == stopped_at  # The backup is where it stopped.
    assert resumed["steps"] == reference["steps"] == 120
    assert [e["step"] for e in resumed["evaluations"]] == [
        e["step"] for e in reference["evaluations"]]
    assert resumed["final_test_accuracy"] == pytest.approx(reference["final_test_accuracy"],
                                                           abs=0.005)
    for a, b in zip(weights_of(model_dir), weights_of(uninterrupted)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_full_disk_during_a_backup_is_one_line_and_keeps_every_good_file(tmp_path, tfds_dir):
    """A real 3 MB filesystem holding a finished run; a bigger model started over on it fills
    it at its first backup. HDF5 meeting the full disk used to crash the process (exit 139)
    and leave backup/ empty."""
    with tmpfs(tmp_path / "small", "size=3m") as disk:
        model_dir = pathlib.Path(disk) / "run"
        train.train_and_evaluate(
            tiny_config(tmp_path, tfds_dir, units=16, max_steps=10, model_dir=str(model_dir),
                        tensorboard=True), out=io.StringIO())
        kept = {p: p.read_bytes() for p in model_dir.rglob("*") if p.is_file()}
        result = run(train_command(model_dir, tfds_dir, "--units=256", "--max_steps=20",
                                   "--overwrite"))
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            f"error: cannot write to {model_dir}/backup/step-20.weights.npz: No space left on "
            "device; the previous files are kept")
        # The earlier run stays whole, its TensorBoard curves included.
        assert {p for p in model_dir.rglob("*") if p.is_file()} == set(kept)
        for path, content in kept.items():
            if path.name != ".lock":
                assert path.read_bytes() == content, path


def test_a_full_disk_during_the_export_is_one_line_too(tmp_path, tfds_dir):
    """TensorFlow reports its own write errors (ResourceExhaustedError), not OSError."""
    with tmpfs(tmp_path / "small", "size=900k") as disk:
        model_dir = pathlib.Path(disk) / "run"
        result = run(train_command(model_dir, tfds_dir, "--units=64", "--max_steps=10",
                                   "--export", "--notensorboard"))
        assert result.returncode == 1 and "Traceback" not in result.stderr
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: cannot write to {model_dir}/")
        assert line.endswith(": No space left on device; the previous files are kept")
        assert not [p for p in model_dir.rglob("*") if ".tmp-" in p.name]

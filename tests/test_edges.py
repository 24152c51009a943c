"""What a careless or hostile user meets: starting over, a user's files in the run's directory,
odd paths, broken state, signals outside training, each one line and nothing lost."""

import io
import json
import os
import pathlib
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from helpers import run_module, run_python, start_python, tensorboard_scalars, tiny_config, tmpfs
from mnist_rnn import compat, config, errors, files, train
from mnist_rnn.model.predictor import KerasPredictor
from mnist_rnn.serving import answers, formats
from mnist_rnn.training import checkpoint, rundir, trainer

keras2 = pytest.mark.keras2


@keras2
@pytest.mark.jax
def test_overwrite_leaves_nothing_of_the_earlier_run_and_no_user_file_is_touched(tmp_path,
                                                                                 tfds_dir):
    model_dir = tmp_path / "run"
    # The plain graph exports fastest; a model on JAX exports compiled programs only.
    first = tiny_config(tmp_path, tfds_dir, max_steps=8, export=True, tensorboard=True,
                        saved_model_xla="off" if compat.HAS_TF_GRAPHS else "auto",
                        model_dir=str(model_dir))
    train.train_and_evaluate(first, out=io.StringIO())
    assert (model_dir / "saved_model").is_dir()
    # The user's files that look like temporaries, and a real one a killed write left.
    user_files = {".notes.tmp-2024": "notes", ".old.tmp-1.old": "old",
                  ".project.tmp-work/file": "work", ".metrics.json.tmp-12345": "mine"}
    for name, text in user_files.items():
        (model_dir / name).parent.mkdir(exist_ok=True)
        (model_dir / name).write_text(text)
    (model_dir / ".model.keras.tmp-k1ll3d_9.keras").write_bytes(b"half a model")

    out = io.StringIO()
    train.train_and_evaluate(tiny_config(tmp_path, tfds_dir, max_steps=4, units=16,
                                         export=False, tensorboard=True, overwrite=True,
                                         model_dir=str(model_dir)), out=out)
    assert not (model_dir / "saved_model").exists()  # The earlier run's, not rewritten.
    assert not (model_dir / ".replaced").exists()
    assert not (model_dir / ".model.keras.tmp-k1ll3d_9.keras").exists()
    for name, text in user_files.items():
        assert (model_dir / name).read_text() == text, name
    saved = out.getvalue().strip().splitlines()[-1]
    assert saved == (f"Saved to {model_dir}: accuracy_by_step.png, backup, "
                     "confident_errors.png, confusion_matrix.png, evaluation.json, logs, "
                     "metrics.json, model.keras")
    # The curves are this run's only: 4 steps, not the earlier run's 8.
    assert [s for s, _ in tensorboard_scalars(model_dir / "logs" / "train")["loss"]] == [4]
    assert trainer.load_metrics(model_dir)["flags"]["units"] == 16


def test_a_hand_over_cut_short_is_undone_or_completed_at_the_next_start(tmp_path):
    def earlier_run():
        (tmp_path / "logs" / "train").mkdir(parents=True)
        (tmp_path / "logs" / "train" / "events").write_text("earlier curves")
        (tmp_path / "model.keras").write_text("earlier model")
        (tmp_path / "backup").mkdir()
        (tmp_path / "backup" / "state.json").write_text("earlier state")

    earlier_run()
    rundir.hand_over(str(tmp_path))
    (tmp_path / "logs").mkdir()  # The new run had begun its curves, then was killed.
    (tmp_path / "logs" / "new").write_text("new curves")
    rundir.recover(str(tmp_path))  # No backup of the new run: the earlier one comes back.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup", "logs", "model.keras"]
    assert (tmp_path / "logs" / "train" / "events").read_text() == "earlier curves"
    assert not (tmp_path / "logs" / "new").exists()

    rundir.hand_over(str(tmp_path))
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "state.json").write_text("new state")
    rundir.recover(str(tmp_path))  # The new run's backup is complete: the earlier run goes.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup"]
    assert (tmp_path / "backup" / "state.json").read_text() == "new state"


@keras2
def test_a_dry_run_does_not_block_the_real_run(tmp_path, tfds_dir):
    dry = tiny_config(tmp_path, tfds_dir, dry_run=True)
    assert (dry.max_steps, dry.epochs) == (2, 1)
    _, metrics = train.train_and_evaluate(dry, out=io.StringIO())
    assert metrics["steps"] == 2
    _, metrics = train.train_and_evaluate(tiny_config(tmp_path, tfds_dir, max_steps=6),
                                          out=io.StringIO())
    assert metrics["steps"] == 6 and metrics["resumed_from_step"] == 0


@pytest.mark.parametrize("state", [{}, {"step": 20}, [], {"step": 20, "flags": {},
                                                          "dataset": "mnist_sample",
                                                          "evaluations": [],
                                                          "weights": "../../etc/passwd"}])
def test_a_state_that_is_not_a_backup_is_one_line(tmp_path, tfds_dir, state):
    config = tiny_config(tmp_path, tfds_dir)
    (pathlib.Path(config.model_dir) / "backup").mkdir(parents=True)
    (pathlib.Path(config.model_dir) / "backup" / "state.json").write_text(json.dumps(state))
    with pytest.raises(errors.UserError, match="a damaged backup state .* start over") as err:
        train.train_and_evaluate(config, out=io.StringIO())
    assert "\n" not in str(err.value)
    assert (pathlib.Path(config.model_dir) / "backup" / "state.json").exists()


@pytest.mark.parametrize("name", ["logs", "backup", ".lock"])
def test_a_run_name_taken_by_the_wrong_kind_is_one_line_before_training(tmp_path, tfds_dir,
                                                                        name):
    config = tiny_config(tmp_path, tfds_dir, tensorboard=True)
    taken = pathlib.Path(config.model_dir) / name
    if name == ".lock":
        taken.mkdir(parents=True)
    else:
        taken.parent.mkdir(parents=True)
        taken.write_text("the user's")
    with pytest.raises(errors.OutputError, match=f"{taken}") as err:
        train.train_and_evaluate(config, out=io.StringIO())
    assert "\n" not in str(err.value)
    assert os.listdir(config.model_dir) == [name]  # Nothing created before the check.
    if name == ".lock":
        with pytest.raises(errors.OutputError, match="cannot lock"):
            files.check_not_busy(config.model_dir)


def test_a_model_path_that_is_not_a_file_is_never_read(tmp_path):
    fifo = tmp_path / "model.keras"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo)):
        with pytest.raises(errors.ModelLoadError, match="not a regular file or directory"):
            formats.load(path)
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"garbage")
    with pytest.raises(errors.ModelLoadError) as err:
        formats.load(str(corrupt))
    assert "File not found" not in str(err.value)
    assert "not a zip archive, which a .keras file is" in str(err.value)


def test_one_answer_or_error_is_one_line_whatever_the_path():
    assert answers.format_result({"file": "a\nb.png", "error": "a\nb.png: no such file"}) == (
        "error: a\\nb.png: no such file")
    assert errors.one_line("bad\rpath\tx") == "bad\\rpath\\tx"


def test_a_backend_or_keras_not_installed_is_one_line(monkeypatch):
    with pytest.raises(errors.UserError, match="KERAS_BACKEND=JAX is not supported"):
        config.check_runtime({"KERAS_BACKEND": "JAX"})
    real = config.importlib.util.find_spec
    monkeypatch.setattr(config.importlib.util, "find_spec",
                        lambda name: None if name == "tf_keras" else real(name))
    with pytest.raises(errors.UserError, match=r"Keras 2, which is not installed: pip install "):
        config.check_runtime({"TF_USE_LEGACY_KERAS": "1"})


def test_an_unknown_backend_is_refused_before_keras_loads():
    result = run_module("mnist_rnn.train", "--dry_run", "--dataset=mnist_sample",
                        env={**os.environ, "KERAS_BACKEND": "JAX"}, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: KERAS_BACKEND=JAX is not supported: use tensorflow (the default) or jax"]


def test_a_busy_model_dir_is_refused_before_tensorflow_loads(tmp_path):
    model_dir = tmp_path / "busy"
    model_dir.mkdir()
    with files.exclusive(str(model_dir)):
        result = run_python("-X", "importtime", "-m", "mnist_rnn.train",
                            f"--model_dir={model_dir}", timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1
    assert lines[-1] == (f"error: --model_dir={model_dir} is in use by another run (process "
                         f"{os.getpid()}): wait for it to end, or use another --model_dir")
    assert not [line for line in lines if re.search(r"\|\s+tensorflow$", line)]
    assert os.listdir(model_dir) == [".lock"]


def test_sigint_during_start_up_is_one_line_and_130(tmp_path, tfds_dir):
    process = start_python("-m", "mnist_rnn.train", "--dataset=mnist_sample",
                           f"--data_dir={tfds_dir}", f"--model_dir={tmp_path / 'run'}")
    time.sleep(1.5)  # Importing TensorFlow.
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert stderr.strip().splitlines() == [
        "stopped on SIGINT; every file written is whole: run the same command again to "
        "finish"]


@keras2
def test_sigterm_while_writing_the_outputs_keeps_the_backup_and_the_rerun_finishes(tmp_path,
                                                                                   tfds_dir):
    command = ["-m", "mnist_rnn.train", "--units=32", "--epochs=1", "--max_steps=20",
               "--export", "--dataset=mnist_sample", f"--data_dir={tfds_dir}",
               f"--model_dir={tmp_path / 'run'}"]
    process = start_python(*command)
    for line in process.stdout:
        if " step     20 " in line:  # The last evaluation: the outputs come next.
            process.send_signal(signal.SIGTERM)
            break
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 143 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("stopped ")
    assert "on SIGTERM" in stderr.strip().splitlines()[-1]
    state = checkpoint.load_state(str(tmp_path / "run" / "backup"))
    assert state["step"] == 20 and not state.get("finished")
    rerun = run_python(*command)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert trainer.load_metrics(tmp_path / "run")["steps"] == 20


def test_a_nan_loss_line_starts_a_line_of_its_own(tmp_path, tfds_dir):
    result = run_module(
        "mnist_rnn.train", "--units=16", "--learning_rate=1e38", "--max_steps=3",
        "--steps_per_execution=1", "--dataset=mnist_sample", f"--data_dir={tfds_dir}",
        f"--model_dir={tmp_path / 'run'}", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert result.returncode == 1
    assert "\nerror: the training loss is nan at step " in result.stdout


@pytest.mark.parametrize("trained", ["dynamic"], indirect=True)
def test_evaluate_on_a_full_disk_is_one_line_and_writes_nothing(trained, tmp_path, tfds_dir):
    config = trained[0]
    with tmpfs(tmp_path / "small", "size=48k") as disk:
        result = run_module("mnist_rnn.evaluate",
                            f"--model={os.path.join(config.model_dir, 'model.keras')}",
                            "--dataset=mnist_sample", f"--data_dir={tfds_dir}",
                            f"--output_dir={disk}")
        assert result.returncode == 1 and "Traceback" not in result.stderr
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: cannot write to {disk}")
        assert line.endswith("No space left on device; the previous files are kept")
        assert os.listdir(disk) == []


@pytest.mark.parametrize("trained", ["dynamic"], indirect=True)
def test_predict_answers_each_chunk_before_it_reads_the_next(trained, tmp_path):
    model = trained[1]
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    paths = [tmp_path / f"{name}.npy" for name in ("a", "b", "later")]
    for path in paths[:2]:
        np.save(path, digit)
    chunks = answers.predict_files(KerasPredictor(model), list(map(str, paths)),
                                   per_step=True, chunk=2)
    first, digits = next(chunks)
    assert [r["file"] for r in first] == list(map(str, paths[:2])) and len(digits) == 2
    assert all(r["timesteps"] == 28 and "class" in r for r in first)
    np.save(paths[2], digit)  # Read only now: the first answers came before.
    (last,), _ = next(chunks)
    assert "error" not in last and last["class"] == first[0]["class"]

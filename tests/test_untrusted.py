"""What a hostile or careless user may leave in the way: a link where the run keeps a file, a
backup edited by hand, the user's own files under the run's working names, images that are
not what they claim, and two first runs at once. Each is one line, and nothing of theirs is
written through, moved or deleted."""

import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import run_module, start_python, tiny_config
from mnist_rnn import compat, config, errors, files, train
from mnist_rnn.data import images
from mnist_rnn.training import checkpoint, rundir

keras2 = pytest.mark.keras2
# Drops root's powers to read and search anything, so that file modes hold as for a user.
AS_A_USER = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"]


def _tree(directory) -> dict[str, bytes]:
    """Every file under `directory` (links as their targets' names), with its bytes."""
    root = pathlib.Path(directory)
    return {str(p.relative_to(root)): (os.readlink(p).encode() if p.is_symlink() else
                                       p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_symlink() or p.is_file()}


def test_a_lock_that_is_a_link_is_never_followed(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("someone's notes")
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / ".lock").symlink_to(notes)
    result = run_module("mnist_rnn.train", f"--model_dir={model_dir}", "--dry_run",
                        "--dataset=mnist_sample", timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: cannot lock --model_dir={model_dir}: {model_dir}/.lock: a symbolic link, "
        "which a run never follows; remove it, or use another --model_dir"]
    assert notes.read_text() == "someone's notes"
    assert os.listdir(model_dir) == [".lock"]


def test_a_lock_that_is_a_second_name_of_a_file_is_refused(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("someone's notes")
    (tmp_path / "run").mkdir()
    os.link(notes, tmp_path / "run" / ".lock")
    with pytest.raises(errors.OutputError, match="a hard link to another file"):
        with files.exclusive(str(tmp_path / "run")):
            pass
    assert notes.read_text() == "someone's notes"


@pytest.mark.parametrize("name", ["backup", "logs", "model.keras", ".replaced"])
def test_a_link_in_place_of_a_run_output_is_refused(tmp_path, tfds_dir, name):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    train_config = tiny_config(tmp_path, tfds_dir, tensorboard=True)
    os.makedirs(train_config.model_dir)
    (pathlib.Path(train_config.model_dir) / name).symlink_to(elsewhere)
    with pytest.raises(errors.OutputError, match="a symbolic link, which a run never follows"):
        train.train_and_evaluate(train_config, out=io.StringIO())
    assert os.listdir(elsewhere) == []
    assert os.listdir(train_config.model_dir) == [name]


def _hand_made_backup(train_config, step: int, weights_step: int) -> pathlib.Path:
    """A backup state as a user might edit it: the run's flags, a step and a weights name."""
    backup = pathlib.Path(train_config.model_dir) / "backup"
    backup.mkdir(parents=True)
    (backup / checkpoint.weights_name(weights_step)).write_bytes(b"weights")
    (backup / "state.json").write_text(json.dumps({
        "step": step, "flags": config.run_defining(train_config), "dataset": "mnist_sample",
        "evaluations": [], "runtime": compat.RUNTIME,
        "weights": checkpoint.weights_name(weights_step)}))
    return backup


@keras2
@pytest.mark.jax
@pytest.mark.parametrize("step, weights_step, why", [
    (10**30, 10**30, "step 1000000000000000000000000000000 is past the run's last step, 40"),
    (-5, 20, "step -5 is negative"),
    (40, 20, "step 40 does not match its weights file step-20.weights.npz"),
])
def test_a_backup_edited_by_hand_is_refused_and_left_as_it_is(tmp_path, tfds_dir, step,
                                                              weights_step, why):
    train_config = tiny_config(tmp_path, tfds_dir)
    backup = _hand_made_backup(train_config, step, weights_step)
    before = _tree(backup)
    with pytest.raises(errors.UserError) as err:
        train.train_and_evaluate(train_config, out=io.StringIO())
    assert str(err.value) == (f"{backup}/state.json: a damaged backup state ({why}); rerun "
                              "with overwrite=True to start over")
    assert _tree(backup) == before
    assert sorted(os.listdir(train_config.model_dir)) == [".lock", "backup"]


def test_a_finished_state_whose_step_is_not_the_metrics_is_refused(tmp_path, tfds_dir):
    train_config = tiny_config(tmp_path, tfds_dir, max_steps=2, export=False)
    train.train_and_evaluate(train_config, out=io.StringIO())
    state_file = pathlib.Path(train_config.model_dir) / "backup" / "state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "step": 10**30}))
    with pytest.raises(errors.UserError, match="backup's step 10+ is not metrics.json's 2"):
        train.train_and_evaluate(train_config, out=io.StringIO())


def test_a_users_replaced_directory_and_look_alike_temporaries_are_never_deleted(tmp_path,
                                                                                 tfds_dir):
    train_config = tiny_config(tmp_path, tfds_dir, max_steps=2, export=False)
    train.train_and_evaluate(train_config, out=io.StringIO())
    model_dir = pathlib.Path(train_config.model_dir)
    (model_dir / ".metrics.json.tmp-12345").write_text("the user's")
    train.train_and_evaluate(train_config, out=io.StringIO())  # Finished: nothing to do.
    assert (model_dir / ".metrics.json.tmp-12345").read_text() == "the user's"

    (model_dir / ".replaced").mkdir()
    (model_dir / ".replaced" / "notes.txt").write_text("the user's notes")
    before = _tree(model_dir)
    for overwrite in (False, True):
        with pytest.raises(errors.OutputError, match=r"\.replaced is not a run's hand-over"):
            train.train_and_evaluate(tiny_config(tmp_path, tfds_dir, max_steps=2,
                                                 export=False, overwrite=overwrite),
                                     out=io.StringIO())
        assert _tree(model_dir) == before


def test_a_hand_over_deletes_only_the_runs_names(tmp_path):
    (tmp_path / "model.keras").write_text("earlier model")
    rundir.hand_over(str(tmp_path))
    (tmp_path / ".replaced" / "notes.txt").write_text("put there meanwhile")
    rundir.finish_hand_over(str(tmp_path))
    assert sorted(os.listdir(tmp_path / ".replaced")) == ["notes.txt"]


def test_temporaries_never_write_through_a_link_planted_in_their_place(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("someone's notes")
    # Every name a temporary of the old scheme (the process id) could take.
    (tmp_path / f".metrics.json.tmp-{os.getpid()}").symlink_to(notes)
    files.write_json(str(tmp_path / "metrics.json"), {"steps": 2})
    assert notes.read_text() == "someone's notes"
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"steps": 2}
    assert oct(os.stat(tmp_path / "metrics.json").st_mode & 0o777) == oct(
        0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_model_too_large_for_the_machine_is_one_line_before_anything_is_made(tmp_path):
    model_dir = tmp_path / "run"
    result = run_module("mnist_rnn.train", "--units=100000", f"--model_dir={model_dir}",
                        timeout=120)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: --units=100000 with --batch_size=100 needs at least 602.5 "
                           "GiB to train, and this process may use "), line
    assert not model_dir.exists()


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_unreadable_mnist_files_are_one_line(tmp_path, kind):
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv (util-linux) to drop root's power to read any file")
    mnist_dir = tmp_path / "mnist"
    mnist_dir.mkdir()
    from mnist_rnn.data import pipeline

    published = pipeline.tfds.builder("mnist").url_infos.values()
    for info in published:  # The published sizes, as holes: only the first is ever read.
        with open(mnist_dir / info.filename, "wb") as f:
            f.truncate(int(info.size))
    first = sorted(info.filename for info in published)[0]
    (mnist_dir / first if kind == "file" else mnist_dir).chmod(0)
    try:
        result = subprocess.run(
            [*AS_A_USER, sys.executable, "-m", "mnist_rnn.train", f"--mnist_dir={mnist_dir}",
             f"--model_dir={tmp_path / 'run'}", f"--data_dir={tmp_path / 'tfds'}"],
            capture_output=True, text=True, timeout=120)
    finally:
        mnist_dir.chmod(0o755)
        (mnist_dir / first).chmod(0o644)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"error: cannot read {mnist_dir / first}: Permission denied; make the four MNIST files "
        f"in --mnist_dir readable to you"]


def test_two_first_runs_at_once_on_a_fresh_data_dir_both_finish(tmp_path):
    processes = [start_python("-m", "mnist_rnn.train", "--dry_run", "--noexport",
                              "--notensorboard", "--dataset=mnist_sample", "--seed=7",
                              f"--data_dir={tmp_path / 'tfds'}",
                              f"--model_dir={tmp_path / f'run{i}'}") for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    preparing = [o for o, _ in outputs if "Preparing the bundled sample" in o]
    assert len(preparing) == 1  # The second waited, and found it prepared.
    assert not list((tmp_path / "tfds").rglob("incomplete*"))


def test_config_fields_of_the_wrong_type_are_one_line():
    for field, value in [("units", "16"), ("learning_rate", "0.1"), ("batch_size", None),
                         ("units", 16.5), ("epochs", 2.5), ("export", 1)]:
        with pytest.raises(errors.UserError, match=f"^{field}=.*: {field} must be of type "):
            config.TrainConfig(**{field: value})
    assert config.TrainConfig(learning_rate=1, units=np.int64(16)).units == 16


def test_output_dirs_that_are_files_say_so(tmp_path):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(errors.OutputError) as err:
        files.ensure_writable_dir(str(tmp_path / "taken"), "output_dir")
    assert err.value.as_flags() == (f"--output_dir={tmp_path / 'taken'} is not a directory: "
                                    "name a directory, new or existing")


def test_images_that_are_not_what_predict_reads_say_why(tmp_path):
    digit = np.zeros((28, 28), np.uint8)
    digit[5:20, 12:16] = 255
    cases = {"digit.tiff": "not a readable image", "moving.gif": "an animation of 2 frames",
             "objects.npy": "an array of Python objects, which is never loaded",
             "nan.npy": "values that are not numbers (NaN or infinity)"}
    Image.fromarray(digit).save(tmp_path / "digit.tiff")
    Image.fromarray(digit).save(tmp_path / "moving.gif", save_all=True,
                                append_images=[Image.fromarray(255 - digit)])
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "nan.npy", np.full((28, 28), np.nan))
    for name, why in cases.items():
        with pytest.raises(errors.ImageError, match=re.escape(why)):
            images.load_image(str(tmp_path / name))


def test_a_backup_of_another_runtime_is_named_as_such():
    settings = config.run_defining(config.TrainConfig())
    state = {"flags": settings, "dataset": "mnist", "runtime": "Keras 2"}
    if compat.RUNTIME == "Keras 2":
        state["runtime"] = "Keras 3 on TensorFlow"
    with pytest.raises(errors.UserError, match="holds a run of another runtime: "):
        checkpoint.check_compatible(state, settings, "mnist")


def test_an_epoch_cut_short_by_a_stop_is_not_evaluated_as_its_end():
    from mnist_rnn.training.callbacks import Evaluator

    class Recording:  # A Predictor that notes each test pass.
        has_steps = False

        def log_probabilities(self, sequences):
            passes.append(1)
            return np.zeros((len(sequences), 10), np.float32)

    passes = []
    test = [(np.zeros((2, 28, 28), np.float32), np.zeros(2, np.int64))]
    evaluator = Evaluator(Recording(), test, steps_per_epoch=10, clock=lambda: 0.0,
                          out=io.StringIO())
    evaluator.set_params({"steps": 10, "verbose": 0})
    evaluator.on_epoch_begin(0)
    for batch in range(4):  # A signal stops the run after step 4.
        evaluator.on_train_batch_end(batch)
    evaluator.on_epoch_end(0)  # Keras 2 and 3 both end the epoch on a stop.
    assert passes == [] and evaluator.history == []


@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_a_prepare_lock_that_cannot_be_one_is_refused_without_waiting(tmp_path, kind):
    lock = tmp_path / ".mnist_sample.prepare.lock"
    notes = tmp_path / "notes.txt"
    notes.write_text("someone's notes")
    if kind == "fifo":
        os.mkfifo(lock)  # Opened for waiting, it would block until someone wrote to it.
    else:
        lock.symlink_to(notes)
    with pytest.raises(errors.OutputError, match=f"cannot lock {lock}: .*; remove it"):
        with files.waiting_for(str(lock)):
            pass
    assert notes.read_text() == "someone's notes"

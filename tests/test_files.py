import json
import os

import pytest

from mnist_rnn import errors, files


def test_write_json_replaces_atomically_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    files.write_json(path, {"a": 1})
    files.write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "metrics.json"
    files.write_json(path, {"good": True})
    with pytest.raises(TypeError):
        files.write_json(path, {"bad": object()})  # Fails mid-serialisation.
    assert json.loads(path.read_text()) == {"good": True}
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_replace_dir_keeps_the_old_dir_when_writing_fails(tmp_path):
    target = tmp_path / "saved_model"
    files.replace_dir(lambda p: os.makedirs(os.path.join(p, "v1")), target)
    assert os.listdir(target) == ["v1"]

    def broken(p):
        os.makedirs(os.path.join(p, "half"))
        raise RuntimeError("killed mid-export")

    with pytest.raises(RuntimeError):
        files.replace_dir(broken, target)
    assert os.listdir(target) == ["v1"] and os.listdir(tmp_path) == ["saved_model"]
    files.replace_dir(lambda p: os.makedirs(os.path.join(p, "v2")), target)
    assert os.listdir(target) == ["v2"] and os.listdir(tmp_path) == ["saved_model"]


def test_stale_temporaries_are_removed_and_an_orphaned_old_dir_restored(tmp_path):
    (tmp_path / ".model.keras.tmp-a1b2c3d4.keras").write_text("half a model")
    os.makedirs(tmp_path / ".saved_model.tmp-x_y9z8w7")
    # Killed between renames.
    os.makedirs(tmp_path / ".saved_model.tmp-abcdefgh.old" / "variables")
    (tmp_path / "model.keras").write_text("good")
    (tmp_path / ".model.keras.tmp-123.keras").write_text("the user's, looking alike")
    files.remove_stale_tmp(tmp_path, {"model.keras", "saved_model"}.__contains__)
    assert sorted(os.listdir(tmp_path)) == [".model.keras.tmp-123.keras", "model.keras",
                                            "saved_model"]
    assert os.listdir(tmp_path / "saved_model") == ["variables"]


def test_ensure_writable_dir_creates_and_checks(tmp_path):
    files.ensure_writable_dir(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "f").write_text("")
    with pytest.raises(errors.OutputError, match=r"cannot write to model_dir=.*/f/x") as err:
        files.ensure_writable_dir(tmp_path / "f" / "x")
    assert err.value.as_flags().startswith(f"cannot write to --model_dir={tmp_path}/f/x: ")
    with pytest.raises(errors.OutputError, match=r"cannot write to output_dir=.*/f/x"):
        files.ensure_writable_dir(tmp_path / "f" / "x", "output_dir")

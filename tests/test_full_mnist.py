"""Full MNIST offline: --mnist_dir with the four files as published, where the machine has them
(../shared/data/mnist beside the repository); each bad copy is one line naming the file."""

import gzip
import json
import os
import shutil

import pytest

from helpers import ROOT, run_module
from mnist_rnn import errors
from mnist_rnn.data import sources

MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"
NAMES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
         "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")

pytestmark = pytest.mark.skipif(
    not all((MNIST_DIR / name).is_file() for name in NAMES),
    reason=f"full MNIST's four published files are not in {MNIST_DIR}")


@pytest.fixture
def copy(tmp_path):
    """A copy of the four files, to spoil one."""
    target = tmp_path / "mnist"
    target.mkdir()
    for name in NAMES:
        shutil.copyfile(MNIST_DIR / name, target / name)
    return target


def refused(mnist_dir, tmp_path) -> str:
    data_dir = tmp_path / "tfds"
    with pytest.raises(errors.DatasetUnavailableError) as err:
        sources.resolve_dataset("auto", str(data_dir), mnist_dir=str(mnist_dir))
    assert not data_dir.exists()  # Nothing created.
    message = err.value.as_flags()
    assert "\n" not in message
    return message


def test_a_missing_file_is_one_line_naming_it(copy, tmp_path):
    (copy / "t10k-labels-idx1-ubyte.gz").unlink()
    assert refused(copy, tmp_path) == (
        f"{copy}/t10k-labels-idx1-ubyte.gz is missing: --mnist_dir must hold the four MNIST "
        f"files as published ({', '.join(NAMES)})")


def test_a_truncated_file_is_one_line_naming_its_size(copy, tmp_path):
    path = copy / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:10_000])
    assert refused(copy, tmp_path) == (
        f"{path} has 10,000 bytes, not the published file's 28,881: use the file as "
        "published, not cut short or compressed again")


def test_a_recompressed_file_is_one_line(copy, tmp_path):
    path = copy / "t10k-labels-idx1-ubyte.gz"
    content = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(content, compresslevel=9, mtime=0))
    assert refused(copy, tmp_path).startswith(f"{path} has ")


def test_an_altered_file_of_the_right_size_is_one_line_naming_its_sum(copy, tmp_path):
    path = copy / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(path.read_bytes())
    content[-100] ^= 0xFF
    path.write_bytes(bytes(content))
    message = refused(copy, tmp_path)
    assert message.startswith(f"{path} has sha256 ")
    assert "not the published file's f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924" \
           "204aec6" in message


def test_a_mnist_dir_that_is_not_a_directory_or_beside_the_sample_is_one_line(tmp_path):
    assert refused(tmp_path / "nowhere", tmp_path).startswith(
        f"--mnist_dir={tmp_path}/nowhere is not a directory: pass the directory that holds")
    with pytest.raises(errors.DatasetUnavailableError, match="leave one of the two out"):
        sources.resolve_dataset("mnist_sample", str(tmp_path), mnist_dir=str(MNIST_DIR))


def test_the_original_static_flagfile_passes_090_on_full_mnist_prepared_offline(tmp_path):
    """The user's command: TFDS prepares 60,000 / 10,000 from the files into a new data dir,
    and the original static program's settings pass 0.90, as the original did."""
    data_dir, model_dir = tmp_path / "tfds", tmp_path / "static"
    result = run_module("mnist_rnn.train", "--flagfile=flags/static_rnn.flags",
                        f"--mnist_dir={MNIST_DIR}", f"--data_dir={data_dir}",
                        f"--model_dir={model_dir}", "--noexport", "--notensorboard",
                        timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Preparing full MNIST once, from {MNIST_DIR}" in result.stdout
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["dataset"]["name"] == "mnist"
    assert (metrics["dataset"]["train_size"], metrics["dataset"]["test_size"]) == (60000, 10000)
    assert metrics["reached_target"] and metrics["final_test_accuracy"] >= 0.90
    assert os.path.isdir(data_dir / "mnist")

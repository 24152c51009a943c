import fcntl
import os

USER_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from helpers import keras_probabilities, tiny_config  # noqa: E402
from mnist_rnn import compat  # noqa: E402
from mnist_rnn.data import pipeline, sample as mnist_sample
from mnist_rnn.train import train_and_evaluate  # noqa: E402

# TensorFlow imports JAX where it is installed, and JAX sets TF_CPP_MIN_LOG_LEVEL: the commands
# that tests run must start as they do from a user's shell.
if USER_LOG_LEVEL is None:
    os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    """A private TFDS data dir: the sample is prepared there once per session."""
    return str(tmp_path_factory.mktemp("tensorflow_datasets"))


@pytest.fixture(scope="session")
def sample(tfds_dir):
    return pipeline.load_datasets("mnist_sample", timesteps=28, batch_size=100, seed=0,
                                  data_dir=tfds_dir)


@pytest.fixture(scope="session", params=["dynamic"] if compat.JAX else ["static", "dynamic"])
def trained(request, tmp_path_factory, tfds_dir, worker_id):
    """(config, model, metrics) of one short training run per variant, shared by tests and by
    xdist's workers. On TensorFlow, the static one exports the plain SavedModel: compiled, its
    unrolled graph takes 2-3 s per batch size in every process that serves it (its compiled
    path is checked on 7 steps). On JAX, every export is compiled, there is no .tflite, and
    the dynamic variant only: the static one's training step compiles for 20 s (its export is
    checked untrained, in test_serving)."""
    plain = request.param == "static" and not compat.JAX
    config = tiny_config(shared_dir(tmp_path_factory, worker_id) / request.param, tfds_dir,
                         rnn=request.param, tensorboard=True, export_tflite=not compat.JAX,
                         saved_model_xla="off" if plain else "auto")
    # The first worker trains; the others wait, and get the finished run as a rerun of the
    # same command does (model.keras and metrics.json, read back).
    os.makedirs(config.model_dir, exist_ok=True)
    with open(os.path.join(os.path.dirname(config.model_dir), ".trained.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        model, metrics = train_and_evaluate(config)
    return config, model, metrics


def shared_dir(tmp_path_factory, worker_id: str):
    """A directory of this test session that every xdist worker sees (each has a base
    directory of its own below the session's)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@pytest.fixture(scope="session")
def test_digits():
    """The sample's test digits as uint8 images, with labels."""
    images, labels = mnist_sample.load_arrays()
    rows = mnist_sample.split_indices(labels, "test")
    return images[rows], labels[rows]


@pytest.fixture
def digit_files(trained, test_digits, tmp_path):
    """PNGs of the three test digits the model is surest of and right about: as-is,
    inverted (dark on light) and enlarged to 84x84 in RGB."""
    _, model, _ = trained
    images, labels = test_digits
    p = keras_probabilities(model, images)
    right = np.flatnonzero(p.argmax(1) == labels)
    best = right[np.argsort(-p[right].max(1))][:3]
    paths = [tmp_path / "plain.png", tmp_path / "inverted.png", tmp_path / "big_rgb.png"]
    Image.fromarray(images[best[0]]).save(paths[0])
    Image.fromarray(255 - images[best[1]]).save(paths[1])
    Image.fromarray(images[best[2]]).resize((84, 84), Image.BICUBIC).convert("RGB").save(paths[2])
    return [str(p) for p in paths], [int(labels[i]) for i in best]

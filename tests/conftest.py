import pytest

from helpers import tiny_config
from mnist_rnn import data, trainer


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    """A private TFDS data dir: the sample is prepared there once per session."""
    return str(tmp_path_factory.mktemp("tensorflow_datasets"))


@pytest.fixture(scope="session")
def sample(tfds_dir):
    return data.load_datasets("mnist_sample", timesteps=28, batch_size=100, seed=0,
                              data_dir=tfds_dir)


@pytest.fixture(scope="session", params=["static", "dynamic"])
def trained(request, tmp_path_factory, tfds_dir):
    """(config, model, metrics) of one short training run per variant, shared by tests."""
    config = tiny_config(tmp_path_factory.mktemp(request.param), tfds_dir, rnn=request.param,
                         tensorboard=True, export_tflite=True)
    model, metrics = trainer.train_and_evaluate(config)
    return config, model, metrics

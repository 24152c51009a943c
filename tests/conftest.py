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
    """(config, model, metrics) of one short training run per variant, shared by tests. The
    static one exports the plain SavedModel: compiled, its unrolled graph takes 2-3 s per batch
    size in every process that serves it (its compiled path is checked on 7 steps)."""
    config = tiny_config(tmp_path_factory.mktemp(request.param), tfds_dir, rnn=request.param,
                         tensorboard=True, export_tflite=True,
                         saved_model_xla="auto" if request.param == "dynamic" else "off")
    model, metrics = trainer.train_and_evaluate(config)
    return config, model, metrics

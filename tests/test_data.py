import hashlib
import os
import socket
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from helpers import tmpfs
from mnist_rnn import errors
from mnist_rnn.data import pipeline, sample, sources


@pytest.mark.parametrize("timesteps", [28, 7, 196, 784])
def test_pipeline_shapes_dtypes_and_range(tfds_dir, timesteps):
    ds = pipeline.load_datasets("mnist_sample", timesteps=timesteps, batch_size=50,
                                data_dir=tfds_dir)
    assert (ds.timesteps, ds.features) == (timesteps, 784 // timesteps)
    for split in (ds.train, ds.test):
        x, y = next(iter(split))
        assert x.shape == (50, timesteps, 784 // timesteps)
        assert x.dtype == tf.float32 and y.dtype == tf.int32
        assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
        assert float(tf.reduce_max(x)) > 0.9  # Real digits have ink near 255.
        assert set(y.numpy()) <= set(range(10))


def test_invalid_timesteps_is_rejected(tfds_dir):
    with pytest.raises(errors.UserError, match="timesteps must divide 784"):
        pipeline.load_datasets("mnist_sample", timesteps=30, data_dir=tfds_dir)


def _digest(images):
    return {hashlib.sha1(im.tobytes()).hexdigest() for im in images}


def test_sample_split_is_stratified_and_disjoint(sample):
    counts, digests = {}, {}
    for split in ("train", "test"):
        ds = getattr(sample, split).unbatch().batch(10_000)
        x, y = next(iter(ds))
        counts[split] = np.bincount(y.numpy(), minlength=10)
        digests[split] = _digest(x.numpy())
    assert (sample.train_size, sample.test_size) == (4000, 1000)
    assert list(counts["train"]) == [400] * 10
    assert list(counts["test"]) == [100] * 10
    assert not digests["train"] & digests["test"]


def test_packaged_sample_is_the_documented_file():
    images, labels = sample.load_arrays()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert list(np.bincount(labels)) == [500] * 10
    assert (np.diff(labels.astype(int)) >= 0).all()  # Sorted by label, like the source.
    # Fingerprint of the converted source file (see README, "Data").
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    assert digest == "809ec085d551285cf9efad12c42a6aead98c62f96eb9936cc5b778870773e50d"


def test_convert_csv_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, 256, (3, 784)), [[0], [5], [9]]], axis=1)
    csv = tmp_path / "digits.csv"
    np.savetxt(csv, rows, fmt="%d", delimiter=",")
    images, labels = sample.convert_csv(csv, tmp_path / "out.npz")
    with np.load(tmp_path / "out.npz") as npz:
        np.testing.assert_array_equal(npz["images"].reshape(3, 784), rows[:, :784])
        np.testing.assert_array_equal(npz["labels"], [0, 5, 9])


@pytest.fixture
def mock_mnist(tmp_path):
    """TFDS mocks MNIST's examples; MNIST's real split sizes are written as its metadata."""
    builder = tfds.builder("mnist", data_dir=str(tmp_path))
    builder.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name=name, shard_lengths=[size], num_bytes=0)
        for name, size in (("train", 60000), ("test", 10000))
    ]))
    os.makedirs(builder.data_dir)
    builder.info.write_to_directory(builder.data_dir)
    with tfds.testing.mock_data(num_examples=64, data_dir=str(tmp_path)):
        yield str(tmp_path)


def test_full_mnist_path_through_tfds_mock_data(mock_mnist):
    def no_network():
        raise AssertionError("prepared data must not trigger a network probe")

    name = sources.resolve_dataset("auto", mock_mnist, probe=no_network)
    ds = pipeline.load_datasets(name, timesteps=14, batch_size=16, seed=1, data_dir=mock_mnist)
    x, y = next(iter(ds.train))
    xt, yt = next(iter(ds.test))
    assert ds.name == "mnist" and (ds.train_size, ds.test_size) == (60000, 10000)
    assert x.shape == (16, 14, 56) and xt.shape == (16, 14, 56)
    assert x.dtype == tf.float32 and y.dtype == yt.dtype == tf.int32
    assert 0.0 <= float(tf.reduce_min(x)) <= float(tf.reduce_max(x)) <= 1.0
    assert len(list(ds.train)) == 4  # 64 mocked examples in batches of 16.


def labels_of(dataset):
    return np.concatenate([y.numpy() for _, y in dataset])


def test_train_order_is_seeded_and_changes_each_epoch(tfds_dir):
    a = pipeline.load_datasets("mnist_sample", seed=3, data_dir=tfds_dir)
    b = pipeline.load_datasets("mnist_sample", seed=3, data_dir=tfds_dir)
    other = pipeline.load_datasets("mnist_sample", seed=4, data_dir=tfds_dir)
    two_epochs = labels_of(a.train_epochs(0, 2))
    first, second = two_epochs[:4000], two_epochs[4000:]
    np.testing.assert_array_equal(first, labels_of(a.train))  # Repeatable...
    np.testing.assert_array_equal(two_epochs, labels_of(b.train_epochs(0, 2)))  # ...by seed,
    assert not np.array_equal(first, second)  # a new order each epoch,
    assert not np.array_equal(first, labels_of(other.train))  # another for another seed.
    for epoch in (first, second):
        assert list(np.bincount(epoch)) == [400] * 10  # Every example once per epoch.
    assert len(set(first[:100])) >= 8  # Shuffled: the sorted source would give one class.


def test_a_resumed_run_sees_the_same_batches(tfds_dir):
    ds = pipeline.load_datasets("mnist_sample", batch_size=300, seed=5, data_dir=tfds_dir)
    assert ds.steps_per_epoch == 14  # 13 full batches and one of 100.
    full = list(ds.train_epochs(0, 3))
    for epoch, skip in ((0, 5), (1, 0), (1, 13), (2, 7)):
        resumed = list(ds.train_epochs(epoch, 3, skip))
        expected = full[epoch * 14 + skip:]
        assert len(resumed) == len(expected)
        for (x, y), (x2, y2) in zip(resumed, expected):
            np.testing.assert_array_equal(y, y2)
            np.testing.assert_array_equal(x, x2)


# Availability: no test ever reaches the internet; a probe that fails is simulated on loopback.

@pytest.fixture
def silent_server():
    """A loopback port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"http://127.0.0.1:{server.getsockname()[1]}/mnist.gz"
    server.close()


def test_probe_gives_up_within_its_timeout(silent_server):
    began = time.monotonic()
    assert not sources.network_reachable(silent_server, timeout=1.0)
    assert time.monotonic() - began < 3


def test_probe_sees_an_answering_server():
    import http.server

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    try:  # The handler answers 501 to HEAD: an answer all the same.
        assert sources.network_reachable(f"http://127.0.0.1:{server.server_port}/", timeout=5)
    finally:
        server.server_close()


def test_auto_falls_back_to_the_sample_when_offline(tmp_path, caplog):
    assert sources.resolve_dataset("auto", str(tmp_path), probe=lambda: False) == "mnist_sample"
    assert "mnist_sample" in caplog.text and "4,000 train" in caplog.text


def test_mnist_offline_fails_fast_with_one_line(tmp_path, silent_server):
    began = time.monotonic()
    with pytest.raises(errors.DatasetUnavailableError) as err:
        sources.resolve_dataset(
            "mnist", str(tmp_path), probe=lambda: sources.network_reachable(silent_server))
    assert time.monotonic() - began < 10
    message = str(err.value)
    assert "\n" not in message and message.endswith("or use dataset=mnist_sample")
    assert err.value.as_flags().endswith("pass --data_dir where it is prepared, or use "
                                         "--dataset=mnist_sample")


def test_auto_uses_mnist_when_downloadable(tmp_path):
    assert sources.resolve_dataset("auto", str(tmp_path), probe=lambda: True) == "mnist"


def test_sample_never_probes(tmp_path):
    def probe():
        raise AssertionError("the sample must not touch the network")

    assert sources.resolve_dataset("mnist_sample", str(tmp_path), probe=probe) == "mnist_sample"


@pytest.fixture
def read_only_dir(tmp_path):
    """An empty directory on a read-only filesystem."""
    with tmpfs(tmp_path / "read_only", "ro,size=1m") as path:
        yield path


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(errors.DatasetUnavailableError) as err:
        sources.resolve_dataset("auto", str(tmp_path / "file"), probe=lambda: False)
    assert err.value.as_flags().startswith(f"--data_dir={tmp_path / 'file'} is not a directory")


def test_a_read_only_data_dir_without_the_dataset_is_one_line(read_only_dir):
    with pytest.raises(errors.DatasetUnavailableError) as err:
        sources.resolve_dataset("mnist_sample", read_only_dir)
    assert err.value.as_flags() == (
        f"cannot prepare mnist_sample in --data_dir={read_only_dir}: Read-only file system; "
        "pass a writable --data_dir, or one where mnist_sample is prepared")

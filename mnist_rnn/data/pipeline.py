"""MNIST as `tf.data` pipelines of row sequences, from tensorflow-datasets: `load_datasets`
builds the train and test pipelines through the same `tfds.load` call for both, preparing the
dataset first where it is not yet (sources.py).
"""

import dataclasses
import functools
import math
import sys
from typing import TextIO

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mnist_rnn.config import PIXELS, TrainConfig, check
from mnist_rnn.data import sources
from mnist_rnn.data.sequences import sequence_length, to_sequences

DEFAULTS = TrainConfig()  # Training's defaults, for what a caller leaves unsaid.


@dataclasses.dataclass
class Datasets:
    """The test pipeline, and the train examples from which `train_epochs` builds batches."""

    examples: tf.data.Dataset  # Train (sequence, label) pairs, mapped and cached.
    test: tf.data.Dataset
    name: str
    train_size: int
    test_size: int
    timesteps: int
    features: int
    batch_size: int
    seed: int
    variable_length: bool = False
    bucket_boundaries: tuple = ()  # Length buckets when variable_length.
    bucket_sizes: tuple = ()  # Training examples per bucket.

    @property
    def steps_per_epoch(self) -> int:
        if self.variable_length:  # Each bucket ends its epoch with its own partial batch.
            return sum(math.ceil(n / self.batch_size) for n in self.bucket_sizes)
        return math.ceil(self.train_size / self.batch_size)

    @property
    def samples_per_step(self) -> float:
        """Training examples per step, over an epoch whose last batches may be smaller."""
        return self.train_size / self.steps_per_epoch

    def train_epochs(self, first_epoch: int, last_epoch: int,
                     skip_batches: int = 0) -> tf.data.Dataset:
        """Batches of epochs [first_epoch, last_epoch), without the first `skip_batches`.

        Each epoch's order is a function of (seed, epoch) alone, so a run resumed at any
        step sees exactly the batches the uninterrupted run would have seen.
        """

        batches = [
            self._batch(self.examples.shuffle(
                self.train_size, seed=self.seed * 1_000_003 + index,
                reshuffle_each_iteration=False,
            ))
            for index in range(first_epoch, last_epoch)
        ]
        options = tf.data.Options()
        # Multi-worker runs split each global batch between workers, whatever the files.
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        return (functools.reduce(tf.data.Dataset.concatenate, batches)
                .skip(skip_batches).prefetch(tf.data.AUTOTUNE).with_options(options))

    @property
    def train(self):
        """The first epoch's batches."""
        return self.train_epochs(0, 1)

    def _batch(self, examples):
        if not self.variable_length:
            return examples.batch(self.batch_size)
        # Like lengths together, so that each batch's longest sequence is short.
        return examples.bucket_by_sequence_length(
            lambda x, y: sequence_length(x),
            list(self.bucket_boundaries),
            [self.batch_size] * (len(self.bucket_boundaries) + 1),
            no_padding=True,  # Full-length sequences; the model strips and pads per batch.
        )


def length_buckets(timesteps: int, count: int = 7) -> tuple[int, ...]:
    """Bucket boundaries for `timesteps`-step sequences: `count` buckets of equal width."""
    width = max(1, timesteps // count)
    return tuple(range(width + 1, timesteps + 1, width))


def load_for(config: TrainConfig, name: str) -> Datasets:
    """The train and test pipelines of dataset `name` (resolved) as `config` wants them."""
    return load_datasets(name, config.timesteps, config.batch_size, config.seed,
                         config.data_dir, config.variable_length, mnist_dir=config.mnist_dir)


def load_datasets(name: str, timesteps: int = DEFAULTS.timesteps,
                  batch_size: int = DEFAULTS.batch_size, seed: int = DEFAULTS.seed,
                  data_dir: str | None = None, variable_length: bool = False,
                  out: TextIO = sys.stdout, mnist_dir: str | None = None) -> Datasets:
    """Train and test pipelines of (sequences, labels) batches for TFDS dataset `name`.

    variable_length: batches of training sequences of similar length (without blank leading
    and trailing steps), for a model that strips and masks them (model.build_model).
    mnist_dir: the published MNIST files, from which `mnist` is prepared if it is not yet."""
    check("timesteps", timesteps)
    if name == "mnist_sample":
        sources.prepare_sample(data_dir, out)
    elif mnist_dir is not None:
        sources.prepare_mnist(mnist_dir, data_dir, out)
    (train, test), info = tfds.load(
        name,
        split=["train", "test"],
        data_dir=data_dir,
        as_supervised=True,
        with_info=True,
        shuffle_files=False,  # Order comes from the seeded shuffle below.
    )
    train_size = info.splits["train"].num_examples
    test_size = info.splits["test"].num_examples

    def preprocess(image, label):
        return to_sequences(image, timesteps)[0], tf.cast(label, tf.int32)

    autotune = tf.data.AUTOTUNE
    # map -> cache here; shuffle (seeded per epoch) -> batch -> prefetch in train_epochs.
    examples = train.map(preprocess, num_parallel_calls=autotune).cache()
    test = (
        test.map(preprocess, num_parallel_calls=autotune)
        .batch(batch_size)
        .cache()
        .prefetch(autotune)
    )
    datasets = Datasets(examples, test, name, train_size, test_size, timesteps,
                        PIXELS // timesteps, batch_size, seed, variable_length)
    if variable_length:
        boundaries = length_buckets(timesteps)
        lengths = np.fromiter(
            examples.map(lambda x, y: sequence_length(x)).as_numpy_iterator(), np.int32)
        datasets.bucket_boundaries = boundaries
        # bucket_by_sequence_length: bucket i holds lengths in [b[i-1], b[i]).
        datasets.bucket_sizes = tuple(
            np.bincount(np.searchsorted(boundaries, lengths, side="right"),
                        minlength=len(boundaries) + 1).tolist())
    return datasets

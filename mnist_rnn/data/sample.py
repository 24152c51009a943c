"""The bundled 5,000-digit MNIST sample, served as the TFDS dataset `mnist_sample`.

Importing this module registers the builder, so `tfds.load("mnist_sample")` works like
`tfds.load("mnist")` but never touches the network: its source is package data.

The source file holds 500 digits per class, sorted by label. The split is stratified:
within each class the first 400 rows are `train` and the last 100 are `test`.

Regenerate the package data from the original CSV with:
    python -m mnist_rnn.data.sample path/to/mnist_5k.csv.gz
"""

import gzip
import importlib.resources
import sys

import numpy as np
import tensorflow_datasets as tfds

from mnist_rnn.config import NUM_CLASSES, PIXELS, SIDE

TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100
SAMPLE_FILE = "mnist_sample.npz"


def load_arrays():
    """Returns (images uint8 [5000, 28, 28], labels uint8 [5000]) from the package data."""
    with importlib.resources.files("mnist_rnn.data").joinpath(SAMPLE_FILE).open("rb") as f:
        with np.load(f) as npz:
            return npz["images"], npz["labels"]


def split_indices(labels, split):
    """Stratified split: per class, the first TRAIN_PER_CLASS rows train, the last
    TEST_PER_CLASS test."""
    indices = []
    for digit in range(NUM_CLASSES):
        rows = np.flatnonzero(labels == digit)
        if len(rows) != TRAIN_PER_CLASS + TEST_PER_CLASS:
            raise ValueError(
                f"the MNIST sample has {len(rows)} digits of class {digit}, expected "
                f"{TRAIN_PER_CLASS + TEST_PER_CLASS}: reinstall the package"
            )
        indices.append(rows[:TRAIN_PER_CLASS] if split == "train" else rows[-TEST_PER_CLASS:])
    return np.concatenate(indices)


class MnistSample(tfds.core.GeneratorBasedBuilder):
    """5,000 real MNIST digits (500 per class), bundled with mnist_rnn."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "4,000 train / 1,000 test, stratified by class."}

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(SIDE, SIDE, 1)),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="http://yann.lecun.com/exdb/mnist/",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Package data only: nothing to download.
        images, labels = load_arrays()
        return {
            split: self._generate_examples(images, labels, split_indices(labels, split))
            for split in ("train", "test")
        }

    def _generate_examples(self, images, labels, indices):
        for i in indices:
            yield int(i), {"image": images[i][..., None], "label": int(labels[i])}


def convert_csv(csv_path, npz_path):
    """Converts the source CSV (784 pixels then the label per row) to the packaged .npz."""
    opener = gzip.open if str(csv_path).endswith(".gz") else open
    with opener(csv_path, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    if rows.shape[1] != PIXELS + 1 or rows.min() < 0 or rows.max() > 255:
        raise ValueError(f"{csv_path}: expected rows of {PIXELS} pixels (0-255) and a label")
    images = rows[:, :PIXELS].astype(np.uint8).reshape(-1, SIDE, SIDE)
    labels = rows[:, PIXELS].astype(np.uint8)
    np.savez_compressed(npz_path, images=images, labels=labels)
    return images, labels


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m mnist_rnn.data.sample path/to/mnist_5k.csv.gz")
    out = importlib.resources.files("mnist_rnn.data").joinpath(SAMPLE_FILE)
    convert_csv(sys.argv[1], out)
    print(f"wrote {out}")

"""Images as sequences: one timestep of an image, each sequence's inked span, and the
stripping, masking and bucketing of blank steps that --variable_length builds on."""

import numpy as np
import pytest
import tensorflow as tf

from mnist_rnn.data import pipeline, sample, sequences
from mnist_rnn.model.lstm import build_model


def test_sequence_is_the_image_row_by_row():
    image = tf.reshape(tf.range(784, dtype=tf.int32) % 256, [28, 28, 1])
    seq = sequences.to_sequences(tf.cast(image, tf.uint8), 28)[0].numpy()
    np.testing.assert_allclose(seq * 255, image.numpy()[..., 0], atol=1e-4)


@pytest.mark.keras2
@pytest.mark.jax
def test_the_ink_mask_covers_each_inked_span_and_masking_pads_outside_it():
    """ink_mask and mask_blank_steps run inside a model on every runtime: they must agree
    with the TensorFlow span that stripping uses."""
    x = digits(0, 1000, 2500, 4500)
    x = np.concatenate([x, np.zeros((1, 28, 28), np.float32)])  # And a blank image.
    mask = np.asarray(sequences.ink_mask(x))
    masked = np.asarray(sequences.mask_blank_steps(x))
    first, lengths = (t.numpy() for t in sequences.ink_spans(tf.constant(x)))
    for i in range(len(x)):
        span = np.zeros(28, bool)
        span[first[i]:first[i] + lengths[i]] = True
        np.testing.assert_array_equal(mask[i], span)
        np.testing.assert_array_equal(masked[i][span], x[i][span])
        assert (masked[i][~span] == sequences.PAD).all()
    assert mask[-1].sum() == 1 and mask[-1][0]  # A blank image keeps its first step.


def digits(*indices, timesteps=28):
    images, _ = sample.load_arrays()
    return sequences.to_sequences(images[list(indices)], timesteps).numpy()


@pytest.mark.parametrize("timesteps", [28, 784])
def test_stripping_drops_blank_leading_and_trailing_steps(timesteps):
    x = digits(0, 4500, timesteps=timesteps)
    stripped = sequences.strip_blank_steps(x).numpy()
    lengths = [int(sequences.sequence_length(s)) for s in x]
    assert stripped.shape[1] == max(lengths) < timesteps
    for row, sequence, length in zip(stripped, x, lengths):
        ink = np.flatnonzero(sequence.max(axis=1) > 0)
        assert length == ink[-1] - ink[0] + 1
        np.testing.assert_array_equal(row[:length], sequence[ink[0]:ink[-1] + 1])
        assert (row[length:] == sequences.PAD).all()


def test_a_blank_image_keeps_one_step():
    blank = np.zeros((1, 28, 28), np.float32)
    assert int(sequences.sequence_length(blank[0])) == 1
    assert sequences.strip_blank_steps(blank).shape == (1, 1, 28)


def test_masking_gives_the_same_logits_as_the_unpadded_sequence():
    model = build_model("dynamic", 16, 28, 28, seed=0, variable_length=True)
    plain = build_model("dynamic", 16, 28, 28, seed=0)
    plain.set_weights(model.get_weights())
    x = digits(0, 1000, 2500, 4500)
    lengths = [int(sequences.sequence_length(s)) for s in x]
    assert len(set(lengths)) > 1  # The batch really is padded.
    batched = model(x).numpy()
    for i, sequence in enumerate(x):
        own_length_only = sequences.strip_blank_steps(sequence[None]).numpy()
        assert own_length_only.shape[1] == lengths[i]
        np.testing.assert_allclose(batched[i], plain(own_length_only).numpy()[0], atol=1e-5)


def test_variable_length_batches_are_bucketed(tfds_dir):
    ds = pipeline.load_datasets("mnist_sample", 28, 100, data_dir=tfds_dir, variable_length=True)
    batches = list(ds.train)
    assert len(batches) == ds.steps_per_epoch and sum(len(y) for _, y in batches) == 4000
    spans = []
    for x, _ in batches:
        lengths = [int(sequences.sequence_length(s)) for s in x]
        bucket = np.searchsorted(ds.bucket_boundaries, lengths, side="right")
        assert len(set(bucket)) == 1  # One length bucket per batch.
        spans.append(sequences.strip_blank_steps(x).shape[1])
    assert np.mean(spans) < 24  # Well under the 28 rows of a fixed-length batch.

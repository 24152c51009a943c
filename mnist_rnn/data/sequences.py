"""Images as sequences: what one timestep of an image is, and where its ink begins and ends.

Shared by the input pipeline, the model and the serving graph; needs TensorFlow, never TFDS.
The input pipeline always runs on TensorFlow, and so do `to_sequences` and the stripping of
blank steps (whose length depends on the data); `ink_mask` and `mask_blank_steps` run inside a
model on every runtime (keras.ops), at a fixed length, as XLA needs.
"""

import numpy as np
import tensorflow as tf

from mnist_rnn import compat
from mnist_rnn.config import PIXELS, SIDE

PAD = -1.0  # Pads stripped sequences; pixels lie in [0, 1], so it is never data.


def to_sequences(images: tf.Tensor, timesteps: int) -> tf.Tensor:
    """uint8 images [batch, 28, 28(, 1)] -> float32 [batch, timesteps, 784 / timesteps] in
    [0, 1], row-major."""
    pixels = tf.cast(tf.reshape(images, [-1, PIXELS]), tf.float32) / 255.0
    return tf.reshape(pixels, [-1, timesteps, PIXELS // timesteps])


def to_images(sequences) -> np.ndarray:
    """The inverse of to_sequences, exact: float [n, T, F] in [0, 1] -> uint8 images
    [n, 28, 28]."""
    return np.round(np.asarray(sequences).reshape(-1, SIDE, SIDE) * 255).astype(np.uint8)


def ink_spans(sequences: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(first, length) int32 [batch] of [batch, T, F] sequences: the first step with ink and
    the steps from it to the last one with ink. A sequence without ink spans its first step."""
    ink = tf.reduce_any(sequences > 0, axis=-1)  # [batch, T]
    steps = tf.shape(sequences)[1]
    has_ink = tf.reduce_any(ink, axis=1)
    as_int = tf.cast(ink, tf.int32)
    first = tf.where(has_ink, tf.argmax(as_int, axis=1, output_type=tf.int32), 0)
    last = tf.where(
        has_ink, steps - 1 - tf.argmax(as_int[:, ::-1], axis=1, output_type=tf.int32), 0)
    return first, last - first + 1


def sequence_length(sequence: tf.Tensor) -> tf.Tensor:
    """Length of one [T, F] sequence without its blank leading and trailing steps (>= 1)."""
    return ink_spans(sequence[None])[1][0]


def strip_blank_steps(sequences: tf.Tensor) -> tf.Tensor:
    """[batch, T, F] -> [batch, L, F]: each sequence without its blank leading and trailing
    steps, left-aligned and padded with PAD up to the longest of the batch (L).

    Like `sequence_length` in tf.nn.dynamic_rnn, each sequence keeps its own length; the
    model masks the PAD steps, so padding does not change its result."""
    first, lengths = ink_spans(sequences)
    steps = tf.shape(sequences)[1]
    # Every length is >= 1; the 1 also gives an empty batch its one (empty) step.
    offsets = tf.range(tf.reduce_max(tf.concat([lengths, [1]], 0)))[None, :]
    rows = tf.gather(sequences, tf.minimum(first[:, None] + offsets, steps - 1), batch_dims=1)
    return tf.where((offsets < lengths[:, None])[..., None], rows, PAD)


def ink_mask(sequences):
    """bool [batch, T] of [batch, T, F] sequences: True on the steps of each inked span (see
    ink_spans), in keras.ops, so that it runs inside a model on every runtime."""
    ops = compat.ops()
    ink = ops.cast(ops.any(sequences > 0, axis=-1), "int32")  # [batch, T]
    after_first = ops.cumsum(ink, axis=1) > 0
    before_last = ops.flip(ops.cumsum(ops.flip(ink, axis=1), axis=1), axis=1) > 0
    blank = ops.logical_not(ops.any(ink > 0, axis=1, keepdims=True))
    first_step = ops.expand_dims(ops.arange(ops.shape(sequences)[1]) == 0, 0)
    return ops.logical_or(ops.logical_and(after_first, before_last),
                          ops.logical_and(blank, first_step))


def mask_blank_steps(sequences):
    """[batch, T, F] -> the same, with PAD on the steps outside each sequence's inked span:
    strip_blank_steps at a fixed length. The masked LSTM holds its state over PAD steps,
    so the result is the same as stripping them."""
    return compat.ops().where(ink_mask(sequences)[..., None], sequences, PAD)

"""The SavedModel for serving: raw images in, probabilities and classes out.

Signatures:
- `serving_default`: `images` uint8 [batch, 28, 28] (what TF Serving clients send; the
  preprocessing into sequences happens in the graph) -> `probabilities` float32 [batch, 10],
  `class` int64 [batch].
- `serve_sequences`: `sequences` float32 [batch, timesteps, features] in [0, 1], already
  preprocessed as in training -> the same two outputs.
"""

import tensorflow as tf

from mnist_rnn import compat, data
from mnist_rnn.compat import keras

IMAGE_SIGNATURE = "serving_default"
SEQUENCE_SIGNATURE = "serve_sequences"


def model_timesteps(model):
    """The model's steps per image, derived from its features per step."""
    return data.PIXELS // model.input_shape[-1]


def _outputs(logits):
    return {
        "probabilities": tf.nn.softmax(logits, axis=-1),
        "class": tf.argmax(logits, axis=-1, output_type=tf.int64),
    }


def export_saved_model(model, path):
    """Writes `model` as a SavedModel with the two signatures above to `path`."""
    timesteps = model_timesteps(model)
    features = model.input_shape[-1]

    def serve_images(images):
        return _outputs(model(data.to_sequences(images, timesteps), training=False))

    def serve_sequences(sequences):
        return _outputs(model(sequences, training=False))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        IMAGE_SIGNATURE, serve_images,
        input_signature=[tf.TensorSpec([None, 28, 28], tf.uint8, name="images")],
    )
    archive.add_endpoint(
        SEQUENCE_SIGNATURE, serve_sequences,
        input_signature=[
            tf.TensorSpec([None, model.input_shape[1], features], tf.float32, name="sequences")
        ],
    )
    compat.write_out(archive, path)

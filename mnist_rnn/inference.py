"""Load a trained model, `.keras` file or exported SavedModel, behind one interface."""

import os

from mnist_rnn.compat import keras
import numpy as np
import tensorflow as tf

from mnist_rnn import data, export, images
from mnist_rnn.errors import ImageError, ModelLoadError


class Predictor:
    """probabilities [n, 10] from uint8 images [n, 28, 28] or from float sequences."""

    def __init__(self, path, timesteps, images_fn, sequences_fn):
        self.path = path
        self.timesteps = timesteps
        self._images_fn = images_fn
        self._sequences_fn = sequences_fn

    def predict_images(self, images):
        return np.asarray(self._images_fn(np.asarray(images, np.uint8)))

    def predict_sequences(self, sequences):
        return np.asarray(self._sequences_fn(tf.convert_to_tensor(sequences, tf.float32)))


def from_keras_model(model, path="<in memory>"):
    timesteps = export.model_timesteps(model)

    @tf.function(reduce_retracing=True)
    def probabilities(sequences):
        return tf.nn.softmax(model(sequences, training=False), axis=-1)

    return Predictor(
        path, timesteps,
        lambda images: probabilities(data.to_sequences(images, timesteps)),
        probabilities,
    )


def from_saved_model(loaded, path):
    signatures = loaded.signatures
    missing = {export.IMAGE_SIGNATURE, export.SEQUENCE_SIGNATURE} - set(signatures)
    if missing:
        raise ModelLoadError(
            f"{path}: SavedModel lacks the signature(s) {', '.join(sorted(missing))}; "
            "re-export it with python -m mnist_rnn.train"
        )
    images_fn = signatures[export.IMAGE_SIGNATURE]
    sequences_fn = signatures[export.SEQUENCE_SIGNATURE]
    features = sequences_fn.structured_input_signature[1]["sequences"].shape[-1]
    return Predictor(
        path, data.PIXELS // features,
        lambda images: images_fn(images=tf.constant(images))["probabilities"],
        lambda sequences: sequences_fn(sequences=sequences)["probabilities"],
    )


def load(path):
    """A Predictor for `path`: a `.keras` file or a SavedModel directory."""
    if not os.path.exists(path):
        raise ModelLoadError(
            f"model not found: {path}; pass a model.keras file or a saved_model/ directory "
            "written by python -m mnist_rnn.train"
        )
    try:
        if os.path.isdir(path):
            if not os.path.isfile(os.path.join(path, "saved_model.pb")):
                raise ModelLoadError(f"{path}: not a SavedModel directory (no saved_model.pb)")
            return from_saved_model(tf.saved_model.load(path), path)
        return from_keras_model(keras.models.load_model(path), path)
    except ModelLoadError:
        raise
    except Exception as e:  # Keras and TF raise many types for a damaged file.
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"cannot load model {path}: corrupt or not a model ({type(e).__name__}: "
            f"{cause[:200]})"
        ) from None


def predict_files(predictor, paths, invert=None, top_k=1):
    """One result dict per path: file, class, probability, top_k; or file, error."""
    results, digits, readable = [], [], []
    for path in paths:
        try:
            digits.append(images.load_image(path, invert))
            readable.append(len(results))
            results.append({"file": path})
        except ImageError as e:
            results.append({"file": path, "error": str(e)})
    if digits:
        probabilities = predictor.predict_images(digits)
        for i, p in zip(readable, probabilities):
            ranked = p.argsort()[::-1][:top_k]
            results[i].update(
                {"class": int(ranked[0]), "probability": float(p[ranked[0]]),
                 "top_k": [{"class": int(c), "probability": float(p[c])} for c in ranked]}
            )
    return results


def format_result(result):
    if "error" in result:
        return f"error: {result['error']}"
    ranked = ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in result["top_k"])
    return f"{result['file']}: {ranked}"

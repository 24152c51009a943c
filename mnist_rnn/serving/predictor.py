"""One `Predictor` over a trained model, whatever its format: a `.keras` file, a SavedModel
directory, a `.tflite` file or a model in memory. A `.tflite` reads as the SavedModel's
serving_default, without the per-step answers."""

import json
import os
import stat
import zipfile
from typing import Callable

import numpy as np
import tensorflow as tf

from mnist_rnn import compat

from mnist_rnn.serving import tflite
from mnist_rnn.compat import keras
from mnist_rnn.config import PIXELS, SIDE
from mnist_rnn.errors import ModelLoadError
from mnist_rnn.model.lstm import (  # Also registers the custom layer.
    describe, step_logits_fn)
from mnist_rnn.serving.saved_model import IMAGE_SIGNATURE, SEQUENCE_SIGNATURE, STEPS_SIGNATURE
from mnist_rnn.data.sequences import to_images, to_sequences

# A SavedModel gives probabilities, whose log is -inf once one underflows; Keras clips the same.
MIN_PROBABILITY = 1e-7


class Predictor:
    """One trained model, whatever its format: class probabilities of raw images, after the
    last step or after each, and log-probabilities of preprocessed sequences (what evaluation
    needs)."""

    def __init__(self, path: str, timesteps: int, images_fn: Callable,
                 log_probabilities_fn: Callable, steps_fn: Callable | None,
                 no_steps: str = "", step_log_probabilities_fn: Callable | None = None):
        self.path = path
        self.timesteps = timesteps
        self._images_fn = images_fn
        self._log_probabilities_fn = log_probabilities_fn
        self._steps_fn = steps_fn
        self._no_steps = no_steps  # Why steps_fn is None.
        self._step_log_probabilities_fn = step_log_probabilities_fn  # None: from steps_fn.

    @property
    def has_steps(self) -> bool:
        return self._steps_fn is not None

    def probabilities(self, digits) -> np.ndarray:
        """uint8 images [n, 28, 28] -> float32 probabilities [n, 10]."""
        return np.asarray(self._images_fn(np.asarray(digits, np.uint8)))

    def step_probabilities(self, digits) -> np.ndarray:
        """uint8 images [n, 28, 28] -> float32 probabilities [n, timesteps, 10] after each
        step read."""
        if self._steps_fn is None:
            raise ModelLoadError(f"{self.path}: {self._no_steps}")
        return np.asarray(self._steps_fn(np.asarray(digits, np.uint8)))

    def log_probabilities(self, sequences) -> np.ndarray:
        """float32 sequences [n, timesteps, features] -> float32 log-probabilities [n, 10]."""
        return np.asarray(self._log_probabilities_fn(np.asarray(sequences, np.float32)))

    def step_log_probabilities(self, sequences) -> np.ndarray:
        """float32 sequences [n, timesteps, features] -> float32 log-probabilities
        [n, timesteps, 10] after each step read; the last step's are log_probabilities'."""
        if self._step_log_probabilities_fn is not None:
            return np.asarray(self._step_log_probabilities_fn(
                np.asarray(sequences, np.float32)))
        return _log(self.step_probabilities(to_images(sequences)))  # Exact: see to_images.


def _log(probabilities) -> np.ndarray:
    """Log-probabilities of a format that gives probabilities, clipped at MIN_PROBABILITY."""
    return np.log(np.maximum(np.asarray(probabilities), MIN_PROBABILITY))


def from_keras_model(model: keras.Model, path: str = "<in memory>",
                     eager: bool = False) -> Predictor:
    """eager: run the model eagerly rather than compiling it first (see compat.compiled),
    which is faster for a call or two and slower for many."""
    timesteps = describe(model).timesteps
    function = (lambda f: f) if eager else compat.compiled(model)
    logits = function(lambda sequences: model(sequences, training=False))
    step_logits = function(step_logits_fn(model))

    def preprocess(digits):  # TensorFlow, eagerly, whatever the runtime: as in training.
        return np.asarray(to_sequences(digits, timesteps))

    return Predictor(
        path, timesteps,
        lambda digits: _softmax(logits(preprocess(digits))),
        lambda sequences: _softmax(logits(sequences), log=True),
        lambda digits: _softmax(step_logits(preprocess(digits))),
        step_log_probabilities_fn=lambda sequences: _softmax(step_logits(sequences), log=True))


def _softmax(logits, log: bool = False) -> np.ndarray:
    """float32 probabilities (log: log-probabilities) of logits [..., 10], computed in
    float64."""
    x = np.asarray(logits, np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    x = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return (x if log else np.exp(x)).astype(np.float32)


def from_saved_model(loaded, path: str) -> Predictor:
    signatures = loaded.signatures
    missing = {IMAGE_SIGNATURE, SEQUENCE_SIGNATURE} - set(signatures)
    if missing:
        raise ModelLoadError(
            f"{path}: SavedModel lacks the signature(s) {', '.join(sorted(missing))}; "
            "re-export it with python -m mnist_rnn.train"
        )
    images_fn = signatures[IMAGE_SIGNATURE]
    sequences_fn = signatures[SEQUENCE_SIGNATURE]
    features = sequences_fn.structured_input_signature[1]["sequences"].shape[-1]

    def log_probabilities(sequences):
        return _log(sequences_fn(sequences=sequences)["probabilities"])

    steps_fn = signatures.get(STEPS_SIGNATURE)
    return Predictor(
        path, PIXELS // features,
        lambda digits: images_fn(images=tf.constant(digits))["probabilities"],
        log_probabilities,
        steps_fn and (lambda digits: steps_fn(images=tf.constant(digits))["probabilities"]),
        f"this SavedModel has no {STEPS_SIGNATURE} signature (it predates per-step answers); "
        "pass the model.keras beside it, or write it again with python -m mnist_rnn.export "
        "--saved_model",
    )


def from_tflite(path: str) -> Predictor:
    """A .tflite takes images; evaluation's sequences become images again (exactly: they
    are the images' pixels / 255), so any timesteps read the same."""
    runner = tflite.load(path)

    def log_probabilities(sequences):
        return _log(runner.probabilities(to_images(sequences)))

    return Predictor(path, SIDE, runner.probabilities, log_probabilities, None,
                     "a .tflite gives only the final answer; pass model.keras or saved_model/ "
                     "for the answers after each step")


def load(path: str, eager: bool = False) -> Predictor:
    """A Predictor for `path`: a `.keras` file, a SavedModel directory or a `.tflite` file.
    eager: a `.keras` model runs eagerly (see from_keras_model)."""
    _check_exists(path)
    if path.endswith(".tflite") and os.path.isfile(path):
        return from_tflite(path)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise ModelLoadError(f"{path}: not a SavedModel directory (no saved_model.pb)")
        return from_saved_model(_loading(path, tf.saved_model.load), path)
    return from_keras_model(_loading(path, _load_keras), path, eager)


def load_keras_model(path: str) -> keras.Model:
    """The Keras model of a `.keras` file, or one clear ModelLoadError."""
    _check_exists(path)
    if os.path.isdir(path) or not path.endswith(".keras"):
        raise ModelLoadError(f"{path}: not a .keras file; pass the model.keras that python -m "
                             "mnist_rnn.train writes")
    return _loading(path, _load_keras)


def _load_keras(path: str) -> keras.Model:
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" of a file that is.
        raise ValueError("not a zip archive, which a .keras file is")
    return keras.models.load_model(path)


def _check_exists(path: str) -> None:
    """Refuses a missing path, and one that is neither a file nor a directory (a device, a
    FIFO, a socket), which is never read: /dev/zero would be read until memory runs out."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ModelLoadError(
            f"model not found: {path}; pass a model.keras file, a saved_model/ directory or a "
            ".tflite file written by python -m mnist_rnn.train"
        ) from None
    except OSError as e:
        raise ModelLoadError(f"cannot load model {path}: {e.strerror or e}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ModelLoadError(
            f"cannot load model {path}: not a regular file or directory; pass a model.keras "
            "file, a saved_model/ directory or a .tflite file")


def _loading(path: str, load_fn: Callable):
    """load_fn(path), with whatever a damaged file raises turned into one ModelLoadError."""
    try:
        return load_fn(path)
    except Exception as e:  # Keras and TF raise many types for a damaged file.
        _raise_if_other_keras(path)
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if len(cause) > 200:
            cause = cause[:200].rsplit(" ", 1)[0] + " ..."
        raise ModelLoadError(
            f"cannot load model {path}: corrupt or not a model ({type(e).__name__}: {cause})"
        ) from None


def _raise_if_other_keras(path: str) -> None:
    """A .keras file says which Keras wrote it; one of the other major version cannot be
    read here, and the message says what can."""
    try:
        with zipfile.ZipFile(path) as archive:
            written_by = json.loads(archive.read("metadata.json"))["keras_version"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return  # Not a readable .keras archive: the caller's message stands.
    if written_by.split(".")[0] == keras.__version__.split(".")[0]:
        return
    how = compat.OTHER_KERAS_HOW
    raise ModelLoadError(
        f"cannot load model {path}: it was written by Keras {written_by} and this is Keras "
        f"{keras.__version__}; {how}, or pass the saved_model/ directory beside it, which "
        "both read")

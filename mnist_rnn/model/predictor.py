"""`Predictor`, what every trained model answers through, whatever its format; and
`KerasPredictor`, a Keras model's answers (one in memory, or one loaded from a .keras file)."""

from typing import Protocol

import numpy as np

from mnist_rnn import compat
from mnist_rnn.compat import keras
from mnist_rnn.data.sequences import to_images, to_sequences
from mnist_rnn.model.lstm import describe, step_logits_fn

# A format that gives probabilities has a log of -inf once one underflows; Keras clips the same.
MIN_PROBABILITY = 1e-7


class Predictor(Protocol):
    """One trained model: class probabilities of raw images, after the last step or after
    each, and log-probabilities of preprocessed sequences (what evaluation needs)."""

    path: str
    timesteps: int  # The steps each image is read in.

    @property
    def has_steps(self) -> bool:
        """Whether it gives the answer after each step (step_probabilities)."""

    def probabilities(self, digits) -> np.ndarray:
        """uint8 images [n, 28, 28] -> float32 probabilities [n, 10]."""

    def step_probabilities(self, digits) -> np.ndarray:
        """uint8 images [n, 28, 28] -> float32 probabilities [n, timesteps, 10] after each
        step read; a ModelLoadError for a format without them."""

    def log_probabilities(self, sequences) -> np.ndarray:
        """float32 sequences [n, timesteps, features] -> float32 log-probabilities [n, 10]."""

    def step_log_probabilities(self, sequences) -> np.ndarray:
        """float32 sequences [n, timesteps, features] -> float32 log-probabilities
        [n, timesteps, 10] after each step read; the last step's are log_probabilities'."""


class KerasPredictor:
    """A Predictor of a Keras model. eager: run the model eagerly rather than compiling it
    first (see compat.compiled), which is faster for a call or two and slower for many."""

    has_steps = True

    def __init__(self, model: keras.Model, path: str = "<in memory>", eager: bool = False):
        self.path = path
        self.timesteps = describe(model).timesteps
        function = (lambda f: f) if eager else compat.compiled(model)
        self._logits = function(lambda sequences: model(sequences, training=False))
        self._step_logits = function(step_logits_fn(model))

    def _sequences(self, digits) -> np.ndarray:
        """TensorFlow, eagerly, whatever the runtime: as in training."""
        return np.asarray(to_sequences(np.asarray(digits, np.uint8), self.timesteps))

    def probabilities(self, digits) -> np.ndarray:
        return softmax(self._logits(self._sequences(digits)))

    def step_probabilities(self, digits) -> np.ndarray:
        return softmax(self._step_logits(self._sequences(digits)))

    def log_probabilities(self, sequences) -> np.ndarray:
        return softmax(self._logits(np.asarray(sequences, np.float32)), log=True)

    def step_log_probabilities(self, sequences) -> np.ndarray:
        return softmax(self._step_logits(np.asarray(sequences, np.float32)), log=True)


def softmax(logits, log: bool = False) -> np.ndarray:
    """float32 probabilities (log: log-probabilities) of logits [..., 10], computed in
    float64."""
    x = np.asarray(logits, np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    x = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return (x if log else np.exp(x)).astype(np.float32)


def clipped_log(probabilities) -> np.ndarray:
    """Log-probabilities of a format that gives probabilities, clipped at MIN_PROBABILITY."""
    return np.log(np.maximum(np.asarray(probabilities), MIN_PROBABILITY))


def step_log_probabilities_of_images(predictor: Predictor, sequences) -> np.ndarray:
    """step_log_probabilities of a format that reads images: the sequences become images
    again, exactly (see to_images), so any timesteps read the same."""
    return clipped_log(predictor.step_probabilities(to_images(sequences)))

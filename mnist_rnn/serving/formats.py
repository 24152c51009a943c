"""One Predictor class per format a trained model is saved in (a `.keras` file, a SavedModel
directory, a `.tflite` file), and `load`, which picks it. A `.tflite` reads as the
SavedModel's serving_default, without the per-step answers."""

import json
import os
import stat
import zipfile
from typing import Callable

import numpy as np
import tensorflow as tf

from mnist_rnn import compat
from mnist_rnn.compat import keras
from mnist_rnn.config import PIXELS, SIDE
from mnist_rnn.data.sequences import to_images
from mnist_rnn.errors import ModelLoadError
from mnist_rnn.model.predictor import (  # Imports the model, which registers its layer.
    KerasPredictor, Predictor, clipped_log, step_log_probabilities_of_images)
from mnist_rnn.serving import tflite
from mnist_rnn.serving.saved_model import IMAGE_SIGNATURE, SEQUENCE_SIGNATURE, STEPS_SIGNATURE


class SavedModelPredictor:
    """A Predictor of a SavedModel directory, through its signatures (saved_model.py)."""

    def __init__(self, loaded, path: str):
        signatures = loaded.signatures
        missing = {IMAGE_SIGNATURE, SEQUENCE_SIGNATURE} - set(signatures)
        if missing:
            raise ModelLoadError(
                f"{path}: SavedModel lacks the signature(s) {', '.join(sorted(missing))}; "
                "re-export it with python -m mnist_rnn.train"
            )
        self.path = path
        self._images = signatures[IMAGE_SIGNATURE]
        self._sequences = signatures[SEQUENCE_SIGNATURE]
        self._steps = signatures.get(STEPS_SIGNATURE)
        self.timesteps = PIXELS // self._sequences.structured_input_signature[1][
            "sequences"].shape[-1]

    @property
    def has_steps(self) -> bool:
        return self._steps is not None

    def probabilities(self, digits) -> np.ndarray:
        return np.asarray(self._images(images=tf.constant(np.asarray(digits, np.uint8)))[
            "probabilities"])

    def step_probabilities(self, digits) -> np.ndarray:
        if self._steps is None:
            raise ModelLoadError(
                f"{self.path}: this SavedModel has no {STEPS_SIGNATURE} signature (it predates "
                "per-step answers); pass the model.keras beside it, or write it again with "
                "python -m mnist_rnn.export --saved_model")
        return np.asarray(self._steps(images=tf.constant(np.asarray(digits, np.uint8)))[
            "probabilities"])

    def log_probabilities(self, sequences) -> np.ndarray:
        return clipped_log(self._sequences(sequences=np.asarray(sequences, np.float32))[
            "probabilities"])

    def step_log_probabilities(self, sequences) -> np.ndarray:
        return step_log_probabilities_of_images(self, sequences)


class TFLitePredictor:
    """A Predictor of a .tflite file (tflite.py): serving_default's answer, without the
    answers after each step. Evaluation's sequences become images again, exactly (they are
    the images' pixels / 255), so any timesteps read the same."""

    has_steps = False
    timesteps = SIDE

    def __init__(self, path: str):
        self.path = path
        self._runner = tflite.load(path)

    def probabilities(self, digits) -> np.ndarray:
        return self._runner.probabilities(digits)

    def step_probabilities(self, digits) -> np.ndarray:
        raise ModelLoadError(f"{self.path}: a .tflite gives only the final answer; pass "
                             "model.keras or saved_model/ for the answers after each step")

    def log_probabilities(self, sequences) -> np.ndarray:
        return clipped_log(self._runner.probabilities(to_images(sequences)))

    def step_log_probabilities(self, sequences) -> np.ndarray:
        return step_log_probabilities_of_images(self, sequences)


def load(path: str, eager: bool = False) -> Predictor:
    """The Predictor of `path`'s format: a `.keras` file, a SavedModel directory or a
    `.tflite` file. eager: a `.keras` model runs eagerly (see KerasPredictor)."""
    _check_exists(path)
    if path.endswith(".tflite") and os.path.isfile(path):
        return TFLitePredictor(path)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise ModelLoadError(f"{path}: not a SavedModel directory (no saved_model.pb)")
        return SavedModelPredictor(_loading(path, tf.saved_model.load), path)
    return KerasPredictor(_loading(path, _load_keras), path, eager)


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

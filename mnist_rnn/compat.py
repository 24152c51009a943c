"""Keras 3 (default) or Keras 2 (tf-keras, with TF_USE_LEGACY_KERAS=1), and Keras 3's backend
(TensorFlow by default, JAX with KERAS_BACKEND=jax): the one place that knows which. Every
module imports `keras` from here."""

import contextlib
import io
import os

from mnist_rnn.config import legacy_keras_requested

LEGACY = legacy_keras_requested(os.environ)

if LEGACY:
    import tf_keras as keras  # noqa: F401  Keras 2, as tf.keras gives it under this variable.
else:
    import keras  # noqa: F401

# "tensorflow" or "jax" (Keras 3 on PyTorch is not supported: its CPU LSTM is a Python loop).
BACKEND = "tensorflow" if LEGACY else keras.backend.backend()
JAX = BACKEND == "jax"

# Capabilities. TensorFlow graphs: what the TensorBoard graph, TFLite and tf.distribute read.
HAS_TF_GRAPHS = not JAX

# Which Keras on which backend: each computes its own numbers and writes its own files, so a
# backup records it, and each has the environment that asks for it.
RUNTIMES = {
    "Keras 3 on TensorFlow": "unset TF_USE_LEGACY_KERAS and KERAS_BACKEND",
    "Keras 3 on JAX": "set KERAS_BACKEND=jax",
    "Keras 2 on TensorFlow": "set TF_USE_LEGACY_KERAS=1",
}
RUNTIME = f"Keras {2 if LEGACY else 3} on {'JAX' if JAX else 'TensorFlow'}"

# Keras 3's fit cannot consume MultiWorkerMirroredStrategy's per-replica batches
# (keras-team/keras#20585, open since TF 2.16); Keras 2's can.
MULTI_WORKER_FIT = LEGACY


def write_out(archive, path):
    """ExportArchive.write_out, quiet where Keras 3 would list every variable."""
    if LEGACY:
        with contextlib.redirect_stdout(io.StringIO()):  # tf-keras prints every endpoint.
            archive.write_out(path)
    else:
        archive.write_out(path, verbose=False)


def progress_bar():
    """Keras's progress-bar callback, counting steps. Placed first among a fit's callbacks, it
    ends each epoch's bar before the others print."""
    if LEGACY:
        return keras.callbacks.ProgbarLogger(count_mode="steps")
    return keras.callbacks.ProgbarLogger()

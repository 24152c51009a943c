"""Keras 3 (default) or Keras 2 (tf-keras, with TF_USE_LEGACY_KERAS=1), and Keras 3's backend
(TensorFlow by default, JAX with KERAS_BACKEND=jax): what each can do, named as capabilities,
and the few functions whose work differs between them. Every module imports `keras` from
here, and asks these names rather than which runtime it is on."""

import contextlib
import io
import os
from typing import Callable

from mnist_rnn.config import legacy_keras_requested

LEGACY = legacy_keras_requested(os.environ)

if LEGACY:
    import tf_keras as keras  # noqa: F401  Keras 2, as tf.keras gives it under this variable.
else:
    import keras  # noqa: F401

# "tensorflow" or "jax" (Keras 3 on PyTorch is not supported: its CPU LSTM is a Python loop).
BACKEND = "tensorflow" if LEGACY else keras.backend.backend()
JAX = BACKEND == "jax"

# What each runtime can do. The rest of the code asks these, never which runtime it is on.
# TensorFlow graphs: tf.function, TensorBoard's graph, the TFLite converter, a plain SavedModel.
HAS_TF_GRAPHS = not JAX
HAS_TF_DISTRIBUTE = not JAX  # tf.distribute strategies.
HAS_JAX_PROCESSES = JAX  # keras.distribution over several JAX processes.
# Every compiled program has fixed shapes (XLA), so nothing may change length with the data.
FIXED_SHAPES = JAX
# Training always runs compiled: op by op it is many times slower (JAX).
ALWAYS_COMPILED = JAX
# How to load a .keras file of the other Keras major version.
OTHER_KERAS_HOW = ("unset TF_USE_LEGACY_KERAS to load it with Keras 3" if LEGACY else
                   "set TF_USE_LEGACY_KERAS=1 (pip install 'mnist_rnn[keras2]') to load it with "
                   "Keras 2")

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


def ops():
    """Keras 3's keras.ops on this runtime's tensors, for what runs inside a model on every
    runtime. Under Keras 2 they are Keras 3's on TensorFlow (TensorFlow installs Keras 3),
    imported only when asked."""
    import keras as keras3

    return keras3.ops


def compiled(model) -> Callable:
    """A decorator: fn(x) reading `model`'s variables -> the same, traced once per input
    shape and run compiled: a tf.function, or on JAX a jax.jit function given the
    variables' current values at each call (so that it follows training)."""
    if not JAX:
        import tensorflow as tf

        return tf.function(reduce_retracing=True)
    import jax
    import numpy as np

    variables = model.variables
    several_processes = jax.process_count() > 1  # Fixed once the processes have joined.

    def decorate(fn):
        @jax.jit
        def stateless(values, x):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(x)

        def run(x):
            values = [v.value for v in variables]
            if several_processes:  # Arrays over every process: compute on this one's.
                values = [np.asarray(value) for value in values]
            return stateless(values, x)

        return run

    return decorate


def process() -> tuple[int, int]:
    """(index, count) of this process among those of one run over several JAX processes;
    (0, 1) where a run is not split over JAX processes (tf.distribute has its own)."""
    if not HAS_JAX_PROCESSES:
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()


def sync_variables(model) -> None:
    """Brings `model`'s variables up to date before they are read: mid-epoch on JAX, Keras
    keeps the training state apart from the model until asked."""
    if JAX:
        model.jax_state_sync()


def versions() -> dict:
    """The versions of what computes: TensorFlow, Keras and, on JAX, JAX."""
    import tensorflow as tf

    found = {"tensorflow": tf.__version__, "keras": keras.__version__}
    if JAX:
        import jax

        found["jax"] = jax.__version__
    return found


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

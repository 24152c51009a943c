"""Keras 3 (default) or Keras 2 (tf-keras, with TF_USE_LEGACY_KERAS=1), and Keras 3's backend
(TensorFlow by default, JAX with KERAS_BACKEND=jax): what each can do, named as capabilities,
and the few functions whose work differs between them, JAX's own code among them. Every module
imports `keras` from here, and asks these names rather than which runtime it is on."""

import collections
import contextlib
import io
import os
from typing import Callable

from mnist_rnn.config import legacy_keras_requested
from mnist_rnn.errors import UserError

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
# Which Keras on which backend: each computes its own numbers and writes its own files, so a
# backup records it, and each has the environment that asks for it.
KERAS3_TENSORFLOW, KERAS3_JAX, KERAS2 = ("Keras 3 on TensorFlow", "Keras 3 on JAX",
                                         "Keras 2 on TensorFlow")
RUNTIMES = {
    KERAS3_TENSORFLOW: "unset TF_USE_LEGACY_KERAS and KERAS_BACKEND",
    KERAS3_JAX: "set KERAS_BACKEND=jax (pip install 'mnist_rnn[jax]')",
    KERAS2: "set TF_USE_LEGACY_KERAS=1 (pip install 'mnist_rnn[keras2]')",
}
RUNTIME = KERAS2 if LEGACY else KERAS3_JAX if JAX else KERAS3_TENSORFLOW
# How to load a .keras file of the other Keras major version.
OTHER_KERAS_HOW = (f"load it on {KERAS3_TENSORFLOW} ({RUNTIMES[KERAS3_TENSORFLOW]})" if LEGACY
                   else f"load it on {KERAS2} ({RUNTIMES[KERAS2]})")

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


def switch_to(runtime: str) -> str:
    """How to run on `runtime` (one of RUNTIMES): "RUNTIME (what to set)"."""
    return f"{runtime} ({RUNTIMES[runtime]})"


def xla_program(fn: Callable, spec) -> tuple[Callable, Callable]:
    """fn of a batch (a tf.TensorSpec), reading a model's variables -> one XLA program with
    the weights as its constants, as a TensorFlow function that any TensorFlow runs; and fn
    traced (for its output's shape). On TensorFlow, the weights frozen and the function
    compiled by XLA; on JAX, converted by jax2tf (an XlaCallModule op)."""
    import tensorflow as tf

    if JAX:
        from jax.experimental import jax2tf

        dims = ["batch"] + [str(d) if d is not None else "steps" for d in spec.shape[1:]]
        converted = jax2tf.convert(fn, polymorphic_shapes=[f"({', '.join(dims)})"],
                                   with_gradient=False)  # Serving only: no gradient functions.
        program = tf.function(converted, input_signature=[spec], autograph=False)
        return program, program.get_concrete_function()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    traced = tf.function(fn, input_signature=[spec]).get_concrete_function()
    frozen = convert_variables_to_constants_v2(
        traced, lower_control_flow=False)  # XLA compiles functional loops, not TF1's lowered.
    return tf.function(lambda x: frozen(x)[0], jit_compile=True), traced


def jax_op_counts(model, timesteps: int, features: int
                  ) -> tuple[collections.Counter, collections.Counter]:
    """Primitives by name in the programs XLA compiles for a built and compiled model on JAX:
    its training step's jaxpr (Keras' train_step: forward, gradients, update) and its forward
    pass's, each with the jaxprs it calls (loop bodies included)."""
    import jax
    import numpy as np

    x = np.zeros((2, timesteps, features), np.float32)
    y = np.zeros((2,), np.int32)
    state = tuple([v.value for v in variables] for variables in (
        model.trainable_variables, model.non_trainable_variables, model.optimizer.variables,
        model.metrics_variables))
    train = _primitives(jax.make_jaxpr(model.train_step)(state, (x, y)).jaxpr)
    forward = _primitives(jax.make_jaxpr(
        lambda trainable, other, x: model.stateless_call(trainable, other, x)[0])(
            state[0], state[1], x).jaxpr)
    return train, forward


def _primitives(jaxpr) -> collections.Counter:
    """Primitives by name in a jaxpr and in every jaxpr it calls (loop bodies included)."""
    counts = collections.Counter()
    for eqn in jaxpr.eqns:
        counts[eqn.primitive.name] += 1
        for param in eqn.params.values():
            for inner in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(inner, "jaxpr", inner)  # A closed jaxpr holds its jaxpr.
                if hasattr(inner, "eqns"):
                    counts.update(_primitives(inner))
    return counts


# What keras.distribution.initialize reads: every process's address (the first is the
# coordinator's), how many processes, and this one's index (0 is the chief).
JAX_PROCESS_VARIABLES = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                         "KERAS_DISTRIBUTION_PROCESS_ID")


def start_jax_processes(what: str) -> None:
    """Joins this process to the others of a JAX run (keras.distribution, from the
    KERAS_DISTRIBUTION_* variables) and splits each global batch between them. `what`: the
    setting that asks for it, named in the error when a variable is missing."""
    missing = [v for v in JAX_PROCESS_VARIABLES if not os.environ.get(v)]
    if missing:
        raise UserError(f"{what} on JAX needs {', '.join(missing)}: see docs/runtimes.md")
    import jax

    keras.distribution.initialize()  # Before any JAX computation.
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))

"""The SavedModel export of a trained model, for TF Serving and any TensorFlow.

Its signatures:
- `serving_default`: `images` uint8 [batch, 28, 28] (what TF Serving clients send; the
  preprocessing into sequences happens in the graph) -> `probabilities` float32 [batch, 10],
  `class` int64 [batch].
- `serve_sequences`: `sequences` float32 [batch, timesteps, features] in [0, 1], already
  preprocessed as in training -> the same two outputs.
- `serve_steps`: `images` as above -> `probabilities` float32 [batch, timesteps, 10], the
  answer after each step read; the last step's is serving_default's.

Where XLA pays (see `uses_xla`), each signature runs the model with its weights frozen into
constants and compiled by XLA, for a few batch sizes only: a batch is padded up to the next of
BATCH_BUCKETS and the answer sliced back, and a larger one runs in chunks of the largest. So a
server compiles at most len(BATCH_BUCKETS) programs per signature, whatever batches it gets.
Constants, not variables, because XLA cannot read variables under TF1-style session loaders
(saved_model_cli run). TF Serving runs XLA only with --xla_cpu_compilation_enabled=true;
xla="off" exports the plain graph that any TensorFlow runs.
"""

import os
from typing import Callable

import tensorflow as tf

from mnist_rnn import compat, files
from mnist_rnn.compat import keras
from mnist_rnn.config import SAVED_MODEL_XLA, SIDE
from mnist_rnn.data.sequences import to_sequences
from mnist_rnn.errors import UserError, setting
from mnist_rnn.model.lstm import describe, step_logits_fn
from mnist_rnn.outputs import SAVED_MODEL_DIR

IMAGE_SIGNATURE = "serving_default"
SEQUENCE_SIGNATURE = "serve_sequences"
STEPS_SIGNATURE = "serve_steps"
# The batch sizes compiled signatures are compiled for: one XLA program each at most.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# XLA pays for the loop at every length, and for the unrolled graph up to 28 steps; longer
# unrolled graphs take seconds per batch size to compile and gain nothing (benchmarks/README.md).
MAX_COMPILED_UNROLLED_STEPS = 28


def probabilities(logits: tf.Tensor) -> tf.Tensor:
    """float32 probabilities of logits [..., 10], as the serving files' TensorFlow ops."""
    return tf.nn.softmax(logits, axis=-1)


def _outputs(logits: tf.Tensor) -> dict:
    return {"probabilities": probabilities(logits),
            "class": tf.argmax(logits, axis=-1, output_type=tf.int64)}


def uses_xla(model: keras.Model, xla: str = "auto") -> bool:
    """Whether the SavedModel of `model` runs its forward pass compiled by XLA. xla: "on",
    "off", or "auto": where it pays. A variable-length model never does: its length per batch
    depends on the data, which XLA cannot compile."""
    if xla not in SAVED_MODEL_XLA:
        raise ValueError(f"xla must be one of {SAVED_MODEL_XLA}, not {xla!r}")
    if not compat.HAS_TF_GRAPHS:  # jax2tf writes XLA programs only.
        if xla == "off":
            raise UserError("a model on JAX exports only compiled signatures (jax2tf): export "
                            f"it with {setting('saved_model_xla', 'auto')}, or on "
                            f"{compat.switch_to(compat.KERAS3_TENSORFLOW)} for a plain graph")
        return True
    shape = describe(model)
    if shape.variable_length:
        if xla == "on":
            raise UserError("a variable-length model cannot be compiled by XLA (its length per "
                            "batch depends on the data); export it with "
                            f"{setting('saved_model_xla', 'auto')}")
        return False
    if xla == "auto":
        return not shape.static or shape.timesteps <= MAX_COMPILED_UNROLLED_STEPS
    return xla == "on"


def export_saved_model(model: keras.Model, path: str, xla: str = "auto") -> dict:
    """Writes `model` as a SavedModel with the three signatures above to `path`; returns what
    it serves with: {"xla": bool, "backend": the Keras backend that wrote it,
    "batch_buckets": [...] when compiled}."""
    shape = describe(model)
    timesteps, features = shape.timesteps, shape.features
    sequences_spec = tf.TensorSpec([None, shape.length, features], tf.float32,
                                   name="sequences")
    logits, step_logits = (lambda s: model(s, training=False)), step_logits_fn(model)
    sequence_logits = logits
    compiled = uses_xla(model, xla)
    if compiled:
        read_spec = tf.TensorSpec([None, timesteps, features], tf.float32)
        sequence_logits = _compiled(logits, sequences_spec)
        logits = (sequence_logits if sequences_spec.shape == read_spec.shape  # Static: the same.
                  else _compiled(logits, read_spec))
        step_logits = _compiled(step_logits, read_spec)

    def serve_images(images):
        return _outputs(logits(to_sequences(images, timesteps)))

    def serve_sequences(sequences):
        return _outputs(sequence_logits(sequences))

    def serve_steps(images):
        return {"probabilities": probabilities(step_logits(to_sequences(images, timesteps)))}

    archive = keras.export.ExportArchive()
    archive.track(model)
    images_spec = tf.TensorSpec([None, SIDE, SIDE], tf.uint8, name="images")
    for name, fn, spec in [(IMAGE_SIGNATURE, serve_images, images_spec),
                           (STEPS_SIGNATURE, serve_steps, images_spec),
                           (SEQUENCE_SIGNATURE, serve_sequences, sequences_spec)]:
        # Traced here, as TensorFlow functions whatever the backend: on JAX, ExportArchive
        # would convert a function given with its signature, TensorFlow's ops and all.
        endpoint = tf.function(fn, input_signature=[spec], autograph=False)
        endpoint.get_concrete_function()
        archive.add_endpoint(name, endpoint)
    compat.write_out(archive, path)
    return {"xla": compiled, "backend": compat.BACKEND,
            **({"batch_buckets": list(BATCH_BUCKETS)} if compiled else {})}


def describe_export(info: dict) -> str:
    """One line saying how a SavedModel (export_saved_model's `info`) serves."""
    if not info["xla"]:
        return "plain TensorFlow graph (runs on any TensorFlow and TF Serving)"
    buckets = info["batch_buckets"]
    sizes = f"for {len(buckets)} batch sizes ({buckets[0]} to {buckets[-1]}, padded up)"
    if info.get("backend") == "jax":
        return (f"XLA programs from JAX (jax2tf's XlaCallModule ops) {sizes}; for a plain "
                f"graph, export the model.keras on {compat.switch_to(compat.KERAS3_TENSORFLOW)}")
    return (f"compiled by XLA {sizes}; TF Serving needs its --xla_cpu_compilation_enabled=true, "
            "or a plain graph: python -m mnist_rnn.export --saved_model --saved_model_xla=off")


def _compiled(fn: Callable, spec: tf.TensorSpec) -> Callable:
    """fn of a batch (`spec`), reading the model's variables -> the same function with the
    weights frozen into constants, compiled by XLA for the BATCH_BUCKETS sizes only."""
    program, traced = compat.xla_program(fn, spec)
    out_shape = [None, *traced.outputs[0].shape[1:]]
    top = BATCH_BUCKETS[-1]

    def bucketed(x):
        n = tf.shape(x)[0]
        buckets = tf.constant(BATCH_BUCKETS)
        size = tf.reduce_min(tf.where(buckets >= n, buckets, top))

        def in_chunks():
            chunks = (n + top - 1) // top
            parts = tf.reshape(_pad_batch(x, chunks * top),
                               tf.concat([[chunks, top], tf.shape(x)[1:]], 0))
            out = tf.map_fn(program, parts, fn_output_signature=tf.float32)
            return tf.reshape(out, tf.concat([[chunks * top], tf.shape(out)[2:]], 0))

        out = tf.cond(n <= top, lambda: program(_pad_batch(x, size)), in_chunks)[:n]
        return tf.ensure_shape(out, out_shape)

    return bucketed


def _pad_batch(x: tf.Tensor, size) -> tf.Tensor:
    """x [n, ...] padded with zeros to [size, ...]."""
    padding = tf.concat([[[0, size - tf.shape(x)[0]]], tf.zeros([tf.rank(x) - 1, 2], tf.int32)],
                        0)
    return tf.pad(x, padding)


def write(model: keras.Model, path: str, xla: str = "auto") -> dict:
    """export_saved_model into `path`, crash-safe: an earlier SavedModel there is replaced
    only once the new one is complete (see files.replace_dir). Returns its info."""
    def write_to(tmp: str) -> dict:
        try:
            return export_saved_model(model, tmp, xla)
        except tf.errors.OpError as e:  # TensorFlow's file errors are not OSErrors.
            raise files.as_os_error(e, path) from None

    return files.write_or_fail(files.replace_dir, write_to, path)


class SavedModelExport:
    """saved_model/ as a training run's last stage (see training.trainer.Export)."""

    name = "saved_model"

    def __init__(self, xla: str = "auto"):
        self.xla = xla

    def check(self) -> None:
        pass  # What the model allows is known once it is built (uses_xla).

    def write(self, model: keras.Model, out_dir: str, datasets) -> dict:
        return write(model, os.path.join(out_dir, SAVED_MODEL_DIR), self.xla)

    def describe(self, info: dict) -> list[str]:
        return [f"SavedModel: {describe_export(info)}"]

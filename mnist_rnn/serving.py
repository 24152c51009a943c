"""A trained model in use: the SavedModel export, and one `Predictor` over a `.keras` file, a
SavedModel or a model in memory.

The SavedModel's signatures:
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

A `.tflite` (see tflite.py) reads as serving_default, without the per-step answers.
"""

import json
import os
import stat
import zipfile
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from mnist_rnn import compat, images, reading, tflite
from mnist_rnn.compat import keras
from mnist_rnn.config import PIXELS, SAVED_MODEL_XLA, SIDE
from mnist_rnn.errors import ImageError, ModelLoadError, UserError, one_line
from mnist_rnn.model import (  # Also registers the custom layer.
    describe, step_logits_fn)
from mnist_rnn.sequences import to_images, to_sequences

IMAGE_SIGNATURE = "serving_default"
SEQUENCE_SIGNATURE = "serve_sequences"
STEPS_SIGNATURE = "serve_steps"
# A SavedModel gives probabilities, whose log is -inf once one underflows; Keras clips the same.
MIN_PROBABILITY = 1e-7
# The batch sizes compiled signatures are compiled for: one XLA program each at most.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# Measured (benchmarks/README.md): XLA pays for the loop at every length, and for the unrolled
# graph at 28 steps; at 196 it took 11-14 s per batch size to compile and gained nothing.
MAX_COMPILED_UNROLLED_STEPS = 28


def _outputs(logits: tf.Tensor) -> dict:
    return {
        "probabilities": tf.nn.softmax(logits, axis=-1),
        "class": tf.argmax(logits, axis=-1, output_type=tf.int64),
    }


def uses_xla(model: keras.Model, xla: str = "auto") -> bool:
    """Whether the SavedModel of `model` runs its forward pass compiled by XLA. xla: "on",
    "off", or "auto": where it pays. A variable-length model never does: its length per batch
    depends on the data, which XLA cannot compile."""
    if xla not in SAVED_MODEL_XLA:
        raise ValueError(f"xla must be one of {SAVED_MODEL_XLA}, not {xla!r}")
    if not compat.HAS_TF_GRAPHS:  # jax2tf writes XLA programs only.
        if xla == "off":
            raise UserError("a model on JAX exports only compiled signatures (jax2tf): export "
                            "it with --saved_model_xla=auto, or without KERAS_BACKEND=jax for "
                            "a plain graph")
        return True
    shape = describe(model)
    if shape.variable_length:
        if xla == "on":
            raise UserError("a variable-length model cannot be compiled by XLA (its length per "
                            "batch depends on the data); export it with --saved_model_xla=auto")
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
        return {"probabilities": tf.nn.softmax(step_logits(to_sequences(images, timesteps)),
                                               axis=-1)}

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
                "graph, export the model.keras without KERAS_BACKEND=jax")
    return (f"compiled by XLA {sizes}; TF Serving needs --xla_cpu_compilation_enabled=true, "
            "or export with --saved_model_xla=off")


def _compiled(fn: Callable, spec: tf.TensorSpec) -> Callable:
    """fn of a batch (`spec`), reading the model's variables -> the same function with the
    weights frozen into constants, compiled by XLA for the BATCH_BUCKETS sizes only."""
    program, traced = (_frozen_program if compat.HAS_TF_GRAPHS else _jax_program)(fn, spec)
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


def _frozen_program(fn: Callable, spec: tf.TensorSpec) -> tuple[Callable, Callable]:
    """fn (TensorFlow) with the weights frozen into constants, compiled by XLA; and fn
    traced (for its output's shape)."""
    traced = tf.function(fn, input_signature=[spec]).get_concrete_function()
    frozen = convert_variables_to_constants_v2(
        traced, lower_control_flow=False)  # XLA compiles functional loops, not TF1's lowered.
    return tf.function(lambda x: frozen(x)[0], jit_compile=True), traced


def _jax_program(fn: Callable, spec: tf.TensorSpec) -> tuple[Callable, Callable]:
    """fn (JAX) as a TensorFlow function through jax2tf: one XLA program (an XlaCallModule
    op, which any TensorFlow runs), with the weights as its constants; and it traced."""
    from jax.experimental import jax2tf

    dims = ["batch"] + [str(d) if d is not None else "steps" for d in spec.shape[1:]]
    converted = jax2tf.convert(fn, polymorphic_shapes=[f"({', '.join(dims)})"],
                               with_gradient=False)  # Serving only: no gradient functions.
    program = tf.function(converted, input_signature=[spec], autograph=False)
    return program, program.get_concrete_function()


def _pad_batch(x: tf.Tensor, size) -> tf.Tensor:
    """x [n, ...] padded with zeros to [size, ...]."""
    padding = tf.concat([[[0, size - tf.shape(x)[0]]], tf.zeros([tf.rank(x) - 1, 2], tf.int32)],
                        0)
    return tf.pad(x, padding)


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
        lambda digits: np.exp(_log_softmax(logits(preprocess(digits)))).astype(np.float32),
        lambda sequences: _log_softmax(logits(sequences)).astype(np.float32),
        lambda digits: np.exp(_log_softmax(step_logits(preprocess(digits)))).astype(np.float32),
        step_log_probabilities_fn=lambda s: _log_softmax(step_logits(s)).astype(np.float32))


def _log_softmax(logits) -> np.ndarray:
    """float64 log-probabilities of logits [..., 10]."""
    x = np.asarray(logits, np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


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


def read_digits(paths: list[str], invert: bool | None = None
                ) -> tuple[list[dict], dict[int, np.ndarray]]:
    """One result dict per path ({file}, or {file, error} for one that cannot be read), and
    the uint8 [28, 28] digits read, by their index in `paths`."""
    results, digits = [], {}
    for i, path in enumerate(paths):
        results.append({"file": path})
        try:
            digits[i] = images.load_image(path, invert)
        except ImageError as e:
            results[i]["error"] = str(e)
        except Exception as e:  # Whatever one file does, the others still get their answer.
            results[i]["error"] = f"{path}: cannot read it ({type(e).__name__}: {e})"
    return results, digits


def answer(predictor: Predictor, results: list[dict], digits: dict[int, np.ndarray],
           top_k: int = 1, per_step: bool = False) -> None:
    """Adds to results[i] the answer for digits[i]: class, probability, top_k; with
    per_step, also timesteps, settled_step and step_probabilities [timesteps][10]."""
    if not digits:
        return
    stacked = np.stack(list(digits.values()))
    for i, p in zip(digits, predictor.probabilities(stacked)):
        ranked = p.argsort()[::-1][:top_k]
        results[i].update(
            {"class": int(ranked[0]), "probability": float(p[ranked[0]]),
             "top_k": [{"class": int(c), "probability": float(p[c])} for c in ranked]})
    if per_step:
        for i, steps in zip(digits, predictor.step_probabilities(stacked)):
            results[i].update(
                {"timesteps": len(steps),
                 "settled_step": int(reading.settled_steps(steps.argmax(-1)[None])[0]),
                 "step_probabilities": np.round(steps.astype(np.float64), 6).tolist()})


def predict_files(predictor: Predictor, paths: list[str], invert: bool | None = None,
                  top_k: int = 1, per_step: bool = False, chunk: int = 64
                  ) -> Iterator[tuple[list[dict], dict[int, np.ndarray]]]:
    """The answers for `paths`, `chunk` files at a time, each file read only when its chunk
    comes: for each chunk, one result dict per path (file, class, probability, top_k, see
    `answer`; or file, error) and the digits read, by their index in the chunk."""
    for start in range(0, len(paths), chunk):
        results, digits = read_digits(paths[start:start + chunk], invert)
        answer(predictor, results, digits, top_k, per_step)
        yield results, digits


def format_result(result: dict) -> str:
    """One line: the file's answer, or its error."""
    return one_line(_format_result(result))


def _format_result(result: dict) -> str:
    if "error" in result:
        return f"error: {result['error']}"
    ranked = ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in result["top_k"])
    if "settled_step" in result:
        ranked += f"; settled at step {result['settled_step']} of {result['timesteps']}"
    if "chart" in result:
        ranked += f"; chart {result['chart']}"
    return f"{result['file']}: {ranked}"

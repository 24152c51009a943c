"""The model for edge runtimes: TFLite (LiteRT) files with built-in ops only, and running them.

A .tflite written here takes uint8 images [batch, 28, 28] and gives float32 probabilities
[batch, 10], as the SavedModel's serving_default. The routes taken, under Keras 3 and Keras 2
alike (each route tried, and why the others are not taken: docs/serving.md):
- static: any batch size; the unrolled cells become FULLY_CONNECTED, LOGISTIC, TANH, ...
- dynamic: the while loop's tensor lists need a static shape, so batch 1, as a WHILE op.
- The weights are frozen into constants. Kept as variables, Keras 3's loop converts to
  READ_VARIABLE ops that fail at invoke, and Keras 2's to a fused UNIDIRECTIONAL_SEQUENCE_LSTM
  whose answers differ from the model's.
- int8: dynamic-range (int8 weights, float activations). Full-integer quantization crashed
  the converter on the loop and gave a static model the default interpreter cannot run.
Every file is run on check digits and compared with the model before it is written.
"""

import contextlib
import dataclasses
import logging
import os
import re
import time

import numpy as np
import tensorflow as tf

from mnist_rnn import compat, files
from mnist_rnn.compat import keras
from mnist_rnn.config import NUM_CLASSES, SIDE
from mnist_rnn.data.sequences import to_sequences
from mnist_rnn.errors import ModelLoadError, UserError, setting
from mnist_rnn.evaluation import report
from mnist_rnn.model.lstm import describe
from mnist_rnn.model.predictor import KerasPredictor
from mnist_rnn.outputs import TFLITE_FILE, TFLITE_INT8_FILE
from mnist_rnn.serving.saved_model import probabilities

MAX_FLOAT_DIFF = 1e-4  # A float32 .tflite that differs more from the model is not written.
LOOP_OP, FUSED_LSTM_OP = "WHILE", "UNIDIRECTIONAL_SEQUENCE_LSTM"
RUNTIME_NOISE = re.compile(r"^INFO: ")  # "Created TensorFlow Lite XNNPACK delegate for CPU."
# The converter's notes on options it ignores, as every conversion prints them.
CONVERTER_NOISE = re.compile(r"^W\d{4} .* tf_tfl_flatbuffer_helpers\.cc:\d+\] Ignored ")


def runtime() -> tuple[type, str]:
    """The interpreter class and its name: LiteRT's, else TensorFlow's own (deprecated)."""
    try:
        from importlib.metadata import version

        from ai_edge_litert import interpreter as litert

        return litert.Interpreter, f"ai-edge-litert {version('ai-edge-litert')}"
    except ImportError:
        return tf.lite.Interpreter, (f"tf.lite.Interpreter (TensorFlow {tf.__version__}; "
                                     "ai-edge-litert is not installed)")


class Runner:
    """One .tflite model in the interpreter: uint8 images -> probabilities, a batch at a
    time where its input allows, else one image at a time."""

    def __init__(self, content: bytes, path: str = "<in memory>", threads: int | None = None):
        interpreter_class, self.runtime = runtime()
        try:
            with files.native_stderr_without(RUNTIME_NOISE):
                self._interpreter = interpreter_class(model_content=content, num_threads=threads)
                # The model's own ops, before allocation hands some to a delegate.
                self.ops = sorted({op["op_name"] for op in self._interpreter._get_ops_details()})
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelLoadError(f"cannot load model {path}: corrupt or not a TFLite model "
                                 f"({_first_line(e)})") from None
        self._input = self._interpreter.get_input_details()
        self._output = self._interpreter.get_output_details()
        shape, dtype = tuple(self._input[0]["shape_signature"]), self._input[0]["dtype"]
        if (len(self._input) != 1 or len(self._output) != 1 or dtype != np.uint8
                or shape[1:] != (SIDE, SIDE)
                or tuple(self._output[0]["shape_signature"])[1:] != (NUM_CLASSES,)):
            raise ModelLoadError(
                f"{path}: not a digit model of this project: it takes {dtype.__name__} "
                f"{[int(d) for d in shape]}, not uint8 [batch, {SIDE}, {SIDE}]; write one with "
                "python -m mnist_rnn.export --tflite")
        self.batch = None if shape[0] == -1 else int(shape[0])
        self._allocated = None

    def probabilities(self, digits: np.ndarray) -> np.ndarray:
        """uint8 images [n, 28, 28] -> float32 probabilities [n, 10]."""
        digits = np.asarray(digits, np.uint8)
        step = self.batch or max(len(digits), 1)
        return np.concatenate([self._invoke(digits[i:i + step])
                               for i in range(0, len(digits), step)] or
                              [np.zeros((0, NUM_CLASSES), np.float32)])

    def _invoke(self, digits: np.ndarray) -> np.ndarray:
        index = self._input[0]["index"]
        if self.batch is None and self._allocated != len(digits):
            self._interpreter.resize_tensor_input(index, digits.shape)
        if self._allocated != len(digits):
            self._interpreter.allocate_tensors()
            self._allocated = len(digits)
        self._interpreter.set_tensor(index, digits)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output[0]["index"]).copy()

    def latency_ms(self, digit: np.ndarray, calls: int = 200) -> float:
        """Median wall time of one single-image call, after one warm-up call."""
        self.probabilities(digit[None])
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            self._invoke(digit[None])
            times.append(time.perf_counter() - start)
        return float(np.median(times) * 1e3)


def load(path: str) -> Runner:
    with open(path, "rb") as f:
        return Runner(f.read(), path)


@dataclasses.dataclass
class Conversion:
    """One .tflite file's content and what it is."""

    name: str
    content: bytes
    quantization: str
    runner: Runner

    def describe(self) -> dict:
        ops = self.runner.ops
        return {"file": self.name, "bytes": len(self.content), "quantization": self.quantization,
                "batch": self.runner.batch or "any", "builtin_ops_only": True, "ops": ops,
                "while_loop": LOOP_OP in ops, "fused_lstm": FUSED_LSTM_OP in ops,
                "runtime": self.runner.runtime}


def convert(model: keras.Model, int8: bool = False) -> bytes:
    """The .tflite of `model` (see the module's notes for the route), with built-in ops only;
    int8: dynamic-range quantized. Raises UserError when the converter cannot do it."""
    shape = describe(model)
    timesteps = shape.timesteps
    batch = None if shape.static else 1  # The loop's .tflite takes one image per call.

    @tf.function(input_signature=[tf.TensorSpec([batch, SIDE, SIDE], tf.uint8, name="images")])
    def serve(images):
        return probabilities(model(to_sequences(images, timesteps), training=False))

    with _converter_warnings_off():
        # No trackable object: the converter then freezes the variables (see the notes).
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [serve.get_concrete_function()])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if int8:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        try:
            with files.native_stderr_without(CONVERTER_NOISE):
                return converter.convert()
        except Exception as e:  # The converter raises its own types with long MLIR dumps.
            raise UserError(
                f"{model.name}: TFLite cannot convert it with built-in ops only "
                f"({_first_line(e)}); train with {setting('rnn', 'static')} for a loop-free model"
            ) from None


@contextlib.contextmanager
def _converter_warnings_off():
    """The converter advises keeping the variables, which is the route that fails."""
    loggers = [logging.getLogger(name) for name in ("absl", "tensorflow")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def conversions(model: keras.Model, check_digits: np.ndarray) -> list[Conversion]:
    """float32 and int8 conversions of `model`, each run on `check_digits` (uint8 [n, 28,
    28]): the float32 one must agree with the model within MAX_FLOAT_DIFF."""
    expected = KerasPredictor(model, eager=True).probabilities(check_digits)
    out = []
    for name, int8 in ((TFLITE_FILE, False), (TFLITE_INT8_FILE, True)):
        content = convert(model, int8)
        runner = Runner(content, name)
        diff = float(np.abs(runner.probabilities(check_digits) - expected).max())
        if not int8 and diff > MAX_FLOAT_DIFF:
            raise UserError(f"{model.name}: its TFLite conversion differs from the model by "
                            f"{diff:.2g} (more than {MAX_FLOAT_DIFF:g}); nothing was written")
        out.append(Conversion(name, content, "dynamic-range int8 weights" if int8 else
                              "float32", runner))
    return out


def check_backend() -> None:
    """Refuses a conversion that cannot run here: the converter reads TensorFlow graphs,
    and a model on JAX has none (its exported programs are XLA's)."""
    if not compat.HAS_TF_GRAPHS:
        raise UserError("the .tflite export needs the TensorFlow backend: export the model.keras "
                        "with python -m mnist_rnn.export --tflite on "
                        f"{compat.switch_to(compat.KERAS3_TENSORFLOW)}")


def export(model: keras.Model, output_dir: str, check_digits: np.ndarray) -> list[dict]:
    """Writes model.tflite and model_int8.tflite of `model` into `output_dir`, each
    crash-safe and only once both are converted and checked; returns what each is."""
    check_backend()
    done = conversions(model, check_digits)
    for conversion in done:
        files.write_or_fail(_write_bytes, conversion.content,
                            os.path.join(output_dir, conversion.name))
    return [c.describe() for c in done]


def describe_line(info: dict) -> str:
    ops = ", ".join(info["ops"])
    return (f"{info['file']}: {info['quantization']}, {info['bytes'] / 1024:.0f} KB, batch "
            f"{info['batch']}, built-in ops only: {ops}")


def _write_bytes(content: bytes, path: str) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())

    files.write_via_tmp(path, write, suffix=".tflite")


def _first_line(e: Exception) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    line = next((x for x in lines if "error:" in x), lines[0] if lines else type(e).__name__)
    return line[:200]


class TFLiteExport:
    """model.tflite and model_int8.tflite as a training run's last stage (see
    training.trainer.Export), checked on the first CHECK_DIGITS test digits."""

    name = "tflite"
    CHECK_DIGITS = 200

    def check(self) -> None:
        check_backend()

    def write(self, model: keras.Model, out_dir: str, datasets) -> list[dict]:
        digits = report.test_images(datasets.test,
                                    range(min(self.CHECK_DIGITS, datasets.test_size)))
        return export(model, out_dir, digits)

    def describe(self, info: list[dict]) -> list[str]:
        return [describe_line(each) for each in info]

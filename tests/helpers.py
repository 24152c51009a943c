"""What several test files use: the repository root, a tiny training config, and running a
command in a subprocess as a user would."""

import contextlib
import importlib.util
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from mnist_rnn.config import TrainConfig

ROOT = pathlib.Path(__file__).resolve().parent.parent

HAS_JAX = importlib.util.find_spec("jax") is not None
HAS_KERAS2 = importlib.util.find_spec("tf_keras") is not None
# For the tests that start another runtime: `pip install '.[test]'` alone has neither.
needs_jax = pytest.mark.skipif(not HAS_JAX, reason="needs JAX: pip install '.[test,jax]'")
needs_keras2 = pytest.mark.skipif(not HAS_KERAS2,
                                  reason="needs Keras 2 (tf-keras): pip install '.[test,keras2]'")

# The ops of each variant's .tflite: what test_tflite checks and the compare report prints.
EXPECTED_TFLITE_OPS = {
    "static": ["ADD", "CAST", "FILL", "FULLY_CONNECTED", "LOGISTIC", "MUL", "PACK", "RESHAPE",
               "SHAPE", "SOFTMAX", "SPLIT", "STRIDED_SLICE", "TANH", "TRANSPOSE", "UNPACK"],
    "dynamic": ["CAST", "FULLY_CONNECTED", "MUL", "RESHAPE", "SOFTMAX", "STRIDED_SLICE",
                "WHILE"],
}


def tiny_config(tmp_dir, tfds_dir, **overrides) -> TrainConfig:
    """A config that trains in seconds on the sample and clearly beats chance. Without
    TensorBoard logs unless asked: the tests that read them ask."""
    return TrainConfig(**{
        **dict(rnn="dynamic", units=32, learning_rate=0.01, epochs=1, dataset="mnist_sample",
               data_dir=tfds_dir, model_dir=os.path.join(str(tmp_dir), "model"), verbose=0,
               tensorboard=False),
        **overrides,
    })


def tensorboard_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of the scalars in a TensorBoard run directory, read by
    TensorBoard's own reader (which drops what a restart marks as orphaned)."""
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        str(logdir), size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    return {tag: [(e.step, float(tf.make_ndarray(e.tensor_proto)))
                  for e in accumulator.Tensors(tag)]
            for tag in accumulator.Tags()["tensors"]}


def tensorboard_has_graph(logdir) -> bool:
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(str(logdir))
    accumulator.Reload()
    return accumulator.Tags()["graph"]


def run_python(*args, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`python args...` from the repository root, to its end, its output captured as text
    (stdout and stderr apart, unless `kwargs` say where they go)."""
    if not {"stdout", "stderr"} & kwargs.keys():
        kwargs["capture_output"] = True
    return subprocess.run([sys.executable, *map(str, args)], text=True, timeout=timeout,
                          cwd=ROOT, **kwargs)


def start_python(*args, **kwargs) -> subprocess.Popen:
    """`python args...` from the repository root, started: stdout and stderr piped as text,
    unless `kwargs` say where they go."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, *map(str, args)], text=True, cwd=ROOT, **kwargs)


def run_module(module: str, *args, **kwargs) -> subprocess.CompletedProcess:
    """`python -m module args...`, as run_python."""
    return run_python("-m", module, *args, **kwargs)


@contextlib.contextmanager
def tmpfs(path, options: str):
    """A small tmpfs mounted at `path` (an empty directory) for the block: a real full or
    read-only filesystem. Mounting needs root, as CI has; elsewhere the test is skipped."""
    os.makedirs(path, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def keras_probabilities(model, images):
    sequences = images.reshape(len(images), -1).astype(np.float32) / 255.0
    sequences = sequences.reshape(len(images), -1, model.input_shape[-1])
    import tensorflow as tf

    return tf.nn.softmax(model.predict(sequences, verbose=0)).numpy()

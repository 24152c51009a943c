"""What several test files use: the repository root, a tiny training config, and running a
command in a subprocess as a user would."""

import os
import pathlib
import subprocess
import sys

from mnist_rnn.config import TrainConfig

ROOT = pathlib.Path(__file__).resolve().parent.parent


def tiny_config(tmp_dir, tfds_dir, **overrides) -> TrainConfig:
    """A config that trains in seconds on the sample and clearly beats chance."""
    return TrainConfig(**{
        **dict(rnn="dynamic", units=32, learning_rate=0.01, epochs=1, dataset="mnist_sample",
               data_dir=tfds_dir, model_dir=os.path.join(str(tmp_dir), "model"), verbose=0),
        **overrides,
    })


def run_python(*args, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`python args...` from the repository root, its output captured."""
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, **kwargs)


def run_module(module: str, *args, **kwargs) -> subprocess.CompletedProcess:
    """`python -m module args...`, as run_python."""
    return run_python("-m", module, *args, **kwargs)

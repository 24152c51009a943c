"""What a training run is made of: the problem's fixed shapes, the choices each setting allows,
and `TrainConfig`, the one source of every training default.

Imports nothing heavy, so that the commands check their flags before TensorFlow loads.
"""

import dataclasses
import importlib.util
import math
import numbers
import os
import resource
import typing
from typing import Callable

from mnist_rnn.errors import UserError, setting

SIDE = 28  # MNIST images are SIDE x SIDE pixels...
PIXELS = SIDE * SIDE
NUM_CLASSES = 10  # ...of the digits 0-9.

RNNS = ("static", "dynamic")
DATASETS = ("auto", "mnist", "mnist_sample")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
SAVED_MODEL_XLA = ("auto", "on", "off")
LR_SCHEDULES = ("constant", "cosine")


# The environment says which runtime runs; these two functions are the only readers of it.
def legacy_keras_requested(environ) -> bool:
    """Whether `environ` asks for Keras 2 (TF_USE_LEGACY_KERAS, as tf.keras reads it)."""
    return environ.get("TF_USE_LEGACY_KERAS", "").lower() in ("1", "true", "yes")


def check_runtime(environ) -> None:
    """Refuses a runtime that `environ` asks for and this project does not run on (an unknown
    Keras backend, Keras 2 on JAX, an extra not installed), before Keras loads."""
    backend = environ.get("KERAS_BACKEND", "") or "tensorflow"
    legacy = legacy_keras_requested(environ)
    if backend not in ("tensorflow", "jax"):
        raise UserError(f"KERAS_BACKEND={backend} is not supported: use tensorflow "
                        "(the default) or jax")
    if backend == "jax" and legacy:
        raise UserError("Keras 2 (TF_USE_LEGACY_KERAS=1) runs only on TensorFlow: "
                        "unset KERAS_BACKEND=jax or TF_USE_LEGACY_KERAS")
    if backend == "jax" and importlib.util.find_spec("jax") is None:
        raise UserError("KERAS_BACKEND=jax needs JAX: pip install 'mnist_rnn[jax]'")
    if legacy and importlib.util.find_spec("tf_keras") is None:
        raise UserError("TF_USE_LEGACY_KERAS=1 asks for Keras 2, which is not "
                        "installed: pip install 'mnist_rnn[keras2]', or unset "
                        "TF_USE_LEGACY_KERAS for Keras 3")


def valid_timesteps() -> list[int]:
    """Every sequence length that splits a 784-pixel image into equal steps."""
    return [t for t in range(1, PIXELS + 1) if PIXELS % t == 0]


# What a TrainConfig field must be: (test, what it must do, as said after "must "). TrainConfig
# checks them, and so do the flags of the same names, before TensorFlow loads.
CHECKS: dict[str, tuple[Callable[[object], bool], str]] = {
    "rnn": (lambda v: v in RNNS, f"be one of {', '.join(RNNS)}"),
    "units": (lambda v: v >= 1, "be at least 1"),
    "timesteps": (lambda v: v in valid_timesteps(), f"divide 784: one of {valid_timesteps()}"),
    "batch_size": (lambda v: v >= 1, "be at least 1"),
    "learning_rate": (lambda v: math.isfinite(v) and v > 0, "be a finite number > 0"),
    "lr_schedule": (lambda v: v in LR_SCHEDULES, f"be one of {', '.join(LR_SCHEDULES)}"),
    "epochs": (lambda v: v >= 1, "be at least 1"),
    "max_steps": (lambda v: v >= 0, "be 0 (no limit) or more"),
    "eval_every_steps": (lambda v: v >= 0, "be 0 (each epoch) or more"),
    "target_accuracy": (lambda v: 0 <= v <= 1, "be between 0 (off) and 1"),
    "dataset": (lambda v: v in DATASETS, f"be one of {', '.join(DATASETS)}"),
    "model_dir": (lambda v: v is None or v.strip() != "",
                  "name a directory (or be left out: runs/RNN)"),
    "saved_model_xla": (lambda v: v in SAVED_MODEL_XLA, f"be one of {', '.join(SAVED_MODEL_XLA)}"),
    "steps_per_execution": (lambda v: v >= 1, "be at least 1"),
    "distribution_strategy": (lambda v: v in STRATEGIES, f"be one of {', '.join(STRATEGIES)}"),
    "backup_every_steps": (lambda v: v >= 0, "be 0 (at each evaluation) or more"),
    "verbose": (lambda v: v in (0, 1, 2), "be 0, 1 or 2"),
}


def check(name: str, value) -> None:
    """Raises a UserError naming `name` unless `value` passes its CHECKS entry."""
    test, must = CHECKS[name]
    if not test(value):
        raise UserError(f"{setting(name, value)}: {setting(name)} must {must}")


def check_variable_length(rnn: str, variable_length: bool) -> None:
    """Raises a UserError unless the two go together: variable length needs the loop."""
    if variable_length and rnn == "static":
        raise UserError(f"{setting('variable_length', True)} needs {setting('rnn', 'dynamic')}: "
                        "the static model is unrolled into one fixed sequence length, so it "
                        "cannot run sequences of their own lengths")


def check_type(name: str, value, kind) -> None:
    """Raises a UserError naming `name` unless `value` is of the type `kind` (a float field
    takes an int too; only a bool field takes a bool)."""
    # NumPy's numbers too: a sweep may pass them.
    allowed = tuple({int: numbers.Integral, float: numbers.Real}.get(t, t)
                    for t in typing.get_args(kind) or (kind,))
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        names = " or ".join("None" if t is type(None) else t.__name__
                            for t in typing.get_args(kind) or (kind,))
        raise UserError(f"{setting(name, repr(value))}: {setting(name)} must be of type "
                        f"{names}")


def memory_needed(units: int, timesteps: int, batch_size: int) -> int:
    """Bytes that training the model takes at least: its float32 parameters four times over
    (weights, gradients, Adam's two moments) and each step's activations kept for the
    backward pass (four gates and two states per unit, step and example)."""
    parameters = 4 * units * (PIXELS // timesteps + units + 1) + NUM_CLASSES * (units + 1)
    return 4 * (4 * parameters + 6 * batch_size * timesteps * units)


def memory_available() -> int:
    """Bytes this process may use: the machine's memory, or less where a limit says so."""
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    for which in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        soft = resource.getrlimit(which)[0]
        if soft != resource.RLIM_INFINITY:
            limits.append(soft)
    return min(limits)


def check_memory(units: int, timesteps: int, batch_size: int) -> None:
    """Refuses a model too large for the machine, before anything is allocated."""
    needed, available = memory_needed(units, timesteps, batch_size), memory_available()
    if needed > available:
        raise UserError(
            f"{setting('units', units)} with {setting('batch_size', batch_size)} needs at least "
            f"{needed / 2**30:,.1f} GiB to train, and this process may use "
            f"{available / 2**30:,.1f} GiB: choose fewer {setting('units')} or a smaller "
            f"{setting('batch_size')}")


@dataclasses.dataclass
class TrainConfig:
    """Everything `trainer.train_and_evaluate` needs to know; each field is also a flag of
    `python -m mnist_rnn.train`."""

    rnn: str = "dynamic"  # One of RNNS.
    units: int = 128
    timesteps: int = 28  # One of valid_timesteps().
    batch_size: int = 100
    learning_rate: float = 0.003
    # One of LR_SCHEDULES: cosine decays the rate from learning_rate to 0 over the run.
    lr_schedule: str = "constant"
    epochs: int = 10
    max_steps: int = 0  # 0: no limit besides `epochs`.
    eval_every_steps: int = 0  # 0: once per epoch.
    target_accuracy: float = 0.0  # 0: off.
    dataset: str = "auto"  # One of DATASETS.
    data_dir: str | None = None  # None: TFDS's default.
    mnist_dir: str | None = None  # The four published MNIST files, to prepare `mnist` offline.
    model_dir: str | None = None  # None: runs/{rnn}.
    seed: int = 0
    export: bool = True  # Also write the SavedModel.
    saved_model_xla: str = "auto"  # One of SAVED_MODEL_XLA: its signatures compiled by XLA.
    export_tflite: bool = False  # Also write model.tflite and model_int8.tflite.
    jit_compile: bool = False
    # Steps per call into TensorFlow; lowered to fit every evaluation, backup and stop exactly.
    steps_per_execution: int = 40
    distribution_strategy: str = "auto"  # One of STRATEGIES.
    variable_length: bool = False  # Dynamic only: each image's own length, bucketed batches.
    backup_every_steps: int = 0  # 0: at each evaluation; always at each epoch end.
    overwrite: bool = False  # Start over instead of resuming.
    tensorboard: bool = True  # Write TensorBoard logs to model_dir/logs/.
    # Keras fit's display: 1 a progress bar, 2 a line per epoch, 0 none. How a run looks, not
    # what it computes: the command line always shows the progress bar.
    verbose: int = 1
    # A smoke test: 2 steps of 1 epoch. A later real run in the same model_dir replaces it.
    dry_run: bool = False

    def __post_init__(self):
        for field in dataclasses.fields(self):
            check_type(field.name, getattr(self, field.name), field.type)
        for name in CHECKS:
            check(name, getattr(self, name))
        check_variable_length(self.rnn, self.variable_length)
        check_memory(self.units, self.timesteps, self.batch_size)
        if self.model_dir is None:
            self.model_dir = f"runs/{self.rnn}"
        if self.dry_run:
            self.max_steps, self.epochs = 2, 1

    def last_step(self, steps_per_epoch: int) -> int:
        """The step the run ends at, unless it reaches target_accuracy first."""
        last = self.epochs * steps_per_epoch
        return min(last, self.max_steps) if self.max_steps else last


# Settings that may change between a run and its resumption: where files go, what is shown, and
# the grouping of steps into calls (same steps, same results).
RESUMABLE_FIELDS = frozenset({"model_dir", "data_dir", "mnist_dir", "export", "saved_model_xla",
                              "export_tflite", "verbose", "overwrite", "steps_per_execution",
                              "tensorboard"})


def run_defining(config: TrainConfig) -> dict:
    """The settings that define a run's results: every field but RESUMABLE_FIELDS."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in RESUMABLE_FIELDS}

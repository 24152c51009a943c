"""The backup that lets a killed training run resume where it stopped.

`model_dir/backup/` holds `step-N.weights.h5` (model and optimizer variables) and `state.json`
(the step, the evaluations so far, the timings and the settings of the run). The weights are
written first under a new name, then `state.json` is replaced to point at them, then older
weights are deleted: a kill at any moment leaves a consistent pair. Once the run is finished,
`state.json` says so and the weights go: model.keras holds them.
"""

import errno
import json
import os
import shutil

import numpy as np

from mnist_rnn import files
from mnist_rnn.compat import keras
from mnist_rnn.errors import NumericalError, UserError, setting

BACKUP_DIR = "backup"
STATE_FILE = "state.json"
WEIGHTS_PREFIX, WEIGHTS_SUFFIX = "step-", ".weights.h5"
# Beside the variables, a weights file holds its structure and names: about 25 KB measured
# from 16 to 256 units; four times that, to be sure.
H5_OVERHEAD_BYTES = 100_000


def load_state(directory: str) -> dict | None:
    """The last backup's state, or None when there is none."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable backup state ({e}); rerun with "
                        f"{setting('overwrite', True)} to start over") from None


def check_compatible(state: dict, settings: dict, dataset: str, backend: str) -> None:
    """Refuses to resume or reuse a run whose defining settings, dataset or Keras backend
    differ (each backend computes its own numbers)."""
    saved = state["flags"]
    differing = [
        f"{setting(name, settings.get(name))} (the run in progress has {saved.get(name)})"
        for name in sorted(set(saved) | set(settings))
        if saved.get(name) != settings.get(name)
    ]
    if state["dataset"] != dataset:
        differing.append(f"dataset {dataset} (the run in progress used {state['dataset']})")
    saved_backend = state.get("backend", "tensorflow")
    if saved_backend != backend:
        differing.append(f"KERAS_BACKEND={backend} (the run in progress used {saved_backend})")
    if differing:
        raise UserError(
            f"{setting('model_dir')} holds a run with other flags: {'; '.join(differing)}. "
            f"Rerun with its flags to resume, use another {setting('model_dir')}, or add "
            f"{setting('overwrite', True)} to start over"
        )


def restore(model: keras.Model, directory: str, state: dict) -> None:
    """Loads the backed-up model and optimizer variables into the compiled `model`."""
    path = os.path.join(directory, state["weights"])
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    try:
        model.load_weights(path)
    except Exception as e:  # h5py and Keras raise many types for a damaged file.
        raise UserError(
            f"cannot restore the backup {path}: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}; rerun with "
            f"{setting('overwrite', True)} to start over"
        ) from None


def all_finite(model: keras.Model) -> bool:
    return all(np.isfinite(v.numpy()).all() for v in model.variables)


def save(model: keras.Model, directory: str, state: dict) -> None:
    """Backs up `model`'s variables with `state` (which holds the step), then drops older
    weights: the previous backup goes only once this one is complete."""
    if not all_finite(model):
        raise NumericalError(f"the weights are no longer finite at step {state['step']}")
    os.makedirs(directory, exist_ok=True)
    name = f"{WEIGHTS_PREFIX}{state['step']}{WEIGHTS_SUFFIX}"
    _check_room(model, os.path.join(directory, name))
    files.write_via_tmp(os.path.join(directory, name), model.save_weights,
                        suffix=WEIGHTS_SUFFIX)
    files.write_json(os.path.join(directory, STATE_FILE), {**state, "weights": name})
    _remove_weights(directory, keep=name)


def _check_room(model: keras.Model, path: str) -> None:
    """Raises ENOSPC before writing when the disk cannot hold the weights: HDF5 meeting a
    full disk in the middle of a write can crash the whole process."""
    variables = list(model.variables) + list(model.optimizer.variables)
    # From shapes and types alone: distributed variables cannot be read here.
    needed = H5_OVERHEAD_BYTES + sum(
        int(np.prod(tuple(v.shape)))
        * np.dtype(getattr(v.dtype, "as_numpy_dtype", v.dtype)).itemsize for v in variables)
    if shutil.disk_usage(os.path.dirname(path)).free < needed:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def mark_finished(directory: str, state: dict) -> None:
    """Records that the run is done (a rerun then does nothing) and drops the weights, which
    model.keras now holds."""
    os.makedirs(directory, exist_ok=True)
    files.write_json(os.path.join(directory, STATE_FILE),
                     {**state, "finished": True, "weights": None})
    _remove_weights(directory)


def _remove_weights(directory: str, keep: str | None = None) -> None:
    for name in os.listdir(directory):
        if name.startswith(WEIGHTS_PREFIX) and name.endswith(WEIGHTS_SUFFIX) and name != keep:
            os.remove(os.path.join(directory, name))

"""The backup that lets a killed training run resume where it stopped.

`model_dir/backup/` holds `step-N.weights.npz` (the values of the model's and the optimizer's
variables, in their order) and `state.json` (the step, the evaluations so far, the timings,
the settings of the run and the runtime that wrote it). The weights are written first under a
new name, then `state.json` is replaced to point at them, then older weights are deleted: a
kill at any moment leaves a consistent pair. Once the run is finished, `state.json` says so and
the weights go: model.keras holds them.

The values are read and assigned variable by variable, which every runtime offers alike: Keras
2's weight files leave out the optimizer, whose moments an exact resume needs.
"""

import errno
import json
import os
import re
import shutil

import numpy as np

from mnist_rnn import compat, files
from mnist_rnn.compat import keras
from mnist_rnn.errors import NumericalError, UserError, setting
from mnist_rnn.outputs import STATE_FILE

WEIGHTS_PREFIX, WEIGHTS_SUFFIX = "step-", ".weights.npz"
WEIGHTS_NAME = re.compile(rf"{WEIGHTS_PREFIX}\d+{re.escape(WEIGHTS_SUFFIX)}")
# What a state must hold, and of which type, to be resumed from.
STATE_FIELDS = {"step": int, "flags": dict, "dataset": str, "evaluations": list}
# Zip headers and array descriptions beside the values: a few hundred bytes per variable.
ARCHIVE_OVERHEAD_BYTES = 100_000


def load_state(directory: str) -> dict | None:
    """The last backup's state, or None when there is none."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            state = json.load(f)
        _check_state(state)
    except (OSError, ValueError) as e:
        raise _damaged(directory, str(e)) from None
    return state


def _damaged(directory: str, why: str) -> UserError:
    return UserError(f"{os.path.join(directory, STATE_FILE)}: a damaged backup state ({why}); "
                     f"rerun with {setting('overwrite', True)} to start over")


def _check_state(state) -> None:
    """Raises ValueError, saying what is wrong, unless `state` is a backup's state."""
    if not isinstance(state, dict):
        raise ValueError("not a JSON object")
    for name, kind in STATE_FIELDS.items():
        if not isinstance(state.get(name), kind) or isinstance(state.get(name), bool):
            raise ValueError(f"no {kind.__name__} {name!r}")
    if state["step"] < 0:
        raise ValueError(f"step {state['step']} is negative")
    weights = state.get("weights")
    if state.get("finished"):
        return
    if not (isinstance(weights, str) and WEIGHTS_NAME.fullmatch(weights)):
        raise ValueError(f"no weights file named {WEIGHTS_PREFIX}N{WEIGHTS_SUFFIX}")
    if weights != weights_name(state["step"]):
        raise ValueError(f"step {state['step']} does not match its weights file {weights}")


def weights_name(step: int) -> str:
    """The name of the weights file backed up at `step`."""
    return f"{WEIGHTS_PREFIX}{step}{WEIGHTS_SUFFIX}"


def check_step(state: dict, directory: str, last_step: int) -> None:
    """Refuses a backup whose step lies past the run's `last_step`: written by hand, or for
    other data."""
    if state["step"] > last_step:
        raise _damaged(directory,
                       f"step {state['step']} is past the run's last step, {last_step}")


def is_backup_file(name: str) -> bool:
    """Whether `name` is one of the files a backup directory holds."""
    return name == STATE_FILE or bool(WEIGHTS_NAME.fullmatch(name))


def runtime_of(state: dict) -> str:
    """The runtime that wrote `state` (backups from before it was recorded name the backend
    only, and came from Keras 3)."""
    return state.get("runtime") or (
        "Keras 3 on JAX" if state.get("backend") == "jax" else "Keras 3 on TensorFlow")


def check_compatible(state: dict, settings: dict, dataset: str) -> None:
    """Refuses to resume or reuse a run whose defining settings, dataset or runtime differ
    (each runtime computes its own numbers)."""
    saved = state["flags"]
    differing = [
        f"{setting(name, settings.get(name))} (the run in progress has {saved.get(name)})"
        for name in sorted(set(saved) | set(settings))
        if saved.get(name) != settings.get(name)
    ]
    if state["dataset"] != dataset:
        differing.append(f"dataset {dataset} (the run in progress used {state['dataset']})")
    what = "a run with other flags" if differing else "a run of another runtime"
    written_by = runtime_of(state)
    if written_by != compat.RUNTIME:
        how = compat.RUNTIMES.get(written_by, "")
        differing.append(f"{compat.RUNTIME} (the run in progress was trained with "
                         f"{written_by}{': ' + how + ' to resume it' if how else ''})")
    if differing:
        raise UserError(
            f"{setting('model_dir')} holds {what}: {'; '.join(differing)}. "
            f"Rerun with its flags to resume, use another {setting('model_dir')}, or add "
            f"{setting('overwrite', True)} to start over"
        )


def _variables(model: keras.Model) -> dict[str, list]:
    """The variables a backup holds, by group, in their order (an optimizer creates its own
    when first built)."""
    if not getattr(model.optimizer, "built", False):  # Keras 2's build is a no-op once built.
        model.optimizer.build(model.trainable_variables)
    return {"model": list(model.weights), "optimizer": list(model.optimizer.variables)}


def restore(model: keras.Model, directory: str, state: dict) -> None:
    """Loads the backed-up model and optimizer variables into the compiled `model`."""
    path = os.path.join(directory, state["weights"])
    try:
        with np.load(path) as stored:
            for group, variables in _variables(model).items():
                names = sorted((k for k in stored.files if k.startswith(f"{group}_")),
                               key=lambda k: int(k.split("_")[1]))
                if len(names) != len(variables):
                    raise ValueError(f"{len(names)} {group} variables, not {len(variables)}")
                for variable, name in zip(variables, names):
                    value = stored[name]
                    if tuple(value.shape) != tuple(variable.shape):
                        raise ValueError(f"{name} has shape {value.shape}, not "
                                         f"{tuple(variable.shape)}")
                    variable.assign(value)
    except Exception as e:  # numpy and zipfile raise many types for a damaged file.
        raise UserError(
            f"cannot restore the backup {path}: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}; rerun with "
            f"{setting('overwrite', True)} to start over"
        ) from None


def save(model: keras.Model, directory: str, state: dict) -> None:
    """Backs up `model`'s variables with `state` (which holds the step), then drops older
    weights: the previous backup goes only once this one is complete."""
    values = {f"{group}_{i}": np.asarray(v.numpy())
              for group, variables in _variables(model).items()
              for i, v in enumerate(variables)}
    if not all(np.isfinite(v).all() for v in values.values()):
        raise NumericalError(f"the weights are no longer finite at step {state['step']}")
    os.makedirs(directory, exist_ok=True)
    name = weights_name(state["step"])
    path = os.path.join(directory, name)
    needed = ARCHIVE_OVERHEAD_BYTES + sum(v.nbytes for v in values.values())
    if shutil.disk_usage(directory).free < needed:  # Fail before writing anything.
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    files.write_via_tmp(path, lambda tmp: _write_npz(tmp, values))
    files.write_json(os.path.join(directory, STATE_FILE), {**state, "weights": name})
    _remove_weights(directory, keep=name)


def _write_npz(path: str, values: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **values)
        f.flush()
        os.fsync(f.fileno())


def mark_finished(directory: str, state: dict) -> None:
    """Records that the run is done (a rerun then does nothing) and drops the weights, which
    model.keras now holds."""
    os.makedirs(directory, exist_ok=True)
    files.write_json(os.path.join(directory, STATE_FILE),
                     {**state, "finished": True, "weights": None})
    _remove_weights(directory)


def _remove_weights(directory: str, keep: str | None = None) -> None:
    for name in os.listdir(directory):
        if WEIGHTS_NAME.fullmatch(name) and name != keep:
            os.remove(os.path.join(directory, name))

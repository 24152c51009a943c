"""Backups that let a killed training run resume where it stopped.

`model_dir/backup/` holds `step-N.weights.h5` (model and optimizer variables) and `state.json`
(the step, the evaluations so far, the timings and the flags of the run). The weights are
written first under a new name, then `state.json` is replaced to point at them, then older
weights are deleted: a kill at any moment leaves a consistent pair.
"""

import json
import os

from mnist_rnn.compat import keras
import numpy as np

from mnist_rnn import files
from mnist_rnn.errors import NumericalError, UserError

BACKUP_DIR = "backup"
STATE_FILE = "state.json"
# Flags that may change between a run and its resumption: where files go and how much is shown.
FREE_FLAGS = frozenset({"model_dir", "data_dir", "export", "verbose", "overwrite",
                        "steps_per_execution"})  # Same steps, same results, any grouping.


def run_flags(config_dict):
    """The flags that define a run: all but FREE_FLAGS."""
    return {k: v for k, v in config_dict.items() if k not in FREE_FLAGS}


def load_state(directory):
    """The last backup's state, or None when there is none."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(
            f"{path}: unreadable backup state ({e}); rerun with --overwrite to start over"
        ) from None


def check_compatible(state, flags, dataset):
    """Refuses to resume a run whose defining flags or dataset differ from this one's."""
    saved = state["flags"]
    differing = [
        f"--{name}={flags.get(name)} (the run in progress has {saved.get(name)})"
        for name in sorted(set(saved) | set(flags))
        if saved.get(name) != flags.get(name)
    ]
    if state["dataset"] != dataset:
        differing.append(f"dataset {dataset} (the run in progress used {state['dataset']})")
    if differing:
        raise UserError(
            f"--model_dir holds a run with other flags: {'; '.join(differing)}. Rerun with "
            "its flags to resume, use another --model_dir, or add --overwrite to start over"
        )


def restore(model, directory, state):
    """Loads the backed-up model and optimizer variables into the compiled `model`."""
    path = os.path.join(directory, state["weights"])
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    try:
        model.load_weights(path)
    except Exception as e:  # h5py and Keras raise many types for a damaged file.
        raise UserError(
            f"cannot restore the backup {path}: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}; rerun with --overwrite to start over"
        ) from None


def all_finite(model):
    return all(np.isfinite(v.numpy()).all() for v in model.variables)


class Backup(keras.callbacks.Callback):
    """Backs up every `every_steps` steps (0: never mid-epoch) and at each epoch end."""

    def __init__(self, directory, every_steps, step_fn, state_fn):
        super().__init__()
        self.directory = directory
        self.every_steps = every_steps
        self.step_fn = step_fn  # Returns the run's step count.
        self.state_fn = state_fn  # Returns the state dict to record with the weights.
        self.last_step = None

    def on_train_batch_end(self, batch, logs=None):
        # Only the step here: the full state (every evaluation so far) is built when saving.
        if self.every_steps and self.step_fn() % self.every_steps == 0:
            self.save(self.state_fn())

    def on_epoch_end(self, epoch, logs=None):
        self.save(self.state_fn())

    def save(self, state):
        if state["step"] == self.last_step:
            return
        if not all_finite(self.model):
            raise NumericalError(f"the weights are no longer finite at step {state['step']}")
        os.makedirs(self.directory, exist_ok=True)
        name = f"step-{state['step']}.weights.h5"
        files.write_via_tmp(os.path.join(self.directory, name), self.model.save_weights,
                            suffix=".weights.h5")
        files.write_json(os.path.join(self.directory, STATE_FILE), {**state, "weights": name})
        for old in os.listdir(self.directory):
            if old.startswith("step-") and old != name:
                os.remove(os.path.join(self.directory, old))
        self.last_step = state["step"]

"""A training run's directory: the names of what a run writes there, and the hand-over from
the run it held before to a new one (`overwrite`, or a real run after a dry run).

Only these exact names are ever moved or deleted: a --model_dir may hold the user's own files.
The earlier run stays whole until the new run's first backup is complete: `hand_over` moves its
files into `.replaced/`, the new run writes its first logs and backup, and `finish_hand_over`
deletes them. A run killed in between finds `.replaced/` at its next start, and `recover` puts
the earlier run back.
"""

import os
import shutil

from mnist_rnn import checkpoint, reading, report, tflite
from mnist_rnn.errors import OutputError, setting

MODEL_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
METRICS_FILE = "metrics.json"
LOGS_DIR = "logs"
REPLACED_DIR = ".replaced"

# Everything a run writes besides its lock, the backup last (it says whose the rest is).
OUTPUTS = (MODEL_FILE, SAVED_MODEL_DIR, tflite.FLOAT_FILE, tflite.INT8_FILE, METRICS_FILE,
           report.REPORT_FILE, report.CONFUSION_PNG, report.ERRORS_PNG, reading.ACCURACY_PNG,
           LOGS_DIR, checkpoint.BACKUP_DIR)
DIRECTORIES = (SAVED_MODEL_DIR, LOGS_DIR, checkpoint.BACKUP_DIR)


def written(model_dir: str) -> list[str]:
    """The run's outputs present in `model_dir`, sorted."""
    return sorted(n for n in OUTPUTS if os.path.lexists(os.path.join(model_dir, n)))


def check_kinds(model_dir: str) -> None:
    """Raises OutputError when one of the run's names in `model_dir` is taken by something
    of another kind (a file where the run keeps a directory, or the reverse)."""
    for name in OUTPUTS:
        path = os.path.join(model_dir, name)
        if os.path.lexists(path) and os.path.isdir(path) != (name in DIRECTORIES):
            kind = "directory" if name in DIRECTORIES else "file"
            raise OutputError(
                f"{path} is not a {kind}, and a training run writes its {name} there: move "
                f"it away or use another {setting('model_dir')}")


def hand_over(model_dir: str) -> None:
    """Moves the earlier run's outputs in `model_dir` into .replaced/, out of the new run's
    way (a no-op when there are none)."""
    names = written(model_dir)
    if not names:
        return
    replaced = os.path.join(model_dir, REPLACED_DIR)
    os.makedirs(replaced, exist_ok=True)
    for name in names:
        os.replace(os.path.join(model_dir, name), os.path.join(replaced, name))


def finish_hand_over(model_dir: str) -> None:
    """Deletes the earlier run's outputs, once the new run's first backup is complete."""
    shutil.rmtree(os.path.join(model_dir, REPLACED_DIR), ignore_errors=True)


def recover(model_dir: str) -> None:
    """Completes or undoes a hand-over that a kill interrupted: with the new run's backup
    complete, the earlier run's outputs go; without, they come back in place of what the new
    run had begun to write."""
    replaced = os.path.join(model_dir, REPLACED_DIR)
    if not os.path.isdir(replaced):
        return
    backup = os.path.join(model_dir, checkpoint.BACKUP_DIR)
    if os.path.exists(os.path.join(backup, checkpoint.STATE_FILE)):
        finish_hand_over(model_dir)
        return
    for name in written(replaced):
        _remove(os.path.join(model_dir, name))
        os.replace(os.path.join(replaced, name), os.path.join(model_dir, name))
    shutil.rmtree(replaced, ignore_errors=True)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)

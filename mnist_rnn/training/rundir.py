"""A training run's directory: the hand-over from the run it held before to a new one
(`overwrite`, or a real run after a dry run). The names of what a run writes: outputs.py.

Only these exact names are ever moved or deleted: a --model_dir may hold the user's own files,
and a `.replaced/` without the run's mark is the user's, refused rather than touched.
The earlier run stays whole until the new run's first backup is complete: `hand_over` moves its
files into `.replaced/`, the new run writes its first logs and backup, and `finish_hand_over`
deletes them. A run killed in between finds `.replaced/` at its next start, and `recover` puts
the earlier run back.
"""

import contextlib
import os

from mnist_rnn import files
from mnist_rnn.errors import OutputError, setting
from mnist_rnn.outputs import BACKUP_DIR, DIRECTORIES, OUTPUTS, STATE_FILE

REPLACED_DIR = ".replaced"
HAND_OVER_MARK = ".hand-over"  # In REPLACED_DIR: what tells the run's own from a user's.


def written(model_dir: str) -> list[str]:
    """The run's outputs present in `model_dir`, sorted."""
    return sorted(n for n in OUTPUTS if os.path.lexists(os.path.join(model_dir, n)))


def check_kinds(model_dir: str) -> None:
    """Raises OutputError when one of the run's names in `model_dir` is taken by something
    it must not touch: a link (never written through), something of another kind (a file
    where the run keeps a directory, or the reverse), or a .replaced/ the run did not make."""
    for name in (*OUTPUTS, REPLACED_DIR):
        path = os.path.join(model_dir, name)
        if not os.path.lexists(path):
            continue
        if os.path.islink(path):
            raise _taken(path, name, "a symbolic link, which a run never follows")
        directory = name in DIRECTORIES or name == REPLACED_DIR
        if os.path.isdir(path) != directory:
            raise _taken(path, name, "not a directory" if directory else "not a file")
        if name == REPLACED_DIR and not os.path.isfile(os.path.join(path, HAND_OVER_MARK)):
            raise _taken(path, name, "not a run's hand-over (starting over keeps the earlier "
                         "run there until the new one's first backup)")


def _taken(path: str, name: str, why: str) -> OutputError:
    return OutputError(f"{path} is {why}, and a training run keeps its {name} there: move it "
                       f"away or use another {setting('model_dir')}")


def hand_over(model_dir: str) -> None:
    """Moves the earlier run's outputs in `model_dir` into .replaced/, out of the new run's
    way (a no-op when there are none)."""
    names = written(model_dir)
    if not names:
        return
    replaced = os.path.join(model_dir, REPLACED_DIR)
    os.mkdir(replaced)
    files.write_text(os.path.join(replaced, HAND_OVER_MARK),
                     "The run this directory held before; it goes once the new run has "
                     "backed up.\n")
    for name in names:
        os.replace(os.path.join(model_dir, name), os.path.join(replaced, name))


def finish_hand_over(model_dir: str) -> None:
    """Deletes the earlier run's outputs, once the new run's first backup is complete: only
    the run's names, so that a file of anyone else's stays."""
    replaced = os.path.join(model_dir, REPLACED_DIR)
    for name in (*written(replaced), HAND_OVER_MARK):
        files.remove(os.path.join(replaced, name))
    with contextlib.suppress(OSError):
        os.rmdir(replaced)


def recover(model_dir: str) -> None:
    """Completes or undoes a hand-over that a kill interrupted: with the new run's backup
    complete, the earlier run's outputs go; without, they come back in place of what the new
    run had begun to write."""
    replaced = os.path.join(model_dir, REPLACED_DIR)
    if not os.path.isfile(os.path.join(replaced, HAND_OVER_MARK)):
        return
    backup = os.path.join(model_dir, BACKUP_DIR)
    if not os.path.exists(os.path.join(backup, STATE_FILE)):
        for name in written(replaced):
            files.remove(os.path.join(model_dir, name))
            os.replace(os.path.join(replaced, name), os.path.join(model_dir, name))
    finish_hand_over(model_dir)

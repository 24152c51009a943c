"""Crash-safe writes: everything is written under a temporary name in the target's own
directory and renamed into place, so a crash mid-write never replaces a good file."""

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from typing import Callable

from mnist_rnn.errors import OutputError, UserError, setting

LOCK_FILE = ".lock"

# A temporary's name: "." + its target's name + TMP_MARK + 8 random characters of tempfile's
# (never a name that exists: it is created exclusively) + a suffix some writers need.
TMP_MARK = ".tmp-"
_TMP_SUFFIXES = ("", ".keras", ".png", ".tflite", ".old")
_TMP_NAME = re.compile(rf"\.(?P<target>.+){re.escape(TMP_MARK)}[a-z0-9_]{{8}}"
                       rf"(?P<suffix>{'|'.join(re.escape(s) for s in _TMP_SUFFIXES)})")


def _tmp_path(path, suffix="", directory=False):
    """A new, empty temporary file (or `directory`) beside `path`, created under a name
    nothing held: a link or a file planted in its place is never written through."""
    parent, name = os.path.split(os.path.abspath(path))
    if directory:
        tmp = tempfile.mkdtemp(suffix, f".{name}{TMP_MARK}", parent)
    else:
        fd, tmp = tempfile.mkstemp(suffix, f".{name}{TMP_MARK}", parent)
        os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    # tempfile makes them private; the target gets the modes of any new file or directory.
    os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)
    return tmp


_together: list[tuple[str, str]] | None = None  # (temporary, target) of all_or_nothing.


def write_via_tmp(path, write, suffix=""):
    """Calls write(tmp) for a temporary path beside `path`, then renames it into place (at the
    end of the enclosing `all_or_nothing` block, if any)."""
    tmp = _tmp_path(path, suffix)
    try:
        write(tmp)
        if _together is not None:
            _together.append((tmp, path))
            tmp = None
        else:
            os.replace(tmp, path)
    finally:
        if tmp and os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def all_or_nothing():
    """Files that belong together: each write_via_tmp in the block keeps its temporary, and
    they are all renamed into place once the block has written them all; if it fails, none
    is (their temporaries go), and every earlier file stays."""
    global _together
    outer, mine = _together, []
    _together = mine
    try:
        yield
    except BaseException:
        for tmp, _ in mine:
            if os.path.exists(tmp):
                os.remove(tmp)
        raise
    finally:
        _together = outer
    if outer is not None:
        outer.extend(mine)
    else:
        for tmp, path in mine:
            os.replace(tmp, path)


def write_json(path, obj):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())

    write_via_tmp(path, write)


def write_text(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    write_via_tmp(path, write)


def pyplot():
    """matplotlib's pyplot drawing to files only: no display is needed or opened."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def save_figure(fig, path, **savefig_options):
    """fig.savefig to `path` (a .png), crash-safe."""
    write_via_tmp(path, lambda tmp: fig.savefig(tmp, format="png", **savefig_options),
                  suffix=".png")


def save_model(model, path):
    """model.save to `path` (a .keras file), crash-safe."""
    write_via_tmp(path, model.save, suffix=".keras")  # Keras insists on the extension.


def replace_dir(write, path):
    """Calls write(tmp_dir) on a new empty directory, then swaps it in for `path`; the old
    one is kept until then. Returns what write returned."""
    tmp = _tmp_path(path, directory=True)
    old = tmp + ".old"  # As unguessable as tmp, and free while tmp is ours.
    try:
        written = write(tmp)
        if os.path.lexists(path):
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        remove(old)
    return written


def remove(path: str) -> None:
    """Deletes a file, a link (not what it points to) or a directory tree, if there."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def remove_stale_tmp(directory: str, ours: Callable[[str], bool]) -> None:
    """Deletes the temporaries that a killed write left in `directory`, for the targets whose
    names `ours` accepts only: a user's file that merely looks like a temporary stays."""
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        match = _TMP_NAME.fullmatch(name)
        if not match or not ours(match["target"]):
            continue
        target = os.path.join(directory, name)
        original = os.path.join(directory, match["target"])
        if match["suffix"] == ".old" and not os.path.lexists(original):
            os.replace(target, original)  # Killed between the two renames of replace_dir.
        else:
            remove(target)


def ensure_writable_dir(path, setting_name: str = "model_dir") -> None:
    """Creates `path` if needed; raises OutputError with a one-line reason, naming the setting
    that gave the path, if it cannot be written."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputError(f"{setting(setting_name, path)} is not a directory: name a "
                          "directory, new or existing")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise OutputError(
            f"cannot write to {setting(setting_name, path)}: {e.strerror or e}") from None


def write_or_fail(write, *args):
    """Runs the file write `write(*args)` and returns what it returns; a full disk or a
    read-only directory becomes one OutputError naming the file. The previous file is kept:
    every write here goes via a temporary."""
    try:
        return write(*args)
    except OSError as e:
        raise OutputError(
            f"cannot write to {getattr(e, 'filename', None) or (args[-1] if args else '?')}: "
            f"{e.strerror or e}; the previous files are kept"
        ) from None


class _NotALock(Exception):
    """Why a file cannot serve as a lock."""


def _open_lock_file(path: str, create: bool) -> int | None:
    """A descriptor of the lock file `path` (None when it does not exist and not `create`).
    Raises _NotALock for a file that cannot be one: a link (never followed), a hard link to
    another file, a FIFO (never waited on), a directory."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | (os.O_CREAT if create else 0), 0o644)
    except FileNotFoundError:
        if create:
            raise
        return None
    except OSError as e:
        raise _NotALock("a symbolic link, which a run never follows" if os.path.islink(path)
                        else e.strerror or str(e)) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise _NotALock("not a regular file" if not stat.S_ISREG(info.st_mode) else
                        "a hard link to another file")
    return fd


def _open_lock(directory: str, setting_name: str, create: bool) -> int | None:
    """A descriptor of `directory`'s lock file (see _open_lock_file); one that cannot be a
    lock is an OutputError naming it."""
    path = os.path.join(directory, LOCK_FILE)
    try:
        return _open_lock_file(path, create)
    except _NotALock as e:
        raise OutputError(f"cannot lock {setting(setting_name, directory)}: {path}: {e}; "
                          f"remove it, or use another {setting(setting_name)}") from None


def _lock(fd: int, directory: str, setting_name: str) -> None:
    """Takes the lock on `fd`, or raises UserError naming the process that holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise UserError(
            f"{setting(setting_name, directory)} is in use by another run (process {holder}): "
            f"wait for it to end, or use another {setting(setting_name)}") from None


def check_not_busy(directory: str, setting_name: str = "model_dir") -> None:
    """Refuses at once a `directory` that another run holds (see `exclusive`), creating
    nothing: a cheap check before the slow start, which `exclusive` makes sure of later."""
    if not os.path.isdir(directory):
        return
    fd = _open_lock(directory, setting_name, create=False)
    if fd is not None:
        _lock(fd, directory, setting_name)
        os.close(fd)  # Releases it.


@contextlib.contextmanager
def exclusive(directory: str, setting_name: str = "model_dir"):
    """Holds an exclusive lock on `directory` (its .lock file) for the block. Another process
    holding it stops this one with one line naming that process. The OS releases the lock
    when its process ends, however it ends, so a killed run never leaves a stale one."""
    fd = _open_lock(directory, setting_name, create=True)
    _lock(fd, directory, setting_name)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # Releases the lock.


@contextlib.contextmanager
def waiting_for(path: str):
    """Holds an exclusive lock on the file `path` (created if need be; one that cannot be a
    lock is an OutputError) for the block, waiting first for any other process that holds
    it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        fd = _open_lock_file(path, create=True)
    except _NotALock as e:
        raise OutputError(f"cannot lock {path}: {e}; remove it") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def native_stderr_without(noise: re.Pattern):
    """Holds back what native code writes to file descriptor 2 in the block (TensorFlow's and
    LiteRT's C++ logs go there, past Python), then passes on every line but `noise`'s."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines(keepends=True):
                if not noise.match(line):
                    sys.stderr.write(line)


def as_os_error(error: Exception, path: str) -> OSError:
    """TensorFlow's error (a tf.errors.OpError) writing `path` as the OSError a file write
    would have raised."""
    code = errno.ENOSPC if "No space left" in str(error) else errno.EIO
    return OSError(code, os.strerror(code), path)

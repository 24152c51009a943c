"""Errors a user can fix. The commands print them as one line, without a traceback (unless
--verbosity=1 or more asks for one), and exit with status 1.

A message names the settings it is about with `setting(name, value)`. `str(error)` writes them as
Python arguments (`learning_rate`, `model_dir=runs/x`), for code that calls the library;
`error.as_flags()` writes them as flags (`--learning_rate`, `--model_dir=runs/x`), for the
commands.
"""

import re

_OPEN, _EQUALS, _CLOSE = "\x1e", "\x1d", "\x1f"  # Control characters: never in a path.
_MARKED = re.compile(f"{_OPEN}([^{_EQUALS}{_CLOSE}]*)(?:{_EQUALS}([^{_CLOSE}]*))?{_CLOSE}")


def setting(name: str, value: object = None) -> str:
    """A setting's name, or `name=value`, marked for either way of writing it."""
    if value is None:
        return f"{_OPEN}{name}{_CLOSE}"
    return f"{_OPEN}{name}{_EQUALS}{value}{_CLOSE}"


def one_line(text: str) -> str:
    """`text` with its control characters escaped (a path may hold a newline), so that one
    message stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _as_argument(match: re.Match) -> str:
    name, value = match.groups()
    return name if value is None else f"{name}={value}"


def _as_flag(match: re.Match) -> str:
    name, value = match.groups()
    if value == "True":
        return f"--{name}"
    if value == "False":
        return f"--no{name}"
    return f"--{name}" if value is None else f"--{name}={value}"


class UserError(Exception):
    """Something wrong with the input or the environment, with the fix in its message."""

    def __init__(self, message: str):
        super().__init__(_MARKED.sub(_as_argument, message))
        self.marked = message

    def as_flags(self) -> str:
        """The message with its settings written as command-line flags."""
        return _MARKED.sub(_as_flag, self.marked)


class DatasetUnavailableError(UserError):
    """Full MNIST is neither prepared in the data dir nor downloadable."""


class OutputError(UserError):
    """An output directory cannot be written."""


class ModelLoadError(UserError):
    """A model path is missing, corrupt or not a model."""


class ImageError(UserError):
    """An input image is missing, unreadable or of the wrong shape."""


class NumericalError(UserError):
    """The loss or the weights stopped being finite numbers."""


class Interrupted(UserError):
    """Training stopped cleanly on a signal, after a backup; `exit_status` is the shell's
    128 + the signal's number."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_status = 128 + signal_number

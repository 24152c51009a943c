"""Errors a user can fix. The command-line tools print them as one line, without a traceback
(unless --verbosity=1 or more asks for one), and exit with status 1."""


class UserError(Exception):
    """Something wrong with the input or the environment, with the fix in its message."""


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

"""What the commands share: the flags that mean the same in each, and errors as one line.
The only module that words things as flags; the library speaks in arguments.

Each command defines its flags in `define_flags(flag_values)` and runs `cli.run(main,
define_flags)`, so its module can be imported (by tests, by another command) without
defining anything.
"""

import gc
import logging as std_logging
import os
import re
import signal
import sys
from typing import Callable

from absl import app, flags, logging

from mnist_rnn import config, errors, files

FLAGS = flags.FLAGS
# What TensorFlow's C++ side prints as it starts on any machine: information, and on one
# without CUDA the failed CUDA probe. Other lines (warnings, real errors) still show.
STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|I\d{4} |To enable the following instructions:"
    r"|E\d{4} \S+ +\d+ cuda_(platform|executor|diagnostics)\.cc)")


def define_dataset_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    flags.DEFINE_enum("dataset", "auto", config.DATASETS,
                      "mnist: full MNIST via TFDS (downloads once). mnist_sample: the bundled "
                      "5,000 digits, no network. auto: mnist if prepared or downloadable, else "
                      "the sample.", flag_values=flag_values)
    flags.DEFINE_string("data_dir", None,
                        "TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).",
                        flag_values=flag_values)
    flags.DEFINE_string("mnist_dir", None,
                        "A directory holding full MNIST's four files as published "
                        "(train-images-idx3-ubyte.gz, ...): TFDS prepares mnist from them in "
                        "--data_dir, offline, checking their sizes and sums. Implies full MNIST.",
                        flag_values=flag_values)


def define_model_flag(flag_values: flags.FlagValues = FLAGS) -> None:
    """--model, for the commands that read a trained model."""
    flags.DEFINE_string("model", None, "A model.keras file or a saved_model/ directory.",
                        flag_values=flag_values)
    flags.mark_flag_as_required("model", flag_values=flag_values)


def define_saved_model_xla_flag(flag_values: flags.FlagValues = FLAGS) -> None:
    flags.DEFINE_enum("saved_model_xla", config.TrainConfig().saved_model_xla,
                      config.SAVED_MODEL_XLA,
                      "Run the SavedModel's signatures compiled by XLA, for a few batch sizes "
                      "(padded up): auto where it pays (the loop; the unrolled graph up to 28 "
                      "steps), on, or off (a plain graph; TF Serving runs compiled ones only "
                      "with --xla_cpu_compilation_enabled=true).", flag_values=flag_values)


def register_checks(names: list[str], flag_values: flags.FlagValues = FLAGS) -> None:
    """Checks the flags `names`, each of a TrainConfig field's name and kind, as TrainConfig
    checks the field (config.CHECKS)."""
    for name in names:
        test, must = config.CHECKS[name]
        flags.register_validator(name, test, f"--{name} must {must}", flag_values=flag_values)


def run(main: Callable[[list[str]], int | None],
        define_flags: Callable[[flags.FlagValues], None], takes_args: bool = False,
        before_tensorflow: Callable[[], None] | None = None) -> None:
    """Defines the command's flags and runs `main` under absl: user errors become one line
    `error: ...` with exit status 1 (a traceback only with --verbosity=1 or more); SIGINT and
    SIGTERM, one line and 130 or 143. takes_args: main accepts positional arguments (else
    they are refused). before_tensorflow: the command's own checks that need no TensorFlow,
    run before it loads."""
    define_flags(FLAGS)

    def wrapped(argv):
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, _stop)
        verbose = FLAGS["verbosity"].present and FLAGS.verbosity >= 1
        try:
            if len(argv) > 1 and not takes_args:
                sys.exit(f"error: unexpected arguments {argv[1:]}: flags look like "
                         "--name=value")
            if not FLAGS["verbosity"].present:
                # TensorFlow logs every save at INFO; show warnings unless --verbosity asks.
                logging.set_verbosity(logging.WARNING)
            config.check_runtime(os.environ)
            if before_tensorflow:
                before_tensorflow()
            if not verbose and "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
                load_tensorflow_quietly()
            status = main(argv)
        except errors.Interrupted as e:
            print(errors.one_line(e.as_flags()), file=sys.stderr)
            status = e.exit_status
        except errors.UserError as e:
            if verbose:
                raise
            status = f"error: {errors.one_line(e.as_flags())}"
        except SystemExit as e:  # A command's own sys.exit("error: ...").
            status = e.code
        except Stopped as e:
            # The work cut short may hold TensorFlow objects that log their creation as they
            # go; that is not news now.
            std_logging.getLogger("tensorflow").disabled = True
            print(f"stopped on {signal.Signals(e.signal_number).name}; every file written is "
                  "whole: run the same command again to finish", file=sys.stderr)
            status = 128 + e.signal_number
        except Exception as e:
            if verbose or not (why := out_of_resources(e)):
                raise
            status = f"error: {errors.one_line(why)}"
        exit_now(status)

    app.run(wrapped, flags_parser=_parse_flags)


def out_of_resources(error: Exception) -> str | None:
    """One line for an error the machine gave (a file that cannot be read or written, memory
    run out), or None for any other, which is a bug and keeps its traceback."""
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}; every file written before is whole"
    tf = sys.modules.get("tensorflow")
    if isinstance(error, MemoryError) or (
            tf is not None and isinstance(error, tf.errors.ResourceExhaustedError)) or (
            "RESOURCE_EXHAUSTED" in str(error)[:200]):
        return ("out of memory: the machine cannot hold this model and its batch (fewer "
                "--units or a smaller --batch_size need less)")
    return None


class Stopped(BaseException):
    """SIGINT or SIGTERM outside training (which stops at a step of its own): like
    KeyboardInterrupt, past the `except Exception` of code that must not swallow it."""

    def __init__(self, signal_number: int):
        super().__init__(signal_number)
        self.signal_number = signal_number


def _stop(number, frame):
    raise Stopped(number)


def exit_now(status: int | str | None) -> None:
    """Ends the process as sys.exit(status) does, but first moves every object out of the
    garbage collector's reach (gc.freeze), so that the interpreter's teardown does not walk
    TensorFlow's objects, which takes most of a second (benchmarks/README.md). By now every
    file is written."""
    if isinstance(status, str):
        print(status, file=sys.stderr)
        status = 1
    gc.freeze()
    sys.exit(status or 0)


def load_tensorflow_quietly() -> None:
    """Imports TensorFlow and lists its devices (where its start-up lines come from), keeping
    back the lines of STARTUP_NOISE."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "1"  # And no information once it runs.
    with files.native_stderr_without(STARTUP_NOISE):
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag reported as one line `error: --flag...`."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        # absl starts its messages with "flag ", "flags x=1, y=2: " or "ERROR:: ".
        message = re.sub(r"^(flag |flags [^:]*: |ERROR:: )", "", str(e))
        sys.exit(f"error: {message}; see --helpfull")

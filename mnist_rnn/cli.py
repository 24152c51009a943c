"""What every command-line tool shares: the dataset flags and the way errors are reported."""

import sys

from absl import app, flags, logging

from mnist_rnn import data, errors

flags.DEFINE_enum("dataset", "auto", data.DATASETS,
                  "mnist: full MNIST via TFDS (downloads once). mnist_sample: the bundled "
                  "5,000 digits, no network. auto: mnist if prepared or downloadable, else "
                  "the sample.")
flags.DEFINE_string("data_dir", None,
                    "TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).")

FLAGS = flags.FLAGS


def define_model_flag():
    """--model, for the tools that read a trained model (defined once per process)."""
    if "model" not in FLAGS:
        flags.DEFINE_string("model", None, "A model.keras file or a saved_model/ directory.")
        flags.mark_flag_as_required("model")


def run(main):
    """app.run(main), with user errors printed as one line and exit status 1."""

    def wrapped(argv):
        if len(argv) > 1 and not getattr(main, "takes_args", False):
            sys.exit(f"error: unexpected arguments {argv[1:]}: flags look like --name=value")
        verbose = FLAGS["verbosity"].present and FLAGS.verbosity >= 1
        if not FLAGS["verbosity"].present:
            # TensorFlow logs every save at INFO; show warnings unless --verbosity asks more.
            logging.set_verbosity(logging.WARNING)
        try:
            return main(argv)
        except errors.UserError as e:
            if verbose:
                raise
            sys.exit(f"error: {e}")

    app.run(wrapped)

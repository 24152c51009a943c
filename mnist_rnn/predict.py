"""Classify digit images: `python -m mnist_rnn.predict --model=PATH IMAGE...`.

PATH is a model.keras file or a saved_model/ directory. IMAGE is a PNG, JPEG, BMP or GIF of
any size and colour, or a .npy array. A file that cannot be read gets one line on stderr and
the others are still classified; the exit status is then 1.
"""

import json
import sys

from absl import flags

from mnist_rnn import cli

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    cli.define_model_flag(flag_values)
    fv = dict(flag_values=flag_values)
    flags.DEFINE_bool("invert", None,
                      "--invert: dark digits on a light background; --noinvert: light on "
                      "dark, as MNIST. Default: decided per image from its border.", **fv)
    flags.DEFINE_integer("top_k", 1, "Also print the k most likely digits.", lower_bound=1,
                         upper_bound=10, **fv)
    flags.DEFINE_bool("json", False, "Print one JSON document instead of text lines.", **fv)


def main(argv):
    paths = argv[1:]
    if not paths:
        sys.exit("error: no images given: python -m mnist_rnn.predict --model=PATH IMAGE...")
    from mnist_rnn import serving  # TensorFlow loads once the flags are valid.

    predictor = serving.load(FLAGS.model)
    results = serving.predict_files(predictor, paths, FLAGS.invert, FLAGS.top_k)
    if FLAGS.json:
        print(json.dumps(results, indent=2))
    for result in results:
        if "error" in result:
            print(serving.format_result(result), file=sys.stderr)
        elif not FLAGS.json:
            print(serving.format_result(result))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    cli.run(main, define_flags, takes_args=True)

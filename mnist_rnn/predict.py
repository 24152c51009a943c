"""Classify digit images: `python -m mnist_rnn.predict --model=PATH IMAGE...`.

PATH is a model.keras file or a saved_model/ directory. IMAGE is a PNG, JPEG, BMP or GIF of
any size and colour, or a .npy array. A file that cannot be read gets one line on stderr and
the others are still classified; the exit status is then 1.
"""

import json
import sys

from absl import flags

from mnist_rnn import cli, inference

cli.define_model_flag()
flags.DEFINE_bool("invert", None,
                  "--invert: dark digits on a light background; --noinvert: light on dark, as "
                  "MNIST. Default: decided per image from its border.")
flags.DEFINE_integer("top_k", 1, "Also print the k most likely digits.", lower_bound=1,
                     upper_bound=10)
flags.DEFINE_bool("json", False, "Print one JSON document instead of text lines.")

FLAGS = flags.FLAGS


def main(argv):
    paths = argv[1:]
    if not paths:
        sys.exit("error: no images given: python -m mnist_rnn.predict --model=PATH IMAGE...")
    predictor = inference.load(FLAGS.model)
    results = inference.predict_files(predictor, paths, FLAGS.invert, FLAGS.top_k)
    if FLAGS.json:
        print(json.dumps(results, indent=2))
    for result in results:
        if "error" in result:
            print(inference.format_result(result), file=sys.stderr)
        elif not FLAGS.json:
            print(inference.format_result(result))
    return 1 if any("error" in r for r in results) else 0


main.takes_args = True

if __name__ == "__main__":
    cli.run(main)

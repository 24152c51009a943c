"""Classify digit images: `python -m mnist_rnn.predict --model=PATH IMAGE...`.

PATH is a model.keras file or a saved_model/ directory. IMAGE is a PNG, JPEG, BMP or GIF of
any size and colour, or a .npy array. A file that cannot be read gets one line on stderr and
the others are still classified; the exit status is then 1.

--per_step also gives the answer after each step (row) read: the step from which the final
answer holds, and IMAGE.steps.png beside each image (or in --output_dir) showing the digit
revealed step by step above each class's probability.
"""

import json
import os
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
    flags.DEFINE_bool("per_step", False,
                      "Also the answer after each step read: the step where it settles, and a "
                      "chart IMAGE.steps.png per image (with --json: step_probabilities).", **fv)
    flags.DEFINE_string("output_dir", None,
                        "With --per_step: where to write the charts (default: beside each "
                        "image).", **fv)
    flags.DEFINE_bool("overwrite", False,
                      "With --per_step: replace charts already there (an image given to the "
                      "same call never is).", **fv)


def main(argv):
    paths = argv[1:]
    if not paths:
        sys.exit("error: no images given: python -m mnist_rnn.predict --model=PATH IMAGE...")
    from mnist_rnn import files  # TensorFlow loads once flags are valid.
    from mnist_rnn.serving import answers, formats

    if FLAGS.per_step and FLAGS.output_dir:
        files.ensure_writable_dir(FLAGS.output_dir, "output_dir")
    # Chart paths written, and the inputs, which no chart may replace.
    used = {os.path.realpath(p) for p in paths}
    model = formats.load(FLAGS.model, eager=True)  # One call: tracing would cost more.
    results = []
    for chunk, digits in answers.predict_files(model, paths, FLAGS.invert, FLAGS.top_k,
                                               FLAGS.per_step):  # Shown as they come.
        if FLAGS.per_step:
            _write_charts(chunk, digits, FLAGS.output_dir, used, FLAGS.overwrite)
        for result in chunk:
            if "error" in result:
                print(answers.format_result(result), file=sys.stderr, flush=True)
            elif not FLAGS.json:
                print(answers.format_result(result), flush=True)
        results += chunk
    if FLAGS.json:
        print(json.dumps(results, indent=2))
    return 1 if any("error" in r for r in results) else 0


def _write_charts(results: list[dict], digits: dict, output_dir: str | None,
                  used: set[str], overwrite: bool) -> None:
    """IMAGE.steps.png for each digit read, each under a name not `used` yet (real paths,
    which it then adds), replacing a file only when `overwrite`; a chart that cannot be
    written is that image's error line."""
    from mnist_rnn.evaluation import reading

    for i, digit in digits.items():
        result = results[i]
        stem = os.path.splitext(result["file"])[0]
        if output_dir:
            stem = os.path.join(output_dir, os.path.basename(stem))
        chart, n = stem + reading.STEPS_PNG_SUFFIX, 1
        while os.path.realpath(chart) in used:  # An input, or two images of one name.
            n += 1
            chart = f"{stem}-{n}{reading.STEPS_PNG_SUFFIX}"
        used.add(os.path.realpath(chart))
        if os.path.lexists(chart) and not overwrite:
            result["error"] = (f"{chart} exists: pass --overwrite to replace the chart, or "
                               "--output_dir to write the charts elsewhere")
            continue
        try:
            reading.write_image_chart(
                digit, result["step_probabilities"], chart,
                f"{os.path.basename(result['file'])}: the answer after each step read")
            result["chart"] = chart
        except OSError as e:
            result["error"] = (f"cannot write {chart}: {e.strerror or e}; pass --output_dir "
                               "to write the charts elsewhere")


if __name__ == "__main__":
    cli.run(main, define_flags, takes_args=True)

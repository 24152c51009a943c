"""Write a trained model again in the formats that serve it:
`python -m mnist_rnn.export --model=runs/dynamic/model.keras --tflite [--saved_model]`.

--tflite writes model.tflite (float32) and model_int8.tflite (int8 weights) for TFLite /
LiteRT, with built-in ops only, each checked against the model on the bundled sample's test
digits; --saved_model writes saved_model/ (with every signature of this version). Files go
beside the model unless --output_dir says otherwise.
"""

import os
import sys

from absl import flags

from mnist_rnn import cli

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string("model", None, "The model.keras file to export.", **fv)
    flags.mark_flag_as_required("model", **fv)
    flags.DEFINE_bool("tflite", False, "Write model.tflite and model_int8.tflite.", **fv)
    flags.DEFINE_bool("saved_model", False, "Write the SavedModel saved_model/.", **fv)
    cli.define_saved_model_xla_flag(flag_values)
    flags.DEFINE_string("output_dir", None, "Where to write (default: the model's directory).",
                        **fv)


def main(argv):
    del argv
    if not (FLAGS.tflite or FLAGS.saved_model):
        sys.exit("error: nothing to export: add --tflite, --saved_model or both")
    # TensorFlow loads once the flags are valid.
    from mnist_rnn import files, outputs
    from mnist_rnn.data import sample
    from mnist_rnn.serving import formats, saved_model, tflite

    output_dir = FLAGS.output_dir or os.path.dirname(os.path.abspath(FLAGS.model))
    files.ensure_writable_dir(output_dir, "output_dir")
    model = formats.load_keras_model(FLAGS.model)
    images, labels = sample.load_arrays()
    check_digits = images[sample.split_indices(labels, "test")[::5]]
    if FLAGS.saved_model:
        path = os.path.join(output_dir, outputs.SAVED_MODEL_DIR)
        info = saved_model.write(model, path, FLAGS.saved_model_xla)
        print(f"{path}: SavedModel, {saved_model.describe_export(info)}")
    for info in tflite.export(model, output_dir, check_digits) if FLAGS.tflite else []:
        print(tflite.describe_line({**info, "file": os.path.join(output_dir, info["file"])}))


if __name__ == "__main__":
    cli.run(main, define_flags)

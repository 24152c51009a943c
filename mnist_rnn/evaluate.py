"""Evaluate a trained model on the test set: `python -m mnist_rnn.evaluate --model=PATH`.

Prints accuracy, loss, per-class precision and recall, the confusion matrix and the accuracy
after each step read; with --output_dir, also writes evaluation.json, confusion_matrix.png,
confident_errors.png and accuracy_by_step.png.
"""

from absl import flags

from mnist_rnn import cli

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    cli.define_model_flag(flag_values)
    cli.define_dataset_flags(flag_values)
    flags.DEFINE_string("output_dir", None, "Where to write the report files (default: none).",
                        flag_values=flag_values)


def main(argv):
    del argv
    # TensorFlow loads once the flags are valid.
    from mnist_rnn import files
    from mnist_rnn.data import pipeline, sources
    from mnist_rnn.evaluation import report
    from mnist_rnn.serving import formats
    if FLAGS.output_dir:  # Before the test pass: it would be lost.
        files.ensure_writable_dir(FLAGS.output_dir, "output_dir")
    model = formats.load(FLAGS.model)
    name = sources.resolve_dataset(FLAGS.dataset, FLAGS.data_dir, mnist_dir=FLAGS.mnist_dir)
    datasets = pipeline.load_datasets(name, model.timesteps, batch_size=500,
                                      data_dir=FLAGS.data_dir, mnist_dir=FLAGS.mnist_dir)
    evaluation, error_images = report.build_report(
        report.test_pass(model, datasets.test, steps=True), model.path, name,
        datasets.test)
    print(report.format_report(evaluation))
    if FLAGS.output_dir:
        files.write_or_fail(report.write_report, evaluation, error_images, FLAGS.output_dir)
        print(f"Wrote the report to {FLAGS.output_dir}")


if __name__ == "__main__":
    cli.run(main, define_flags)

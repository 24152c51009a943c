"""Evaluate a trained model on the test set: `python -m mnist_rnn.evaluate --model=PATH`.

Prints accuracy, loss, per-class precision and recall and the confusion matrix; with
--output_dir, also writes evaluation.json, confusion_matrix.png and confident_errors.png.
"""

from absl import flags

from mnist_rnn import cli, data, evaluation, inference

cli.define_model_flag()
flags.DEFINE_string("output_dir", None, "Where to write the report files (default: none).")

FLAGS = flags.FLAGS


def main(argv):
    del argv
    predictor = inference.load(FLAGS.model)
    name = data.resolve_dataset(FLAGS.dataset, FLAGS.data_dir)
    datasets = data.load_datasets(name, predictor.timesteps, batch_size=500,
                                  data_dir=FLAGS.data_dir)
    report, error_images = evaluation.evaluate(predictor, datasets.test)
    report["dataset"] = name
    print(evaluation.format_report(report))
    if FLAGS.output_dir:
        evaluation.write_report(report, error_images, FLAGS.output_dir)
        print(f"Wrote the report to {FLAGS.output_dir}")


if __name__ == "__main__":
    cli.run(main)

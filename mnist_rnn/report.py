"""The evaluation report: accuracy, loss, per-class precision and recall, the confusion matrix,
the accuracy after each step read, and pictures of these and of the most confidently wrong
digits."""

import dataclasses
import math
import os

import numpy as np

from mnist_rnn import files, reading
from mnist_rnn.config import NUM_CLASSES, SIDE

REPORT_FILE = "evaluation.json"
CONFUSION_PNG = "confusion_matrix.png"
ERRORS_PNG = "confident_errors.png"


@dataclasses.dataclass
class TestPass:
    """What one pass of a model over the test set gives; every test-set number comes from it."""

    labels: np.ndarray  # int [n]
    log_probabilities: np.ndarray  # float32 [n, 10]

    @property
    def predicted(self) -> np.ndarray:
        return self.log_probabilities.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).mean())

    @property
    def loss(self) -> float:
        """Mean cross-entropy, as Keras computes it from logits."""
        true = self.log_probabilities[np.arange(len(self.labels)), self.labels]
        return float(-true.astype(np.float64).mean())


def test_pass(predictor, test) -> TestPass:
    """Runs `predictor` (a serving.Predictor) over the (sequences, labels) batches of `test`."""
    labels, log_probabilities = [], []
    for x, y in test:
        labels.append(np.asarray(y))
        log_probabilities.append(predictor.log_probabilities(x))
    return TestPass(np.concatenate(labels).astype(np.int64), np.concatenate(log_probabilities))


def test_images(test, indices) -> np.ndarray:
    """uint8 images [k, 28, 28] of the test examples at `indices`, in that order: the data
    alone, without running a model again."""
    wanted = {int(i): k for k, i in enumerate(indices)}
    images = np.zeros((len(indices), SIDE, SIDE), np.uint8)
    start = 0
    for x, _ in test:
        x = np.asarray(x)
        for i in range(start, start + len(x)):
            if i in wanted:
                images[wanted[i]] = np.round(x[i - start].reshape(SIDE, SIDE) * 255)
        start += len(x)
    return images


def build_report(result: TestPass, model_path: str, dataset: str, test, predictor,
                 worst: int = 25) -> tuple[dict, np.ndarray]:
    """The report of one test pass of `predictor` (a serving.Predictor) over `test`, with its
    answers after each step (a second pass, per step), and uint8 images [k, 28, 28] of the
    `worst` most confidently wrong digits (read again from `test`)."""
    labels, predicted = result.labels, result.predicted
    probabilities = np.exp(result.log_probabilities.astype(np.float64))
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    np.add.at(confusion, (labels, predicted), 1)

    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:worst]

    diagonal = np.diag(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(confusion.sum(0) > 0, diagonal / confusion.sum(0), 0.0)
        recall = np.where(confusion.sum(1) > 0, diagonal / confusion.sum(1), 0.0)
    report = {
        "model": model_path,
        "dataset": dataset,
        "examples": int(len(labels)),
        "accuracy": result.accuracy,
        "loss": result.loss,
        "per_class": [
            {"class": c, "precision": float(precision[c]), "recall": float(recall[c]),
             "support": int(confusion[c].sum())}
            for c in range(NUM_CLASSES)
        ],
        "confusion_matrix": confusion.tolist(),  # Rows: true digit; columns: predicted.
        "confident_errors": [
            {"index": int(i), "true": int(labels[i]), "predicted": int(predicted[i]),
             "probability": float(probabilities[i, predicted[i]])}
            for i in wrong
        ],
        "reading": (reading.summary(labels, reading.step_pass(predictor, test))
                    if predictor.has_steps else None),  # A .tflite has no per-step answers.
    }
    return report, test_images(test, wrong)


def format_report(report: dict) -> str:
    lines = [
        f"{report['examples']} test images: accuracy {report['accuracy']:.4f}, "
        f"loss {report['loss']:.4f}",
        "",
        "digit  precision  recall  support",
    ]
    lines += [
        f"{c['class']:>5}  {c['precision']:>9.4f}  {c['recall']:>6.4f}  {c['support']:>7}"
        for c in report["per_class"]
    ]
    lines += ["", "confusion matrix (rows: true digit, columns: predicted)",
              "      " + "".join(f"{c:>6}" for c in range(NUM_CLASSES))]
    lines += [f"{t:>6}" + "".join(f"{n:>6}" for n in row)
              for t, row in enumerate(report["confusion_matrix"])]
    if report["reading"]:
        lines += ["", format_reading(report["reading"])]
    return "\n".join(lines)


def format_reading(summary: dict) -> str:
    timesteps = summary["timesteps"]
    reached = ", ".join(f"{mark} after {step if step else 'never'}"
                        for mark, step in summary["first_step_reaching"].items())
    by_digit = "  ".join(f"{c}:{m:g}" for c, m in enumerate(summary["median_settled_step_by_digit"])
                         if m is not None)
    return (f"while reading {timesteps} steps: test accuracy {reached}; the answer settles at "
            f"step {summary['median_settled_step']:g} (median)\n"
            f"median settle step by digit: {by_digit}")


def write_report(report: dict, error_images: np.ndarray, output_dir: str,
                 setting_name: str = "output_dir") -> None:
    """evaluation.json and the two PNGs, each written crash-safe into `output_dir`."""
    plt = files.pyplot()
    files.ensure_writable_dir(output_dir, setting_name)
    files.write_json(os.path.join(output_dir, REPORT_FILE), report)

    confusion = np.array(report["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    shown = ax.imshow(confusion, cmap="Blues")
    for (t, p), n in np.ndenumerate(confusion):
        ax.text(p, t, str(n), ha="center", va="center", fontsize=7,
                color="white" if n > confusion.max() / 2 else "black")
    ax.set(xticks=range(NUM_CLASSES), yticks=range(NUM_CLASSES), xlabel="predicted digit",
           ylabel="true digit",
           title=f"Confusion matrix, accuracy {report['accuracy']:.4f}")
    fig.colorbar(shown)
    files.save_figure(fig, os.path.join(output_dir, CONFUSION_PNG), dpi=100,
                      bbox_inches="tight")

    count = len(error_images)
    columns = min(5, max(count, 1))
    rows = max(1, math.ceil(count / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, error in zip(axes.flat, error_images, report["confident_errors"]):
        ax.imshow(image, cmap="gray")
        ax.set_title(f"true {error['true']}, said {error['predicted']}\n"
                     f"p={error['probability']:.2f}", fontsize=8)
    fig.suptitle("Most confidently wrong test digits" if count else "No wrong test digits")
    files.save_figure(fig, os.path.join(output_dir, ERRORS_PNG), dpi=100,
                      bbox_inches="tight")
    plt.close("all")
    if report["reading"]:
        reading.write_accuracy_chart(report["reading"],
                                     os.path.join(output_dir, reading.ACCURACY_PNG))

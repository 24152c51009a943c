"""The evaluation report: accuracy, loss, per-class precision and recall, the confusion matrix,
the accuracy after each step read, and pictures of these and of the most confidently wrong
digits."""

import dataclasses
import math
import os

import numpy as np

from mnist_rnn import files
from mnist_rnn.config import NUM_CLASSES, SIDE
from mnist_rnn.data.sequences import to_images
from mnist_rnn.evaluation import reading
from mnist_rnn.outputs import ACCURACY_PNG, CONFUSION_PNG, ERRORS_PNG, REPORT_FILE


@dataclasses.dataclass
class TestPass:
    """What one pass of a model over the test set gives; every test-set number comes from it."""

    labels: np.ndarray  # int [n]
    log_probabilities: np.ndarray  # float32 [n, 10]
    step_classes: np.ndarray | None = None  # int16 [n, T]: the class after each step read.

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


def test_pass(predictor, test, steps: bool = False) -> TestPass:
    """Runs `predictor` (a model.predictor.Predictor) over the (sequences, labels) batches of
    `test`. steps: also the class after each step read, from the same pass (the last step's
    answer is the model's), when the predictor has per-step answers."""
    steps = steps and predictor.has_steps
    labels, log_probabilities, step_classes = [], [], []
    for x, y in test:
        labels.append(np.asarray(y))
        if steps:
            every_step = predictor.step_log_probabilities(x)
            log_probabilities.append(every_step[:, -1])
            step_classes.append(every_step.argmax(axis=-1).astype(np.int16))
        else:
            log_probabilities.append(predictor.log_probabilities(x))
    return TestPass(np.concatenate(labels).astype(np.int64), np.concatenate(log_probabilities),
                    np.concatenate(step_classes) if steps else None)


def test_images(test, indices) -> np.ndarray:
    """uint8 images [k, 28, 28] of the test examples at `indices`, in that order: the data
    alone, without running a model again."""
    wanted = {int(i): k for k, i in enumerate(indices)}
    images = np.zeros((len(indices), SIDE, SIDE), np.uint8)
    start = 0
    for x, _ in test:
        digits = to_images(x)
        for i in range(start, start + len(digits)):
            if i in wanted:
                images[wanted[i]] = digits[i - start]
        start += len(digits)
    return images


def build_report(result: TestPass, model_path: str, dataset: str, test,
                 worst: int = 25) -> tuple[dict, np.ndarray]:
    """The report of one test pass over `test` (with its answers after each step, when it
    has them), and uint8 images [k, 28, 28] of the `worst` most confidently wrong digits
    (read again from `test`)."""
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
        "reading": (reading.summary(labels, result.step_classes)
                    if result.step_classes is not None else None),  # None from a .tflite.
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
    by_digit = "  ".join(f"{c}:{m:g}"
                         for c, m in enumerate(summary["median_settled_step_by_digit"])
                         if m is not None)
    return (f"while reading {timesteps} steps: test accuracy {reached}; the answer settles at "
            f"step {summary['median_settled_step']:g} (median)\n"
            f"median settle step by digit: {by_digit}")


def write_report(report: dict, error_images: np.ndarray, output_dir: str,
                 setting_name: str = "output_dir") -> None:
    """evaluation.json and the PNGs into `output_dir`, all or none of them."""
    files.ensure_writable_dir(output_dir, setting_name)
    with files.all_or_nothing():
        files.write_json(os.path.join(output_dir, REPORT_FILE), report)
        _confusion_chart(report, os.path.join(output_dir, CONFUSION_PNG))
        _errors_chart(report["confident_errors"], error_images,
                      os.path.join(output_dir, ERRORS_PNG))
        if report["reading"]:
            reading.write_accuracy_chart(report["reading"],
                                         os.path.join(output_dir, ACCURACY_PNG))


def _confusion_chart(report: dict, path: str) -> None:
    plt = files.pyplot()
    confusion = np.array(report["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.1, top=0.93)  # Cheaper than "tight".
    shown = ax.imshow(confusion, cmap="Blues")
    for (t, p), n in np.ndenumerate(confusion):
        ax.text(p, t, str(n), ha="center", va="center", fontsize=7,
                color="white" if n > confusion.max() / 2 else "black")
    ax.set(xticks=range(NUM_CLASSES), yticks=range(NUM_CLASSES), xlabel="predicted digit",
           ylabel="true digit",
           title=f"Confusion matrix, accuracy {report['accuracy']:.4f}")
    fig.colorbar(shown)
    files.save_figure(fig, path, dpi=100)
    plt.close(fig)


def _errors_chart(errors: list[dict], images: np.ndarray, path: str,
                  columns: int = 5) -> None:
    """The wrong digits as one mosaic image, each tile captioned: one axes, not one per
    digit, which keeps the picture cheap to draw."""
    plt = files.pyplot()
    count = len(images)
    columns = min(columns, max(count, 1))
    rows = max(1, math.ceil(count / columns))
    tile_w, tile_h = SIDE + 8, SIDE + 22  # Room for a two-line caption above each digit.
    mosaic = np.full((rows * tile_h, columns * tile_w), 255, np.uint8)
    fig, ax = plt.subplots(figsize=(1.6 * columns, 1.9 * rows + 0.4))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.4 / (1.9 * rows + 0.4))
    for k, (image, error) in enumerate(zip(images, errors)):
        top, left = (k // columns) * tile_h + 20, (k % columns) * tile_w + 4
        mosaic[top:top + SIDE, left:left + SIDE] = 255 - image  # Dark ink on white.
        ax.text(left + SIDE / 2, top - 2, f"true {error['true']}, said {error['predicted']}\n"
                f"p={error['probability']:.2f}", ha="center", va="bottom", fontsize=8)
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255)
    ax.axis("off")
    fig.suptitle("Most confidently wrong test digits" if count else "No wrong test digits")
    files.save_figure(fig, path, dpi=100)
    plt.close(fig)

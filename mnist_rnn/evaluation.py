"""The evaluation report: accuracy, loss, per-class precision and recall, the confusion matrix,
and pictures of it and of the most confidently wrong digits."""

import os

import numpy as np

from mnist_rnn import files

NUM_CLASSES = 10
REPORT_FILE = "evaluation.json"
CONFUSION_PNG = "confusion_matrix.png"
ERRORS_PNG = "confident_errors.png"
EPSILON = 1e-7  # Keras clips probabilities the same way in its cross-entropy.


def evaluate(predictor, test, worst=25):
    """Runs `predictor` over the (sequences, labels) batches of `test`.

    Returns (report dict, uint8 images [k, 28, 28] of the `worst` most confidently wrong digits).
    """
    labels, probabilities, sequences = [], [], []
    for x, y in test:
        labels.append(y.numpy())
        probabilities.append(predictor.predict_sequences(x))
        sequences.append(x.numpy())
    labels = np.concatenate(labels)
    probabilities = np.concatenate(probabilities)
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    true_p = np.clip(probabilities[np.arange(len(labels)), labels], EPSILON, 1.0)

    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:worst]
    images = np.round(np.concatenate(sequences)[wrong].reshape(-1, 28, 28) * 255).astype(np.uint8)

    diagonal = np.diag(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(confusion.sum(0) > 0, diagonal / confusion.sum(0), 0.0)
        recall = np.where(confusion.sum(1) > 0, diagonal / confusion.sum(1), 0.0)
    report = {
        "model": predictor.path,
        "examples": int(len(labels)),
        "accuracy": float((predicted == labels).mean()),
        "loss": float(-np.log(true_p).mean()),
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
    }
    return report, images


def format_report(report):
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
    return "\n".join(lines)


def write_report(report, error_images, output_dir):
    """evaluation.json and the two PNGs, each written crash-safe into `output_dir`."""
    plt = files.pyplot()
    files.ensure_writable_dir(output_dir, flag="--output_dir")
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
    rows = max(1, -(-count // columns))
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

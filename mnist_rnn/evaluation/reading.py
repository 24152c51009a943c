"""The answer while the LSTM reads: from a model's answers after each step, the step where
each answer settles, the test accuracy after k of T steps, and the pictures of both."""

import numpy as np

from mnist_rnn import files
from mnist_rnn.config import NUM_CLASSES, PIXELS, SIDE

STEPS_PNG_SUFFIX = ".steps.png"
MARKS = (0.5, 0.9)  # The test accuracies whose first step the report names.


def settled_steps(step_classes: np.ndarray) -> np.ndarray:
    """int [n, T] class after each step -> int [n]: the step (1..T) from which the answer
    is the final one and stays so."""
    changed = step_classes != step_classes[:, -1:]
    last_steps = step_classes.shape[1]
    last_other = np.where(changed.any(axis=1), last_steps - 1 - changed[:, ::-1].argmax(axis=1),
                          -1)
    return last_other + 2


def summary(labels: np.ndarray, step_classes: np.ndarray) -> dict:
    """What the test set says of reading: accuracy after k steps (k = 1..T), the first step
    reaching each of MARKS, and per true digit the median step where the answer settles."""
    accuracy = (step_classes == labels[:, None]).mean(axis=0)
    settled = settled_steps(step_classes)
    reached = {f"{mark:.0%}": next((k + 1 for k, a in enumerate(accuracy) if a >= mark), None)
               for mark in MARKS}
    return {
        "timesteps": int(step_classes.shape[1]),
        "accuracy_after_steps": [float(a) for a in accuracy],
        "first_step_reaching": reached,
        "median_settled_step": float(np.median(settled)),
        "median_settled_step_by_digit": [
            float(np.median(settled[labels == c])) if (labels == c).any() else None
            for c in range(NUM_CLASSES)
        ],
    }


def _steps_label(timesteps: int) -> str:
    features = PIXELS // timesteps
    return "rows read" if features == SIDE else f"steps read ({features} pixels each)"


def write_accuracy_chart(reading: dict, path: str) -> None:
    """A PNG at `path`: test accuracy after each step, and each digit's median settle step."""
    plt = files.pyplot()
    steps = np.arange(1, reading["timesteps"] + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), width_ratios=(3, 2))
    left.plot(steps, reading["accuracy_after_steps"], marker="." if len(steps) <= 50 else None)
    for mark, step in reading["first_step_reaching"].items():
        if step is not None:
            left.axvline(step, color="gray", linestyle=":", linewidth=1)
            left.annotate(f"{mark} at {step}", (step, float(mark.rstrip("%")) / 100),
                          textcoords="offset points", xytext=(6, -12), fontsize=9)
    left.set(xlabel=_steps_label(reading["timesteps"]), ylabel="test accuracy", ylim=(0, 1.02),
             xlim=(0.5, steps[-1] + 0.5), title="Test accuracy after reading k steps")
    left.grid(alpha=0.3)
    medians = [m if m is not None else 0 for m in reading["median_settled_step_by_digit"]]
    right.bar(range(NUM_CLASSES), medians, color="tab:blue")
    right.set(xticks=range(NUM_CLASSES), xlabel="true digit", ylim=(0, reading["timesteps"]),
              ylabel=f"median step the answer settles (of {reading['timesteps']})",
              title="When the final answer is reached")
    right.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    files.save_figure(fig, path, dpi=100)
    plt.close(fig)


def write_image_chart(image: np.ndarray, probabilities: np.ndarray, path: str,
                      title: str) -> None:
    """A PNG at `path`: the uint8 [28, 28] digit revealed step by step above how each class's
    probability ([T, 10]) moves with each step read."""
    plt = files.pyplot()
    probabilities = np.asarray(probabilities)
    timesteps = len(probabilities)
    final = int(probabilities[-1].argmax())
    settled = int(settled_steps(probabilities.argmax(axis=-1)[None])[0])
    shown = sorted({max(1, round(timesteps * i / 7)) for i in range(1, 8)} | {settled})
    fig = plt.figure(figsize=(9, 5))
    grid = fig.add_gridspec(2, len(shown), height_ratios=(1, 2.2), hspace=0.25)
    pixels = image.reshape(-1)
    for i, step in enumerate(shown):
        ax = fig.add_subplot(grid[0, i])
        revealed = np.where(np.arange(PIXELS) < step * (PIXELS // timesteps), pixels, 64)
        ax.imshow(revealed.reshape(SIDE, SIDE), cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([]), ax.set_yticks([])
        answer = int(probabilities[step - 1].argmax())
        ax.set_title(f"{step}: says {answer}", fontsize=9,
                     color="tab:green" if step >= settled else "black")
    ax = fig.add_subplot(grid[1, :])
    steps = np.arange(1, timesteps + 1)
    colours = plt.get_cmap("tab10")
    for c in range(NUM_CLASSES):
        strong = c == final or probabilities[:, c].max() >= 0.2
        ax.plot(steps, probabilities[:, c], color=colours(c), linewidth=2.2 if c == final else 1,
                alpha=1 if strong else 0.35, label=str(c))
    ax.axvline(settled, color="tab:green", linestyle=":", linewidth=1.2)
    ax.annotate(f"settles on {final} at step {settled}", (settled, 1.0),
                textcoords="offset points", xytext=(5, -14), fontsize=9, color="tab:green")
    ax.set(xlabel=_steps_label(timesteps), ylabel="probability", ylim=(-0.02, 1.05),
           xlim=(0.5, timesteps + 0.5))
    ax.grid(alpha=0.3)
    ax.legend(title="digit", ncols=2, fontsize=8, title_fontsize=9, loc="center left",
              bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(title, fontsize=11, y=0.95)
    files.save_figure(fig, path, dpi=100, bbox_inches="tight")
    plt.close(fig)

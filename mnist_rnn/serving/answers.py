"""Answers for image files: each file read, predicted and put in one line, a file that cannot
be read answered by its error while the others still get theirs."""

from typing import Iterator

import numpy as np

from mnist_rnn.data import images
from mnist_rnn.errors import ImageError, one_line
from mnist_rnn.evaluation import reading
from mnist_rnn.model.predictor import Predictor


def read_digits(paths: list[str], invert: bool | None = None
                ) -> tuple[list[dict], dict[int, np.ndarray]]:
    """One result dict per path ({file}, or {file, error} for one that cannot be read), and
    the uint8 [28, 28] digits read, by their index in `paths`."""
    results, digits = [], {}
    for i, path in enumerate(paths):
        results.append({"file": path})
        try:
            digits[i] = images.load_image(path, invert)
        except ImageError as e:
            results[i]["error"] = str(e)
        except Exception as e:  # Whatever one file does, the others still get their answer.
            results[i]["error"] = f"{path}: cannot read it ({type(e).__name__}: {e})"
    return results, digits


def answer(predictor: Predictor, results: list[dict], digits: dict[int, np.ndarray],
           top_k: int = 1, per_step: bool = False) -> None:
    """Adds to results[i] the answer for digits[i]: class, probability, top_k; with
    per_step, also timesteps, settled_step and step_probabilities [timesteps][10]."""
    if not digits:
        return
    stacked = np.stack(list(digits.values()))
    for i, p in zip(digits, predictor.probabilities(stacked)):
        ranked = p.argsort()[::-1][:top_k]
        results[i].update(
            {"class": int(ranked[0]), "probability": float(p[ranked[0]]),
             "top_k": [{"class": int(c), "probability": float(p[c])} for c in ranked]})
    if per_step:
        for i, steps in zip(digits, predictor.step_probabilities(stacked)):
            results[i].update(
                {"timesteps": len(steps),
                 "settled_step": int(reading.settled_steps(steps.argmax(-1)[None])[0]),
                 "step_probabilities": np.round(steps.astype(np.float64), 6).tolist()})


def predict_files(predictor: Predictor, paths: list[str], invert: bool | None = None,
                  top_k: int = 1, per_step: bool = False, chunk: int = 64
                  ) -> Iterator[tuple[list[dict], dict[int, np.ndarray]]]:
    """The answers for `paths`, `chunk` files at a time, each file read only when its chunk
    comes: for each chunk, one result dict per path (file, class, probability, top_k, see
    `answer`; or file, error) and the digits read, by their index in the chunk."""
    for start in range(0, len(paths), chunk):
        results, digits = read_digits(paths[start:start + chunk], invert)
        answer(predictor, results, digits, top_k, per_step)
        yield results, digits


def format_result(result: dict) -> str:
    """One line: the file's answer, or its error."""
    return one_line(_format_result(result))


def _format_result(result: dict) -> str:
    if "error" in result:
        return f"error: {result['error']}"
    ranked = ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in result["top_k"])
    if "settled_step" in result:
        ranked += f"; settled at step {result['settled_step']} of {result['timesteps']}"
    if "chart" in result:
        ranked += f"; chart {result['chart']}"
    return f"{result['file']}: {ranked}"

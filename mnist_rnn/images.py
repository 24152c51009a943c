"""Image files and arrays -> 28x28 uint8 digits as MNIST draws them (light ink on black)."""

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from mnist_rnn.config import SIDE as SIZE
from mnist_rnn.errors import ImageError

BOX = 20  # MNIST fits each digit in a 20x20 box, centred by mass in the 28x28 frame.
INK = 32  # Pixels above this count as ink when cropping.


def load_image(path, invert=None):
    """Reads `path` (PNG, JPEG, BMP, GIF or .npy) as a uint8 [28, 28] MNIST-style digit.

    invert: True for dark digits on a light background, False for MNIST's light on dark,
    None to decide from the border (a light border means a light background).
    """
    if not os.path.isfile(path):
        raise ImageError(f"{path}: no such file")
    if path.lower().endswith(".npy"):
        gray = _array_to_gray(path)
    else:
        gray = _image_to_gray(path)
    return normalize(gray, invert)


def normalize(gray, invert=None):
    """uint8 [h, w] grayscale -> uint8 [28, 28], inverted to light-on-dark if needed."""
    if invert is None:
        invert = _border(gray).mean() > 127
    if invert:
        gray = 255 - gray
    if gray.shape == (SIZE, SIZE):
        return gray  # Already MNIST's size: reframing would only blur it.
    return fit_like_mnist(gray)


def fit_like_mnist(gray):
    """Crops to the ink, scales it into a 20x20 box and centres its mass in 28x28."""
    rows, cols = np.nonzero(gray > INK)
    if rows.size == 0:
        return np.asarray(Image.fromarray(gray).resize((SIZE, SIZE), Image.LANCZOS))
    crop = gray[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    scale = BOX / max(crop.shape)
    width = max(1, round(crop.shape[1] * scale))
    height = max(1, round(crop.shape[0] * scale))
    digit = np.asarray(Image.fromarray(crop).resize((width, height), Image.LANCZOS))
    weights = digit.astype(np.float64)
    cy, cx = (np.indices(digit.shape) * weights).reshape(2, -1).sum(1) / weights.sum()
    top = int(np.clip(round(SIZE / 2 - cy), 0, SIZE - height))
    left = int(np.clip(round(SIZE / 2 - cx), 0, SIZE - width))
    frame = np.zeros((SIZE, SIZE), np.uint8)
    frame[top:top + height, left:left + width] = digit
    return frame


def _border(gray):
    return np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])


def _image_to_gray(path):
    try:
        with Image.open(path) as image:
            image.seek(0)  # First frame of a GIF.
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                # Transparent pixels are background: lay the image on white paper.
                paper = Image.new("RGBA", image.size, "white")
                image = Image.alpha_composite(paper, image.convert("RGBA"))
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise ImageError(
            f"{path}: not a readable image ({type(e).__name__}); use PNG, JPEG, BMP, GIF or .npy"
        ) from None


def _array_to_gray(path):
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ImageError(f"{path}: not a NumPy .npy array ({e})") from None
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        array = array[..., :3].mean(axis=-1) if array.shape[-1] > 1 else array[..., 0]
    if array.ndim != 2 or min(array.shape) < 1:
        raise ImageError(
            f"{path}: array of shape {array.shape}; expected one grayscale image "
            "[height, width] (or [height, width, channels])"
        )
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "biuf":
        raise ImageError(f"{path}: array of dtype {array.dtype}; expected numbers")
    is_float = array.dtype.kind == "f"
    array = array.astype(np.float64)
    if is_float and array.max(initial=0) <= 1.0:
        array = array * 255.0  # Floats in [0, 1], as the training pipeline uses.
    if array.min(initial=0) < 0 or array.max(initial=0) > 255 or not np.isfinite(array).all():
        raise ImageError(f"{path}: values outside [0, 255] (or [0, 1] for floats)")
    return np.round(array).astype(np.uint8)

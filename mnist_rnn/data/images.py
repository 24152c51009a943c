"""Image files and arrays -> 28x28 uint8 digits as MNIST draws them (light ink on black)."""

import contextlib
import os
import stat

import numpy as np
from PIL import Image, UnidentifiedImageError

from mnist_rnn.config import SIDE as SIZE
from mnist_rnn.errors import ImageError

BOX = 20  # MNIST fits each digit in a 20x20 box, centred by mass in the 28x28 frame.
INK = 32  # Pixels above this count as ink when cropping.
# Larger images are refused before they are decoded: a digit needs far fewer pixels, and a
# 20000x20000 image would take gigabytes.
MAX_PIXELS = 25_000_000
FORMATS = ("PNG", "JPEG", "BMP", "GIF")  # PIL's names; other formats are refused.


def load_image(path: str, invert: bool | None = None) -> np.ndarray:
    """Reads `path` (PNG, JPEG, BMP, GIF or .npy) as a uint8 [28, 28] MNIST-style digit.

    invert: True for dark digits on a light background, False for MNIST's light on dark,
    None to decide from the border (a light border means a light background).
    Raises ImageError, with the path and the reason, for anything that is not one digit.
    """
    _check_file(path)
    if path.lower().endswith(".npy"):
        gray = _array_to_gray(path)
    else:
        gray = _image_to_gray(path)
    digit = normalize(gray, invert)
    if int(digit.max()) - int(digit.min()) <= INK:
        raise ImageError(f"{path}: no ink: the image is one flat shade, so there is no digit "
                         "to read (strokes must differ from the background)")
    return digit


def _check_file(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        reason = "no such file" if isinstance(e, FileNotFoundError) else e.strerror
        raise ImageError(f"{path}: {reason}") from None
    if stat.S_ISDIR(mode):
        raise ImageError(f"{path}: is a directory; pass image files")
    if not stat.S_ISREG(mode):
        raise ImageError(f"{path}: not a regular file")


def _check_size(path: str, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ImageError(f"{path}: {width}x{height} pixels, over the limit of {MAX_PIXELS:,}; "
                         "scale it down first")


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
        with _our_size_limit_only(), Image.open(path, formats=FORMATS) as image:
            _check_size(path, *image.size)  # Only the header is read so far.
            if getattr(image, "n_frames", 1) > 1:
                raise ImageError(f"{path}: an animation of {image.n_frames} frames; save the "
                                 "frame to read as an image of its own")
            if image.mode.startswith("I") or image.mode == "F":
                # 16-bit (or wider) grayscale: scale to 8 bits; convert("L") would clip.
                wide = np.asarray(image, dtype=np.float64)
                return np.round(np.clip(wide / 257.0, 0, 255)).astype(np.uint8)
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                # Transparent pixels are background: lay the image on white paper.
                paper = Image.new("RGBA", image.size, "white")
                image = Image.alpha_composite(paper, image.convert("RGBA"))
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise ImageError(
            f"{path}: not a readable image ({type(e).__name__}); use PNG, JPEG, BMP, GIF or .npy"
        ) from None


@contextlib.contextmanager
def _our_size_limit_only():
    """PIL refuses (or warns about) huge images as it opens them, without saying their size;
    MAX_PIXELS, checked from the header, is far lower and says it."""
    pil_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit


def _array_to_gray(path):
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")  # The header, for its size.
    except (ValueError, OSError) as e:
        if "Python objects in dtype" in str(e):
            raise ImageError(f"{path}: an array of Python objects, which is never loaded (it "
                             "could run code); save an array of numbers") from None
        raise ImageError(f"{path}: not a NumPy .npy array ({e})") from None
    if array.ndim >= 2 and array.shape[0] * array.shape[1] > MAX_PIXELS:
        _check_size(path, array.shape[1], array.shape[0])
    array = np.asarray(array)
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
    if not np.isfinite(array).all():
        raise ImageError(f"{path}: values that are not numbers (NaN or infinity)")
    if is_float and array.max(initial=0) <= 1.0:
        array = array * 255.0  # Floats in [0, 1], as the training pipeline uses.
    if array.min(initial=0) < 0 or array.max(initial=0) > 255:
        raise ImageError(f"{path}: values outside [0, 255] (or [0, 1] for floats)")
    return np.round(array).astype(np.uint8)

import re

import numpy as np
import pytest
from PIL import Image

from mnist_rnn import errors
from mnist_rnn.data import images


def stroke(size=28, background=0, ink=255):
    """A vertical bar, like a '1', off-centre."""
    canvas = np.full((size, size), background, np.uint8)
    canvas[size // 5: size * 4 // 5, size // 5: size // 5 + max(2, size // 10)] = ink
    return canvas


def test_a_28x28_mnist_style_digit_is_kept_exactly():
    digit = stroke()
    np.testing.assert_array_equal(images.normalize(digit), digit)


def test_dark_on_light_is_detected_and_inverted():
    np.testing.assert_array_equal(images.normalize(stroke(background=255, ink=0)), stroke())


def test_invert_can_be_forced_either_way():
    digit = stroke()
    np.testing.assert_array_equal(images.normalize(digit, invert=True), 255 - digit)
    light = stroke(background=255, ink=0)
    np.testing.assert_array_equal(images.normalize(light, invert=False), light)


def test_large_image_is_fitted_into_20x20_and_centred_by_mass():
    out = images.normalize(stroke(size=200))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    rows, cols = np.nonzero(out > images.INK)
    assert rows.max() - rows.min() + 1 <= 20 and rows.max() - rows.min() + 1 >= 18
    weights = out.astype(float)
    cy, cx = (np.indices(out.shape) * weights).reshape(2, -1).sum(1) / weights.sum()
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_blank_image_gives_a_blank_digit():
    assert images.normalize(np.zeros((50, 40), np.uint8)).max() == 0


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF"])
def test_image_formats_and_colour(tmp_path, fmt):
    rgb = np.stack([stroke(56)] * 3, axis=-1)
    path = tmp_path / f"digit.{fmt.lower()}"
    Image.fromarray(rgb).save(path, format=fmt)
    out = images.load_image(str(path))
    assert out.shape == (28, 28) and out.max() > 200 and out[0].max() < 40


def test_transparent_png_is_drawn_on_white_paper(tmp_path):
    rgba = np.zeros((56, 56, 4), np.uint8)
    rgba[..., 3] = stroke(56)  # Black ink, visible only where the stroke is.
    Image.fromarray(rgba, "RGBA").save(tmp_path / "ink.png")
    out = images.load_image(str(tmp_path / "ink.png"))
    assert out.max() > 200 and out[0].max() < 40  # Inverted to light ink on black.


def test_npy_arrays_uint8_and_float(tmp_path):
    digit = stroke()
    np.save(tmp_path / "u8.npy", digit)
    np.save(tmp_path / "f.npy", digit.astype(np.float32) / 255)
    np.testing.assert_array_equal(images.load_image(str(tmp_path / "u8.npy")), digit)
    np.testing.assert_array_equal(images.load_image(str(tmp_path / "f.npy")), digit)


@pytest.mark.parametrize("array, message", [
    (np.zeros((2, 28, 28), np.uint8), "array of shape (2, 28, 28)"),
    (np.zeros(784, np.uint8), "array of shape (784,)"),
    (np.full((28, 28), 300.0), "values outside [0, 255]"),
    (np.array([["a"]]), "dtype <U1"),
])
def test_bad_arrays_are_rejected(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(errors.ImageError, match=r"bad\.npy: .*" + re.escape(message)):
        images.load_image(str(tmp_path / "bad.npy"))


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(errors.ImageError, match="no such file"):
        images.load_image(str(tmp_path / "nope.png"))
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(errors.ImageError, match="not a readable image"):
        images.load_image(str(tmp_path / "text.jpg"))
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(errors.ImageError, match="not a NumPy .npy array"):
        images.load_image(str(tmp_path / "text.npy"))


def png_header_only(width, height):
    """The bytes of a PNG that claims width x height pixels: what a decoder sees first."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def test_an_oversized_image_is_refused_before_it_is_decoded(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(png_header_only(20000, 20000))
    with pytest.raises(errors.ImageError,
                       match=r"huge\.png: 20000x20000 pixels, over the limit of 25,000,000"):
        images.load_image(str(path))
    np.save(tmp_path / "huge.npy", np.lib.format.open_memmap(
        tmp_path / "big.npy", mode="w+", dtype=np.uint8, shape=(6000, 6000)))
    with pytest.raises(errors.ImageError, match=r"6000x6000 pixels, over the limit"):
        images.load_image(str(tmp_path / "big.npy"))


def test_a_16_bit_png_is_scaled_not_clipped(tmp_path):
    digit = stroke(56)
    Image.fromarray(digit.astype(np.uint16) * 257).save(tmp_path / "wide.png")
    Image.fromarray(digit).save(tmp_path / "narrow.png")
    with Image.open(tmp_path / "wide.png") as image:
        assert image.mode.startswith("I")  # Really 16 bits per pixel.
    np.testing.assert_array_equal(images.load_image(str(tmp_path / "wide.png")),
                                  images.load_image(str(tmp_path / "narrow.png")))


@pytest.mark.parametrize("name, array", [
    ("dot.png", np.zeros((1, 1), np.uint8)),
    ("white.png", np.full((40, 40), 255, np.uint8)),
    ("black.png", np.zeros((40, 40), np.uint8)),
    ("grey.npy", np.full((28, 28), 0.5, np.float32)),
])
def test_an_image_without_ink_is_reported_not_classified(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array) if name.endswith(".npy") else Image.fromarray(array).save(path)
    with pytest.raises(errors.ImageError, match=rf"{name}: no ink"):
        images.load_image(str(path))


def test_directories_and_symlink_loops_say_what_they_are(tmp_path):
    with pytest.raises(errors.ImageError, match=r": is a directory; pass image files"):
        images.load_image(str(tmp_path))
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    with pytest.raises(errors.ImageError, match=r"loop\.png: Too many levels of symbolic links"):
        images.load_image(str(loop))

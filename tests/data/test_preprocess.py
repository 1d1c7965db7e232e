"""MNIST-style preprocessing of real-world images, checked on constructed images.

Centres of mass are measured with scipy.ndimage (an independent implementation);
MNIST places them at (14, 14) by an integer shift, so they land within half a pixel.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from scipy import ndimage

from cnnlab.data.preprocess import (
    ImageLimits,
    ImageRejected,
    ImageTooLarge,
    NoDigitFound,
    NotAnImage,
    _centre_by_mass,
    list_images,
    open_image,
    preprocess,
    preprocess_file,
    to_gray,
)
from cnnlab.errors import CnnlabError


def seven(scale: float = 1.0, fg: int = 255, bg: int = 0, mode: str = "L") -> Image.Image:
    """A '7' drawn with a thick pen, light on dark by default: 120x160 at scale 1."""
    im = Image.new(mode, (round(120 * scale), round(160 * scale)), bg)
    pts = [(10 * scale, 15 * scale), (100 * scale, 15 * scale), (45 * scale, 145 * scale)]
    ImageDraw.Draw(im).line(pts, fill=fg, width=round(10 * scale))
    return im


def on_canvas(glyph: Image.Image, size: tuple[int, int], at: tuple[int, int]) -> Image.Image:
    bg = glyph.getpixel((0, 0))
    canvas = Image.new(glyph.mode, size, bg)
    canvas.paste(glyph, at)
    return canvas


def encode(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def bbox(x: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), inclusive, of the non-zero pixels."""
    rows = np.flatnonzero(x.any(axis=1))
    cols = np.flatnonzero(x.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def assert_centred(x: np.ndarray) -> None:
    cy, cx = ndimage.center_of_mass(x)
    assert abs(cy - 14.0) <= 0.5 and abs(cx - 14.0) <= 0.5, (cy, cx)


def test_output_is_mnist_shaped() -> None:
    out = preprocess(seven())
    assert out.image.shape == (28, 28)
    assert out.image.dtype == np.float32
    assert out.image.min() == 0.0 and out.image.max() == 1.0
    assert not out.inverted
    top, bottom, left, right = bbox(out.image)
    assert max(bottom - top, right - left) + 1 == 20  # longest side fills the 20x20 box
    assert_centred(out.image)


def test_shifted_digits_give_the_same_input() -> None:
    glyph = seven()
    outs = [
        preprocess(on_canvas(glyph, (400, 300), at)).image for at in [(0, 0), (270, 3), (131, 140)]
    ]
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    assert_centred(outs[0])


def test_scaled_digits_give_nearly_the_same_input() -> None:
    small, large = preprocess(seven(0.5)).image, preprocess(seven(4.0)).image
    assert_centred(small)
    assert_centred(large)
    assert np.abs(small - large).mean() < 0.02  # drawn independently: not pixel-identical
    assert np.corrcoef(small.ravel(), large.ravel())[0, 1] > 0.97


def test_dark_on_light_is_detected_and_inverted() -> None:
    light = preprocess(seven(fg=255, bg=0))
    dark = preprocess(seven(fg=0, bg=255))
    assert dark.inverted and not light.inverted
    np.testing.assert_allclose(dark.image, light.image, atol=1e-6)


def test_inversion_override() -> None:
    dark_on_light = seven(fg=0, bg=255)
    forced = preprocess(dark_on_light, invert=True)
    assert forced.inverted
    np.testing.assert_allclose(forced.image, preprocess(seven()).image, atol=1e-6)
    with pytest.raises(NoDigitFound, match="invert"):
        preprocess(dark_on_light, invert=False)  # a white page: nothing bright on it


def test_off_centre_mass_lands_centred_by_mass_not_by_box() -> None:
    # An 'L' whose mass sits low and left: its box centre and mass centre differ.
    im = Image.new("L", (300, 300), 0)
    draw = ImageDraw.Draw(im)
    draw.rectangle([200, 100, 225, 260], fill=255)  # thick upright
    draw.line([(225, 250), (290, 250)], fill=255, width=8)  # thin foot to the right
    out = preprocess(im).image
    assert_centred(out)
    top, bottom, left, right = bbox(out)
    box_centre = ((top + bottom) / 2, (left + right) / 2)
    assert abs(box_centre[1] - 14.0) >= 1.5  # centring the box would have been different


def test_aspect_ratio_is_kept() -> None:
    tall = Image.new("L", (200, 200), 0)
    ImageDraw.Draw(tall).rectangle([50, 20, 79, 169], fill=255)  # 30 wide, 150 tall
    top, bottom, left, right = bbox(preprocess(tall).image)
    assert (bottom - top + 1, right - left + 1) == (20, 4)
    wide = tall.transpose(Image.Transpose.TRANSPOSE)
    top, bottom, left, right = bbox(preprocess(wide).image)
    assert (bottom - top + 1, right - left + 1) == (4, 20)


def test_tiny_digit_is_enlarged_to_the_box() -> None:
    glyph = seven(0.06)  # 7x10 pixels
    out = preprocess(on_canvas(glyph, (64, 48), (30, 5))).image
    top, bottom, _, _ = bbox(out)
    assert bottom - top + 1 == 20
    assert_centred(out)


def test_transparent_canvas_drawings() -> None:
    ref = preprocess(seven()).image
    for ink, paper in [((0, 0, 0, 255), 255), ((255, 255, 255, 255), 0)]:
        img = Image.new("RGBA", (120, 160), (0, 0, 0, 0))  # fully transparent
        pts = [(10, 15), (100, 15), (45, 145)]
        ImageDraw.Draw(img).line(pts, fill=ink, width=10)
        out = preprocess(img)
        np.testing.assert_allclose(out.image, ref, atol=1e-6)
        assert out.inverted == (paper == 255)


def test_colour_jpeg_and_16_bit_images() -> None:
    ref = preprocess(seven()).image
    colour = seven(fg=0, bg=0, mode="RGB")
    colour.paste((250, 230, 120), (0, 0, *colour.size))  # yellow paper
    pts = [(10, 15), (100, 15), (45, 145)]
    ImageDraw.Draw(colour).line(pts, fill=(20, 40, 160), width=10)  # blue ink
    out = preprocess_file(encode(colour, "JPEG", quality=70))
    assert out.inverted
    assert np.abs(out.image - ref).mean() < 0.02
    sixteen = Image.fromarray((np.asarray(seven(), np.uint16) * 257).astype(np.uint16))
    assert sixteen.mode.startswith("I;16")
    np.testing.assert_allclose(preprocess_file(encode(sixteen)).image, ref, atol=1e-5)


@pytest.mark.parametrize("level", [0, 128, 255])
def test_blank_images_are_refused(level: int) -> None:
    with pytest.raises(NoDigitFound, match="no digit found"):
        preprocess(Image.new("L", (50, 40), level))


def test_faint_noise_is_not_a_digit() -> None:
    rng = np.random.default_rng(0)
    noise = np.clip(0.5 + rng.normal(0, 0.01, (60, 60)), 0, 1).astype(np.float32)
    with pytest.raises(NoDigitFound):
        preprocess(noise)


def test_arrays_in_any_layout() -> None:
    ref = preprocess(seven()).image
    gray8 = np.asarray(seven())
    for arr in [gray8, gray8 / 255.0, gray8[:, :, None], np.stack([gray8] * 3, axis=2)]:
        np.testing.assert_allclose(preprocess(arr).image, ref, atol=1e-5)
    with pytest.raises(CnnlabError, match="uint8"):
        to_gray(gray8.astype(np.int32))
    with pytest.raises(CnnlabError, match="expected"):
        to_gray(np.zeros((4, 4, 2), np.float32))


def test_huge_canvas_is_reduced_before_work() -> None:
    out = preprocess_file(encode(seven(20.0)))  # 2400x3200
    assert_centred(out.image)
    assert np.corrcoef(out.image.ravel(), preprocess(seven()).image.ravel())[0, 1] > 0.95


@settings(max_examples=40, deadline=None)
@given(
    w=st.integers(3, 120),
    h=st.integers(3, 120),
    x0=st.integers(0, 80),
    y0=st.integers(0, 80),
    dark_on_light=st.booleans(),
)
def test_any_rectangle_is_boxed_and_centred(
    w: int, h: int, x0: int, y0: int, dark_on_light: bool
) -> None:
    fg, bg = (0, 255) if dark_on_light else (255, 0)
    img = Image.new("L", (x0 + w + 7, y0 + h + 5), bg)
    ImageDraw.Draw(img).rectangle([x0, y0, x0 + w - 1, y0 + h - 1], fill=fg)
    out = preprocess(img)
    assert out.inverted == dark_on_light
    assert 0.0 <= out.image.min() and out.image.max() <= 1.0
    top, bottom, left, right = bbox(out.image)
    assert max(bottom - top, right - left) + 1 == 20
    assert_centred(out.image)


def test_lopsided_digit_stays_whole_in_the_field() -> None:
    digit = np.zeros((20, 20), np.float32)
    digit[:3, :3] = 1.0  # all the mass in one corner
    digit[19, 19] = 0.01
    out = _centre_by_mass(digit)
    assert out.sum() == pytest.approx(digit.sum())  # nothing shifted out of the field


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height but carries almost no data: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [5_000, 100_000])  # under and over Pillow's own bomb limit
def test_decompression_bomb_is_refused_before_decoding(side: int) -> None:
    with pytest.raises(ImageTooLarge, match=r"pixels|too large"):
        open_image(png_header_only(side, side))


def test_limits() -> None:
    png = encode(seven())
    with pytest.raises(ImageTooLarge, match="pixels"):
        open_image(png, ImageLimits(max_pixels=100 * 100))
    with pytest.raises(ImageTooLarge, match="bytes"):
        open_image(png, ImageLimits(max_bytes=len(png) - 1))
    assert open_image(png, ImageLimits(max_bytes=len(png), max_pixels=120 * 160)).size == (120, 160)
    with pytest.raises(NotAnImage, match="supported format"):
        open_image(png, ImageLimits(formats=("JPEG",)))


def test_bad_files() -> None:
    with pytest.raises(NotAnImage, match="not an image"):
        open_image(b"hello, this is text")
    with pytest.raises(NotAnImage, match="empty"):
        open_image(b"")
    png = encode(seven())
    with pytest.raises(ImageRejected, match=r"truncated|damaged") as err:
        open_image(png[: len(png) // 2])
    assert err.value.status == 422
    assert isinstance(err.value, CnnlabError)  # the CLI prints it as one line


def test_files_and_folders(tmp_path: pytest.TempPathFactory) -> None:
    folder = tmp_path / "digits"  # type: ignore[operator]
    folder.mkdir()
    for name in ["b.png", "a.JPG", "notes.txt"]:
        (folder / name).write_bytes(encode(seven(), "JPEG" if name.endswith("JPG") else "PNG"))
    assert [p.name for p in list_images([folder])] == ["a.JPG", "b.png"]
    assert preprocess_file(folder / "b.png").image.shape == (28, 28)
    with pytest.raises(CnnlabError, match="not found"):
        list_images([folder / "missing.png"])
    (tmp_path / "empty").mkdir()  # type: ignore[operator]
    with pytest.raises(CnnlabError, match="no image files"):
        list_images([tmp_path / "empty"])  # type: ignore[operator]
    with pytest.raises(ImageRejected, match="cannot read"):
        preprocess_file(folder / "missing.png")


@pytest.mark.mnist
def test_mnist_digits_survive_a_photo_like_round_trip(mnist: object) -> None:
    """MNIST digits enlarged, inverted, placed off-centre on a page and JPEG'd come back."""
    rng = np.random.default_rng(0)
    digits = mnist.x_test[:200]  # type: ignore[attr-defined]
    same, photo = [], []
    for img in digits:
        direct = preprocess(img).image  # already MNIST-style: should change little
        assert_centred(direct)
        same.append(np.corrcoef(direct.ravel(), img.ravel())[0, 1])
        page = Image.new("L", (400, 300), 255)
        big = Image.fromarray(255 - img).resize((224, 224), Image.Resampling.BILINEAR)
        page.paste(big, (int(rng.integers(0, 170)), int(rng.integers(0, 70))))
        out = preprocess_file(encode(page, "JPEG", quality=80))
        assert out.inverted
        assert_centred(out.image)
        photo.append(np.corrcoef(out.image.ravel(), img.ravel())[0, 1])
    # Thin strokes make one-pixel shifts (rounding of the centre) cost correlation.
    assert np.mean(same) > 0.95
    assert np.mean(photo) > 0.9

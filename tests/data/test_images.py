"""One image file -> uint8 (H, W, C): every mode and format, checked against Pillow or NumPy."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.data import images
from cnnlab.data.preprocess import ImageRejected, ImageTooLarge, NotAnImage
from cnnlab.errors import CnnlabError

from .imagefiles import expected, png_header_bomb, save

SHAPES = [(8, 10, 1), (8, 10, 3), (8, 10, 4)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("mode", "suffix"),
    [
        ("L", ".png"),
        ("RGB", ".png"),
        ("RGBA", ".png"),
        ("LA", ".png"),
        ("P", ".png"),  # palette with a transparent entry
        ("P", ".gif"),
        ("1", ".png"),
        ("CMYK", ".jpg"),
        ("CMYK", ".tif"),
        ("RGB", ".jpg"),
        ("RGB", ".bmp"),
        ("RGB", ".webp"),
        ("RGBA", ".webp"),
        ("RGB", ".tiff"),
        ("L", ".bmp"),
    ],
)
def test_8_bit_modes_match_pillow(
    tmp_path: Path, mode: str, suffix: str, shape: tuple[int, int, int]
) -> None:
    path = save(tmp_path / f"img{suffix}", mode, (13, 17), seed=1)
    got = images.load_image(path, shape)
    assert got.dtype == np.uint8 and got.shape == shape
    np.testing.assert_array_equal(got, expected(path, shape))


@pytest.mark.parametrize(("mode", "suffix"), [("I;16", ".png"), ("I;16", ".tif"), ("I", ".tif")])
def test_16_bit_greys_are_scaled_not_clipped(tmp_path: Path, mode: str, suffix: str) -> None:
    path = save(tmp_path / f"deep{suffix}", mode, (9, 11), seed=2)
    levels = np.asarray(Image.open(path)).astype(np.int64)  # (9, 11) 0..65535
    want = np.rint(levels / 257).astype(np.uint8)  # 65535 -> 255, 128 -> 0, 129 -> 1
    got = images.load_image(path, (9, 11, 1))
    np.testing.assert_array_equal(got[..., 0], want)
    assert got.max() > 200  # Pillow's own convert("L") clips these to 255 almost everywhere
    rgb = images.load_image(path, (9, 11, 3))
    np.testing.assert_array_equal(rgb, np.repeat(want[..., None], 3, axis=2))


def test_float_greys_are_levels_rounded_and_clipped(tmp_path: Path) -> None:
    path = save(tmp_path / "f.tif", "F", (6, 7), seed=3)
    values = np.asarray(Image.open(path), dtype=np.float32)
    got = images.load_image(path, (6, 7, 1))[..., 0]
    np.testing.assert_array_equal(got, np.rint(np.clip(values, 0, 255)).astype(np.uint8))


def test_first_frame_of_an_animated_gif(tmp_path: Path) -> None:
    frames = [Image.new("L", (6, 5), v) for v in (40, 200, 90)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    np.testing.assert_array_equal(images.load_image(path, (5, 6, 1)), np.full((5, 6, 1), 40))


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    img = Image.fromarray(np.arange(6 * 10, dtype=np.uint8).reshape(6, 10) * 4)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.png"
    img.save(path, exif=exif)
    turn = {1: None, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270,
            8: Image.Transpose.ROTATE_90}[orientation]  # fmt: skip
    want = np.asarray(img if turn is None else img.transpose(turn))
    h, w = want.shape
    assert images.probe(path)[:2] in ((h, w), (6, 10))  # PNG: read from the header if early
    np.testing.assert_array_equal(images.load_image(path, (h, w, 1))[..., 0], want)


def test_exif_orientation_in_a_jpeg_header_swaps_the_probed_size(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (40, 20), (200, 10, 10)).save(path, exif=exif)
    assert images.probe(path) == (40, 20, "RGB")  # (height, width) after the turn


@pytest.mark.parametrize(
    ("name", "resample"),
    [
        ("nearest", Image.Resampling.NEAREST),
        ("bilinear", Image.Resampling.BILINEAR),
        ("bicubic", Image.Resampling.BICUBIC),
        ("area", Image.Resampling.BOX),
        ("lanczos", Image.Resampling.LANCZOS),
    ],
)
def test_interpolations_are_pillows(tmp_path: Path, name: str, resample: int) -> None:
    path = save(tmp_path / "x.png", "RGB", (31, 23), seed=4)
    for shape in ((9, 14, 3), (40, 50, 3)):  # down and up
        got = images.load_image(path, shape, interpolation=name)
        np.testing.assert_array_equal(got, expected(path, shape, resample))


def test_crop_and_pad_keep_the_aspect_ratio_as_keras(tmp_path: Path) -> None:
    path = save(tmp_path / "wide.png", "RGB", (10, 30), seed=5)  # (h, w): 1:3
    src = np.asarray(Image.open(path))  # (10, 30, 3)
    # crop to 1:1: Keras' centred window, int((30 - 10) / 2) = 10 columns in
    got = images.load_image(path, (10, 10, 3), interpolation="nearest", fit="crop")
    np.testing.assert_array_equal(got, src[:, 10:20])
    # pad to 1:1: a 30x30 black canvas, the image int((30 - 10) / 2) = 10 rows down
    got = images.load_image(path, (30, 30, 3), interpolation="nearest", fit="pad")
    canvas = np.zeros((30, 30, 3), np.uint8)
    canvas[10:20] = src
    np.testing.assert_array_equal(got, canvas)
    # a crop then a resize: the same as Pillow on the cropped window
    got = images.load_image(path, (5, 5, 3), fit="crop")
    want = Image.fromarray(src[:, 10:20]).resize((5, 5), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(got, np.asarray(want))


def test_bytes_and_file_give_the_same_array(tmp_path: Path) -> None:
    path = save(tmp_path / "a.jpg", "RGB", (20, 20), seed=6)
    from_file = images.load_image(path, (7, 9, 3), "bicubic", "crop")
    from_bytes = images.load_image_bytes(path.read_bytes(), (7, 9, 3), "bicubic", "crop")
    np.testing.assert_array_equal(from_file, from_bytes)


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    bomb = png_header_bomb(tmp_path / "bomb.png", 12_000, 12_000)  # 144M pixels declared
    assert bomb.stat().st_size < 200
    with pytest.raises(ImageTooLarge, match=r"12000x12000 = 144,000,000 pixels, over the limit"):
        images.load_image(bomb, (8, 8, 1))  # cnnlab's limit: Pillow's default 89,478,485
    huge = png_header_bomb(tmp_path / "huge.png", 60_000, 60_000)  # 3.6e9 pixels declared
    with pytest.raises(ImageTooLarge, match="refused before decoding as a") as info:
        images.load_image(huge, (8, 8, 1))  # Pillow's own (2x its default) comes first here
    assert "3600000000 pixels" in str(info.value)
    with pytest.raises(ImageTooLarge, match="over the limit of 100"):
        images.load_image(save(tmp_path / "s.png", "L", (11, 10)), (8, 8, 1), max_pixels=100)


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (b"", NotAnImage, "is empty"),
        (b"hello, I am a text file\n", NotAnImage, "not a PNG, JPEG, BMP, GIF, WebP or TIFF"),
        (None, ImageRejected, "does not decode"),  # a truncated PNG
    ],
)
def test_undecodable_bytes_are_one_line(
    tmp_path: Path, content: bytes | None, error: type, message: str
) -> None:
    if content is None:
        full = save(tmp_path / "full.png", "RGB", (40, 40), seed=7).read_bytes()
        content = full[: len(full) // 2]
    with pytest.raises(error, match=message) as info:
        images.load_image_bytes(content, (4, 4, 3), name="up.png")
    assert "\n" not in str(info.value)


def test_unreadable_files_are_their_own_error(tmp_path: Path) -> None:
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    with pytest.raises(images.UnreadableImage, match="symbolic link loop"):
        images.load_image(loop, (4, 4, 1))
    with pytest.raises(images.UnreadableImage, match="not found"):
        images.load_image(tmp_path / "missing.png", (4, 4, 1))
    with pytest.raises(images.UnreadableImage, match="not a regular file"):
        images.load_image(tmp_path, (4, 4, 1))


def test_settings_round_trip_and_are_checked() -> None:
    s = images.ImageSettings((8, 9, 3), "box", "pad")
    assert s.interpolation == "area"  # the recorded name
    assert images.ImageSettings.from_dict(s.to_dict()) == s
    for bad in ({"shape": [8, 9, 2], "interpolation": "bilinear", "fit": "pad"}, {"shape": 3}):
        with pytest.raises(CnnlabError):
            images.ImageSettings.from_dict(bad)


def test_pillow_global_limit_is_not_what_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # someone turned Pillow's off
    bomb = png_header_bomb(tmp_path / "b.png", 20_000, 20_000)
    with pytest.raises(ImageTooLarge):
        images.load_image(bomb, (8, 8, 1))
    buf = io.BytesIO()
    Image.new("L", (30, 30)).save(buf, format="PNG")
    assert images.load_image_bytes(buf.getvalue(), (3, 3, 1), max_pixels=900).shape == (3, 3, 1)


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path: Path) -> None:
    """Pillow's DCT scaling, then the resize: as Pillow does it, and close to a full decode."""
    rng = np.random.default_rng(8)
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    big = Image.fromarray(small).resize((800, 600), Image.Resampling.BICUBIC)
    path = tmp_path / "photo.jpg"
    big.save(path, quality=95)
    got = images.load_image(path, (30, 40, 3))
    img = Image.open(path)
    img.draft("RGB", (80, 80))  # twice the target's longer side
    assert img.size == (200, 150)  # 1/4 scale: still over twice the target
    want = np.asarray(img.convert("RGB").resize((40, 30), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(got, want)
    full = np.asarray(Image.open(path).convert("RGB").resize((40, 30), Image.Resampling.BILINEAR))
    assert np.abs(got.astype(int) - full).mean() < 2.0

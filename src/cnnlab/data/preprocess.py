"""Real-world images to MNIST-style inputs, the way MNIST itself was made.

MNIST's recipe (LeCun et al.): the digit is size-normalised to fit a 20x20 box keeping
its aspect ratio, anti-aliased to grey levels, and placed in a 28x28 field so that its
centre of mass sits at the field's centre. Real MNIST puts it at pixel (14, 14)
(measured on the training set: mean 14.00, std 0.29 = an integer shift by rounding), so
this module shifts by whole pixels too.

Before that, a photo or a drawing is made to look like MNIST's source images: grey,
light digit on a dark background (dark-on-light images are detected and inverted),
background level subtracted and contrast stretched, then cropped to the digit's box.

Decoding is guarded for untrusted input: only regular files are opened (a device or a
FIFO is refused at once), at most the byte cap is actually read, the pixel cap is checked
before the pixels are decoded, and every failure is a :class:`ImageRejected` with an HTTP-like
``status`` that the web server passes on.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnlab import fileio
from cnnlab.errors import CnnlabError

SIZE = 28  # the network's input field
BOX = 20  # the digit's longest side after size normalisation
CENTRE = 14.0  # where MNIST puts the centre of mass (row, column)
MIN_CONTRAST = 0.1  # below this (of the full grey range) the image holds no digit
NOISE_FLOOR = 0.15  # of the digit's contrast: JPEG and sensor noise under it is background
WORK_SIDE = 1024  # larger images are reduced first: a digit needs no more detail than this
MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# the one list of image suffixes (cnnlab.data.images reads it too: a folder: dataset's)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageRejected(CnnlabError):
    """An image that cannot be used; ``status`` is the HTTP status the server answers."""

    status = 422


class ImageTooLarge(ImageRejected):
    status = 413


class NotAnImage(ImageRejected):
    status = 415


class NoDigitFound(ImageRejected):
    status = 422


@dataclass(frozen=True)
class ImageLimits:
    """Caps on untrusted images: file size in bytes and decoded pixel count."""

    max_bytes: int = 4 * 1024 * 1024
    max_pixels: int = 16_000_000
    formats: tuple[str, ...] = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")


@dataclass(frozen=True)
class Preprocessed:
    """The network's input and how it was made from the image."""

    image: np.ndarray  # (28, 28) float32 in [0, 1], light digit on black
    inverted: bool  # whether the image was dark-on-light and was inverted


def open_image(
    source: str | Path | bytes | BinaryIO, limits: ImageLimits | None = None
) -> Image.Image:
    """Decode an image file (its first frame) within ``limits``; ImageRejected otherwise."""
    limits = limits or ImageLimits()
    name = str(source) if isinstance(source, str | Path) else "the upload"
    if isinstance(source, str | Path):
        data = _read_file(Path(source), limits.max_bytes)
    elif isinstance(source, bytes):
        data = source
    else:
        data = source.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"{name} is over the limit of {limits.max_bytes:,} bytes")
    if not data:
        raise NotAnImage(f"{name} is empty")
    try:
        img: Image.Image = Image.open(io.BytesIO(data), formats=list(limits.formats))
    except UnidentifiedImageError:
        raise NotAnImage(
            f"{name} is not an image in a supported format ({', '.join(limits.formats)})"
        ) from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{name} is too large to decode ({exc})") from None
    except Exception as exc:  # a damaged header can raise nearly anything inside Pillow
        raise ImageRejected(f"{name} is a damaged image ({exc})") from None
    w, h = img.size
    # The cap is checked on the header's size, before a single pixel is decoded.
    if w * h > limits.max_pixels:
        raise ImageTooLarge(
            f"{name} is {w}x{h} = {w * h:,} pixels; the limit is {limits.max_pixels:,}"
        )
    if w < 1 or h < 1:
        raise ImageRejected(f"{name} has no pixels")
    try:
        if img.format == "JPEG" and max(w, h) > WORK_SIDE:
            img.draft(img.mode, (WORK_SIDE, WORK_SIDE))  # decode at a reduced DCT scale: faster
        img.seek(0)
        img.load()
        if img.mode not in MODES:  # e.g. LAB, HSV, CMYK: to a mode to_gray knows
            img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{name} is too large to decode ({exc})") from None
    except Exception as exc:  # truncated data, bad compressed stream, ...
        raise ImageRejected(f"{name} is a damaged or truncated image ({exc})") from None
    return img


def _read_file(path: Path, max_bytes: int) -> bytes:
    """At most ``max_bytes`` + 1 bytes of a regular file: the count of bytes actually read
    bounds it, not ``st_size`` (which is 0 for a device)."""
    try:  # fileio's reader: the size checked before reading (fstat) and while reading
        with fileio.open_regular(path, fileio.FileKind(fileio.IMAGE.noun, max_bytes)) as f:
            return f.read(max_bytes + 1)
    except fileio.FileTooLarge as exc:
        raise ImageTooLarge(str(exc)) from None
    except CnnlabError as exc:
        raise ImageRejected(str(exc)) from None
    except OSError as exc:
        raise ImageRejected(f"cannot read {path}: {exc.strerror or exc}") from None


def to_gray(img: Image.Image | np.ndarray) -> np.ndarray:
    """Grey levels in [0, 1], (H, W) float32, from an image or an array.

    Arrays: (H, W) or (H, W, C) with C in 1, 3, 4; uint8 is 0-255, floats are 0-1.
    Transparency: painted pixels are the opaque ones, so a transparent background is
    filled with the colour opposite to the paint (black strokes on a transparent canvas
    get white paper, white strokes get black), never a fixed colour that could hide them.
    """
    if isinstance(img, Image.Image):
        if max(img.size) > WORK_SIDE:
            img = img.copy()
            img.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            arr = np.asarray(img, dtype=np.float32)
            lo, hi = float(arr.min()), float(arr.max())
            return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            img.mode == "P" and "transparency" in img.info
        )
        if has_alpha and img.mode in ("RGBA", "LA"):
            # Fully opaque (a canvas filled before drawing): alpha carries nothing.
            has_alpha = img.getchannel("A").getextrema()[0] < 255  # type: ignore[operator]
        if not has_alpha:
            return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        arr = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    else:
        arr = np.asarray(img)
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        elif arr.dtype.kind in "iu":
            raise CnnlabError(f"integer images must be uint8, got {arr.dtype}")
        else:
            arr = arr.astype(np.float32)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim == 2:
            return arr
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise CnnlabError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got {arr.shape}")
    # ITU-R 601 luma, as Pillow's convert("L")
    lum = arr[:, :, :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (H, W)
    if arr.shape[2] == 3:
        return lum
    alpha = arr[:, :, 3]  # (H, W)
    if float(alpha.min()) >= 1.0:
        return lum
    painted = float(alpha.sum())
    if painted == 0.0:
        return np.zeros_like(lum)
    paint = float((lum * alpha).sum()) / painted  # mean grey of the paint
    background = 0.0 if paint >= 0.5 else 1.0
    return lum * alpha + background * (1.0 - alpha)


def mnist_style(gray: np.ndarray, invert: bool | None = None) -> Preprocessed:
    """(H, W) grey levels in [0, 1] -> the 28x28 MNIST-style input.

    ``invert``: None detects polarity (a bright border means a dark digit on light
    paper, which is inverted); True or False forces it.
    """
    x = np.asarray(gray, dtype=np.float32)
    if x.ndim != 2 or x.size == 0:
        raise CnnlabError(f"expected a non-empty (H, W) grey image, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ImageRejected("image holds NaN or infinite values")
    forced = invert is not None
    if invert is None:
        invert = bool(np.median(_border(x)) > 0.5)
    if invert:
        x = 1.0 - x
    background = float(np.median(_border(x)))
    contrast = float(x.max()) - background
    if contrast < MIN_CONTRAST:
        hint = "" if not forced else " (or the wrong --invert/--no-invert)"
        raise NoDigitFound(f"no digit found in image: it is blank{hint}")
    # Background to 0, digit to 1; noise under the floor goes to 0, with no hard edge
    # (a soft threshold keeps the anti-aliased rims of strokes graded).
    x = np.clip((x - background) / contrast, 0.0, 1.0)
    x = np.clip((x - NOISE_FLOOR) / (1.0 - NOISE_FLOOR), 0.0, 1.0)
    rows = np.flatnonzero(x.any(axis=1))
    cols = np.flatnonzero(x.any(axis=0))
    if rows.size == 0:
        raise NoDigitFound("no digit found in image")
    x = x[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # (h, w) the digit's box
    digit = _fit_box(x)
    return Preprocessed(image=_centre_by_mass(digit), inverted=invert)


def preprocess(img: Image.Image | np.ndarray, invert: bool | None = None) -> Preprocessed:
    """An image (PIL or array) -> the 28x28 MNIST-style input."""
    return mnist_style(to_gray(img), invert)


def preprocess_file(
    source: str | Path | bytes | BinaryIO,
    invert: bool | None = None,
    limits: ImageLimits | None = None,
) -> Preprocessed:
    """An image file (path, bytes or file object) -> the 28x28 MNIST-style input."""
    return preprocess(open_image(source, limits), invert)


def to_png(image: np.ndarray) -> bytes:
    """(H, W) floats in [0, 1] -> 8-bit grey PNG bytes."""
    arr = np.clip(np.rint(np.asarray(image, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def list_images(paths: list[Path]) -> list[Path]:
    """Files as given; folders expand to their image files (by suffix, sorted, not recursive)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CnnlabError(f"folder {p} holds no image files ({' '.join(IMAGE_SUFFIXES)})")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise CnnlabError(f"{p} not found")
    return out


def _border(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x[0], x[-1], x[1:-1, 0], x[1:-1, -1]])


def _fit_box(x: np.ndarray) -> np.ndarray:
    """Scale (h, w) so its longest side is BOX, keeping the aspect ratio, anti-aliased."""
    h, w = x.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL: (width, height)
    # Area averaging when shrinking (true anti-aliasing), bilinear when enlarging: both
    # have non-negative kernels, so no ringing halo grows around the strokes.
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    out = np.asarray(Image.fromarray(x).resize(size, resample), dtype=np.float32)
    out = np.clip(out, 0.0, 1.0)
    peak = float(out.max())
    if peak <= 0.0:
        raise NoDigitFound("no digit found in image")
    return out / peak  # thin strokes averaged down still reach full brightness, as in MNIST


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Paste (h, w) into 28x28 with its intensity centre of mass at (14, 14), whole pixels.

    The shift is limited so the whole digit stays in the field (only a very lopsided
    digit needs that; MNIST's 20-pixel box leaves 8 pixels of play).
    """
    h, w = digit.shape
    mass = float(digit.sum())
    cy = float((digit.sum(axis=1) * np.arange(h)).sum()) / mass
    cx = float((digit.sum(axis=0) * np.arange(w)).sum()) / mass
    top = min(max(math.floor(CENTRE - cy + 0.5), 0), SIZE - h)
    left = min(max(math.floor(CENTRE - cx + 0.5), 0), SIZE - w)
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[top : top + h, left : left + w] = digit
    return out

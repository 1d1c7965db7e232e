"""Image files to network inputs: decode, orient, convert, fit and resize (Pillow).

One code path for the folder decoder, ``predict`` and ``serve``: :func:`decode` turns an
image file's bytes into uint8 ``(H, W, C)`` with the run's recorded
:class:`ImageSettings`. In order:

1. the header is read and its size checked against ``max_pixels`` *before* any pixel
   is decoded (a decompression bomb is refused with one line, whatever Pillow's global
   ``Image.MAX_IMAGE_PIXELS`` says); the first frame only (GIF, TIFF);
2. the EXIF orientation is applied (``ImageOps.exif_transpose``), as a photo viewer shows it;
3. the pixels are converted to the channels wanted: 1 grey (``L``, ITU-R 601 luma), 3 RGB
   or 4 RGBA. 16-bit greys (``I;16``, ``I``) are scaled to 8 bits, v -> round(v / 257),
   not clipped as Pillow's own conversion does; float greys (``F``) are taken as 0-255
   levels, rounded and clipped; palettes, CMYK and YCbCr go through RGB(A); alpha is
   dropped when not asked for (as Keras and torchvision do);
4. ``fit``: "stretch" resizes to H x W ignoring the aspect ratio (Keras' default);
   "crop" first cuts the largest centred window of the target's aspect ratio (Keras'
   ``crop_to_aspect_ratio``), "pad" first pads with zeros to it (``pad_to_aspect_ratio``);
5. resized with Pillow's filter (bilinear by default, as Keras). Pillow's filters widen
   when shrinking, so a downscale is anti-aliased (TensorFlow's default is not).

A JPEG much larger than the target is decoded at 1/2, 1/4 or 1/8 scale (its DCT scaling,
``Image.draft``) as long as that leaves at least twice the target's side: a 12-megapixel
photo to 64x64 decodes several times faster, and averages its pixels much as step 5 would.
"""

from __future__ import annotations

import errno
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab import fileio
from cnnlab.data.base import FITS, INTERPOLATIONS
from cnnlab.data.idx import open_regular
from cnnlab.data.preprocess import IMAGE_SUFFIXES, ImageRejected, ImageTooLarge, NotAnImage
from cnnlab.errors import CnnlabError

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")  # JPEG opens cameras' MPO files too
SUFFIXES = IMAGE_SUFFIXES
MAX_PIXELS = 89_478_485  # Pillow's default warning threshold, as cnnlab's own explicit limit
MAX_FILE_BYTES = 1 << 29  # one image file: 512 MiB
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
SIXTEEN_BIT = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}
_TARGET_MODE = {1: "L", 3: "RGB", 4: "RGBA"}
_SWAPS_SIDES = (5, 6, 7, 8)  # EXIF orientations that turn the image by 90 degrees


class UnreadableImage(ImageRejected):
    """The file cannot be read at all (permissions, I/O error, a link loop, not a file)."""


@dataclass(frozen=True)
class ImageSettings:
    """How image files become inputs: what a run records and ``predict`` replays."""

    shape: tuple[int, int, int]  # (H, W, C)
    interpolation: str = "bilinear"
    fit: str = "stretch"
    max_pixels: int = MAX_PIXELS

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 1 or shape[2] not in _TARGET_MODE:
            raise CnnlabError(f"image shape must be (H, W, 1|3|4), not {self.shape}")
        if self.interpolation not in INTERPOLATIONS:
            raise CnnlabError(f"unknown interpolation {self.interpolation!r}")
        if self.fit not in FITS:
            raise CnnlabError(f"unknown fit {self.fit!r}; choose {', '.join(FITS)}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "interpolation", INTERPOLATIONS[self.interpolation])

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "interpolation": self.interpolation, "fit": self.fit}

    @classmethod
    def from_dict(cls, d: dict[str, Any], max_pixels: int = MAX_PIXELS) -> ImageSettings:
        try:
            shape = tuple(int(v) for v in d["shape"])
            return cls((shape[0], shape[1], shape[2]), d["interpolation"], d["fit"], max_pixels)
        except (KeyError, TypeError, ValueError) as exc:
            raise CnnlabError(f"recorded image preprocessing is malformed: {exc}") from None


def read_file(path: Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """A regular file's bytes, at most ``max_bytes``; UnreadableImage / ImageTooLarge."""
    try:  # fileio's reader: a regular file, its size checked before and while reading
        with open_regular(path) as f:
            fileio.check_size(f, path, fileio.FileKind(fileio.IMAGE.noun, max_bytes))
            data = f.read(max_bytes + 1)
    except fileio.FileTooLarge as exc:
        raise ImageTooLarge(str(exc)) from None
    except CnnlabError as exc:
        raise UnreadableImage(_loop_message(path) or str(exc)) from None
    except OSError as exc:
        raise UnreadableImage(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise ImageTooLarge(f"{path} is over cnnlab's limit of {max_bytes:,} bytes for an image")
    return data


def _loop_message(path: Path) -> str | None:
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path} is a symbolic link loop"
    return None


def open_image(source: Any, name: str, max_pixels: int) -> Image.Image:
    """Pillow's lazy image (header read, no pixels yet), its size checked first."""
    try:
        if Image.MAX_IMAGE_PIXELS is None:  # decoding workers: no warning to silence
            img = Image.open(source, formats=FORMATS)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # see below
                img = Image.open(source, formats=FORMATS)
    except UnidentifiedImageError:
        raise NotAnImage(f"{name} is not a PNG, JPEG, BMP, GIF, WebP or TIFF image") from None
    except Image.DecompressionBombError as exc:  # Pillow's own global limit came first
        raise ImageTooLarge(f"{name} is refused before decoding as a bomb: {exc}") from None
    except Exception as exc:  # a damaged header raises nearly anything inside Pillow
        raise ImageRejected(f"{name} is a damaged image ({_short(exc)})") from None
    w, h = img.size
    if w * h > max_pixels:
        raise ImageTooLarge(
            f"{name} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}: "
            "refused before decoding as a decompression bomb"
        )
    if w < 1 or h < 1:
        raise ImageRejected(f"{name} has no pixels")
    return img


def _short(exc: BaseException, limit: int = 120) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def orientation(img: Image.Image) -> int:
    """The EXIF orientation (1-8) where the header holds it, without decoding pixels."""
    if "exif" not in img.info and img.format != "TIFF":
        return 1  # PNG's getexif() would decode the image to look for a late eXIf chunk
    try:
        value = img.getexif().get(0x0112, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # a damaged EXIF block: shown unrotated, as viewers do
        return 1


def probe(path: Path, max_pixels: int = MAX_PIXELS) -> tuple[int, int, str]:
    """(height, width, mode) as the image will be decoded, read from its header only."""
    try:
        f = open_regular(path)
    except CnnlabError as exc:
        raise UnreadableImage(_loop_message(path) or str(exc)) from None
    with f:
        img = open_image(f, str(path), max_pixels)
        w, h = img.size
        if orientation(img) in _SWAPS_SIDES:
            w, h = h, w
        return h, w, img.mode


def to_channels(img: Image.Image, channels: int) -> Image.Image:
    """``img`` in mode L (1), RGB (3) or RGBA (4); 16-bit and float greys scaled, not clipped."""
    mode = img.mode
    if mode in SIXTEEN_BIT:
        levels = np.clip(np.asarray(img).astype(np.int64), 0, 65535)  # (H, W)
        img = Image.fromarray(((levels + 128) // 257).astype(np.uint8))  # round(v / 257)
    elif mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=255.0)
        img = Image.fromarray(np.rint(np.clip(values, 0, 255)).astype(np.uint8))
    elif mode in ("P", "PA"):
        transparent = mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if transparent else "RGB")
    elif mode not in ("1", "L", "LA", "RGB", "RGBA"):  # CMYK, YCbCr, LAB, HSV, RGBX, ...
        img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    target = _TARGET_MODE[channels]
    return img if img.mode == target else img.convert(target)


def fit_box(
    width: int, height: int, target_h: int, target_w: int, fit: str
) -> tuple[int, int, int, int]:
    """Keras' arithmetic: the crop window (left, top, right, bottom) for "crop", the padded
    canvas (pad_width, pad_height, left, top) for "pad"."""
    if fit == "crop":
        crop_h = max(min(height, int(width * target_h / target_w)), 1)
        crop_w = max(min(width, int(height * target_w / target_h)), 1)
        top, left = int((height - crop_h) / 2), int((width - crop_w) / 2)
        return left, top, left + crop_w, top + crop_h
    pad_h = max(height, int(width * target_h / target_w))
    pad_w = max(width, int(height * target_w / target_h))
    return pad_w, pad_h, int((pad_w - width) / 2), int((pad_h - height) / 2)


def to_array(img: Image.Image, settings: ImageSettings) -> np.ndarray:
    """A decoded image -> uint8 (H, W, C) with ``settings`` (steps 2-5 of the module doc)."""
    if orientation(img) != 1:  # after load(): a PNG's late eXIf chunk is in img.info now
        try:
            img = ImageOps.exif_transpose(img) or img
        except Exception:  # damaged EXIF: the image as stored
            pass
    h, w, c = settings.shape
    img = to_channels(img, c)
    if settings.fit != "stretch":
        box = fit_box(img.width, img.height, h, w, settings.fit)
        if settings.fit == "crop":
            img = img.crop(box)
        else:
            pad_w, pad_h, left, top = box
            canvas = Image.new(img.mode, (pad_w, pad_h))  # zeros: black (and transparent)
            canvas.paste(img, (left, top))
            img = canvas
    if img.size != (w, h):
        img = img.resize((w, h), RESAMPLE[settings.interpolation])
    return np.asarray(img, dtype=np.uint8).reshape(h, w, c)


def decode(data: bytes, name: str, settings: ImageSettings) -> np.ndarray:
    """An image file's bytes -> uint8 (H, W, C); ImageRejected (or a subclass) naming it."""
    if not data:
        raise NotAnImage(f"{name} is empty")
    img = open_image(io.BytesIO(data), name, settings.max_pixels)
    try:
        img.seek(0)
        if img.format in ("JPEG", "MPO"):
            # JPEG's DCT scaling: decode at 1/2, 1/4 or 1/8 of the size where that still
            # leaves at least twice the target's side (in any orientation) for the resize.
            side = 2 * max(settings.shape[:2])
            img.draft(img.mode, (side, side))
        img.load()
        return to_array(img, settings)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{name} is refused as a decompression bomb: {exc}") from None
    except (ImageRejected, MemoryError):
        raise
    except Exception as exc:  # truncated data, a bad compressed stream, an odd mode
        raise ImageRejected(f"{name} does not decode ({_short(exc)})") from None


def load_image(
    path: Path | str,
    image_shape: tuple[int, int, int],
    interpolation: str = "bilinear",
    fit: str = "stretch",
    *,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """One image file -> uint8 (H, W, C), exactly as ``folder:`` decodes its images."""
    settings = ImageSettings(image_shape, interpolation, fit, max_pixels)
    return decode(read_file(Path(path)), str(path), settings)


def load_image_bytes(
    data: bytes,
    image_shape: tuple[int, int, int],
    interpolation: str = "bilinear",
    fit: str = "stretch",
    *,
    max_pixels: int = MAX_PIXELS,
    name: str = "the upload",
) -> np.ndarray:
    """An uploaded image's bytes -> uint8 (H, W, C), as :func:`load_image` (callers bound
    the byte count; the pixel count is checked here before decoding)."""
    settings = ImageSettings(image_shape, interpolation, fit, max_pixels)
    return decode(data, name, settings)

"""How a run's network reads its inputs: image files by the run's own recipe, and stored
pixels by its input scale, read from what the run recorded (serve, predict, explain and
evaluate all read them here).

Two recipes, chosen from the run (:func:`recipe_for`):

- **digits**, for runs trained on MNIST digits (spec ``mnist``; a 28x28x1 network whose run
  records no data, as older runs and imports; arrays labelled 0-9 given to ``fit``):
  MNIST's own recipe (:mod:`cnnlab.data.preprocess`): grey, inverted when dark on light,
  cropped to the digit, scaled into 20x20 and centred by mass in 28x28;
- **image**, for every other 2-D image network: the folder decoder's steps
  (:mod:`cnnlab.data.images`: EXIF orientation, channels, fit, resize) with the run's
  recorded ``preprocessing.image`` (shape, interpolation, fit), or, where the run records
  none, the network's input H x W x C, bilinear, stretched (Keras' defaults).

The pixels then become network inputs as the run's own pixels did (``Recipe.scale``): the
run's recorded input scale (/255, or raw 0-255 for a network that begins with a
``Rescaling`` layer). A run trained on float inputs (an ``.npz`` of floats, arrays given to
``fit``) took no pixels: there pixels are divided by 255 (0-1, the chapter's floats), or
passed raw to a network that begins with a ``Rescaling`` layer, and the reason says so.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from cnnlab.data import images
from cnnlab.data.preprocess import ImageLimits, ImageTooLarge, preprocess, preprocess_file
from cnnlab.data.scaling import InputScale, to_inputs
from cnnlab.errors import CnnlabError
from cnnlab.models import ModelDescription
from cnnlab.models.layers import INPUT, Rescaling
from cnnlab.train.schemas import RunData

DIGITS, IMAGE = "digits", "image"
DIGIT_SHAPE = (28, 28, 1)  # what MNIST-style preprocessing makes
DIGIT_CLASSES = [str(i) for i in range(10)]
CHANNEL_NAMES = {1: "grey", 3: "RGB", 4: "RGBA"}
Source = bytes | BinaryIO | str | Path


def fmt_shape(shape: tuple[int, ...] | list[int]) -> str:
    return "x".join(str(s) for s in shape)


@dataclass(frozen=True)
class Seen:
    """One image as the network saw it."""

    image: np.ndarray  # a picture in [0, 1]: (H, W) grey, or (H, W, C) colour
    x: np.ndarray  # the network's input, (H, W, C) float32
    inverted: bool | None  # whether MNIST-style preprocessing inverted it (None: not run)


@dataclass(frozen=True)
class Recipe:
    """How image files become this network's inputs (``mode`` None: they cannot)."""

    mode: str | None  # DIGITS, IMAGE, or None: the network does not take images
    input_shape: tuple[int, ...]
    scale: InputScale  # how 0-255 pixels become inputs
    settings: images.ImageSettings | None = None  # the IMAGE recipe's decoding
    refusal: str = ""  # why not, for mode None

    def describe(self) -> str:
        """One phrase for the page and the docs: what is done to an image."""
        if self.mode == DIGITS:
            return "28x28 grey, MNIST-style: inverted if dark on light, centred by mass"
        if self.settings is None:
            return self.refusal
        h, w, c = self.settings.shape
        return f"{h}x{w} {CHANNEL_NAMES[c]}, {self.settings.interpolation}, {self.settings.fit}"

    def require(self, what: str) -> None:
        """CnnlabError, in one line, unless the network takes images."""
        if self.mode is None:
            raise CnnlabError(f"{what} needs a network that takes images; {self.refusal}")

    def load(
        self,
        source: Source,
        invert: bool | None = None,
        limits: ImageLimits | None = None,
    ) -> Seen:
        """An image file (bytes, a file object or a path) as the network sees it;
        ImageRejected (with an HTTP-like ``status``) naming what is wrong with it."""
        self.require("reading image files")
        if self.mode == DIGITS:
            prepped = preprocess_file(source, invert, limits)
            return self._digit(prepped.image, prepped.inverted)
        assert self.settings is not None
        max_bytes = limits.max_bytes if limits else images.MAX_FILE_BYTES
        max_pixels = limits.max_pixels if limits else images.MAX_PIXELS
        if isinstance(source, str | Path):
            name, data = str(source), images.read_file(Path(source), max_bytes)
        else:
            name = "the upload"
            data = source if isinstance(source, bytes) else source.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise ImageTooLarge(f"{name} is over the limit of {max_bytes:,} bytes")
        s = self.settings
        pixels = images.load_image_bytes(
            data, s.shape, s.interpolation, s.fit, max_pixels=max_pixels, name=name
        )
        return self._pixels(pixels)

    def from_array(self, array: np.ndarray, invert: bool | None = None) -> Seen:
        """An image array, any size: (H, W) grey or (H, W, 1|3|4); integers 0-255 (uint8),
        floats 0-1."""
        self.require("predicting on images")
        arr = np.asarray(array)
        if self.mode == DIGITS:
            prepped = preprocess(arr, invert)
            return self._digit(prepped.image, prepped.inverted)
        assert self.settings is not None
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))) or not arr.size:
            raise CnnlabError(f"an image array is (H, W) or (H, W, 1|3|4), not {arr.shape}")
        if arr.dtype.kind in "iu":  # integer levels: 0-255
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        elif arr.dtype != np.uint8:  # floats (and booleans): 0-1
            with np.errstate(invalid="ignore"):
                arr = np.rint(np.clip(np.nan_to_num(arr.astype(np.float64)), 0, 1) * 255)
            arr = arr.astype(np.uint8)
        return self._pixels(images.to_array(Image.fromarray(arr), self.settings))

    def _digit(self, image: np.ndarray, inverted: bool) -> Seen:
        # preprocess gives pixels / 255; the run's scale may want them raw (x 255)
        factor = np.float32(255.0 / self.scale.divisor)
        x = image if factor == 1 else image * factor
        return Seen(image, x[..., None].astype(np.float32), inverted)

    def _pixels(self, pixels: np.ndarray) -> Seen:
        picture = pixels.astype(np.float32) / np.float32(255)
        if picture.shape[-1] == 1:
            picture = picture[..., 0]
        return Seen(picture, to_inputs(pixels, self.scale), None)


def takes_raw_pixels(description: ModelDescription) -> bool:
    """Whether the network begins with a Rescaling layer (the only reader of its input):
    it then scales pixels itself and takes them raw, 0-255, as in Keras."""
    readers = description.consumers[INPUT]
    return len(readers) == 1 and isinstance(description.by_name[readers[0]].layer, Rescaling)


def dataset_scale(description: ModelDescription, data: RunData, pixels: bool) -> InputScale:
    """How a rebuilt dataset's stored values become the run's inputs: uint8 pixels as
    :func:`pixel_scale` says (also where the run was trained on them as floats in [0, 1],
    cnnlab.data.prepare's), float values as the run recorded."""
    return pixel_scale(description, data) if pixels else data.scale


def pixel_scale(description: ModelDescription, data: RunData) -> InputScale:
    """How 0-255 pixels become this run's inputs: the run's own scale where it took pixels."""
    record = data.record
    if record is None or record.get("pixels"):
        return data.scale
    if takes_raw_pixels(description):
        return InputScale(
            1.0,
            "the run was trained on float inputs and the network begins with a Rescaling "
            "layer: pixels passed raw (0-255)",
        )
    return InputScale(
        255.0, "the run was trained on float inputs: pixels divided by 255 (0-1), as the chapter"
    )


def is_digit_run(description: ModelDescription, data: RunData) -> bool:
    """Whether the run was trained on MNIST digits (and so reads images MNIST-style)."""
    if tuple(description.input_shape) != DIGIT_SHAPE:
        return False
    record = data.record
    if record is None:  # older runs and imports of a 28x28x1 network: as before records
        return True
    if "image" in (record.get("preprocessing") or {}):
        return False  # a folder of images: its own decoding
    spec = record.get("spec")
    return spec == "mnist" or (spec == "arrays" and record.get("classes") == DIGIT_CLASSES)


def recipe_for(description: ModelDescription, data: RunData) -> Recipe:
    """The recipe of a run (``data``: :func:`cnnlab.train.schemas.read_run_data`)."""
    shape = tuple(description.input_shape)
    scale = pixel_scale(description, data)
    if is_digit_run(description, data):
        return Recipe(DIGITS, shape, scale)
    name = description.name
    if len(shape) != 3:
        return Recipe(
            None, shape, scale, refusal=f"model {name!r} takes {fmt_shape(shape)} inputs, not "
            "images (H x W x C): predict on arrays instead (cnnlab predict RUN_DIR --array X.npy)"
        )  # fmt: skip
    if shape[2] not in CHANNEL_NAMES:
        return Recipe(
            None, shape, scale, refusal=f"model {name!r} takes {fmt_shape(shape)}: image files "
            "give 1 (grey), 3 (RGB) or 4 (RGBA) channels; predict on arrays instead "
            "(cnnlab predict RUN_DIR --array X.npy)"
        )  # fmt: skip
    recorded = ((data.record or {}).get("preprocessing") or {}).get("image")
    settings = images.ImageSettings((shape[0], shape[1], shape[2]))
    if isinstance(recorded, dict):
        found = images.ImageSettings.from_dict(recorded)
        # the network's own shape: a record that disagrees with it cannot have trained it
        settings = images.ImageSettings(settings.shape, found.interpolation, found.fit)
    return Recipe(IMAGE, shape, scale, settings)


def image_png(picture: np.ndarray) -> bytes:
    """A picture in [0, 1], (H, W) grey or (H, W, 3|4) colour, as PNG bytes."""
    arr = np.clip(np.rint(np.asarray(picture, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()

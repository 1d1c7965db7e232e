"""Keras' image augmentation layers: ``RandomFlip``, ``RandomTranslation``, ``RandomRotation``,
``RandomZoom``, ``RandomContrast`` and ``RandomBrightness``.

As in Keras, each is the identity at inference (a module in eval mode, the NumPy engine)
and, in training, transforms every example of the batch on its own with a random draw. The
draws come from torch's global RNG on the batch's device, so a seeded run is reproducible
(Keras' ``seed`` is ignored: cnnlab seeds from the run). The geometric layers sample each
example's input through one affine map from output pixels to input pixels, as Keras'
``affine_transform`` does (pixel centres at whole coordinates), with Keras' fill modes:

- ``reflect``: ``(d c b a | a b c d | d c b a)``, about the edge of the last pixel;
- ``wrap``: ``(a b c d | a b c d | a b c d)``;
- ``constant``: ``(k k k k | a b c d | k k k k)``, ``k = fill_value``;
- ``nearest``: ``(a a a a | a b c d | d d d d)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.layers.base import (
    REQUIRED,
    Array,
    Shape,
    check_choice,
    check_float,
    fail,
    fmt,
    register,
)
from cnnlab.models.layers.core import Pointwise

if TYPE_CHECKING:
    from cnnlab.models.description import LayerInfo

Factor = float | tuple[float, float]  # Keras' factor: one number, or (lower, upper)
FILL_MODES = ("reflect", "wrap", "constant", "nearest")
INTERPOLATIONS = ("bilinear", "nearest")
FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")


def check_factor(where: str, key: str, value: Any, low: float, high: float) -> Factor:
    """One number, or a (lower, upper) pair of numbers, each in [low, high]."""
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise fail(where, f"{key} needs one number or a (lower, upper) pair, got {value!r:.40}")
        return (
            check_float(where, key, value[0], low, high),
            check_float(where, key, value[1], low, high),
        )
    return check_float(where, key, value, low, high)


def bounds(factor: Factor, low: float = -1.0) -> tuple[float, float]:
    """Keras' range of a factor: a pair sorted; one number f: (max(-|f|, low), |f|)
    (``_set_factor`` in Keras' image preprocessing layers)."""
    if isinstance(factor, tuple):
        return (min(factor), max(factor))
    return (max(-abs(factor), low), abs(factor))


def check_value_range(where: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise fail(where, f"value_range needs a (low, high) pair, got {value!r:.40}")
    return (
        check_float(where, "value_range", value[0], -1e9, 1e9),
        check_float(where, "value_range", value[1], -1e9, 1e9),
    )


def uniform(x: torch.Tensor, lower: float, upper: float) -> torch.Tensor:
    """One draw per example in [lower, upper), from torch's global RNG on x's device: (N,)."""
    u = torch.rand(x.shape[0], device=x.device, dtype=x.dtype)
    return lower + (upper - lower) * u


# grid_sample's padding for each fill mode, on pixel centres (align_corners=False): its
# "reflection" reflects about the image's outer edges, d c b a | a b c d, Keras' "reflect"
PADDING = {"reflect": "reflection", "nearest": "border", "constant": "zeros", "wrap": "border"}


def sample(
    x: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    fill_mode: str,
    interpolation: str,
    fill_value: float,
) -> torch.Tensor:
    """x (N, C, H, W) read at (rows, cols) (N, H, W), fractional input pixel positions, by
    bilinear interpolation or the nearest pixel, the image extended by ``fill_mode``."""
    if fill_mode == "wrap":  # positions folded into the image, ringed by the opposite edges
        h, w = x.shape[-2:]
        x = F.pad(x, (1, 1, 1, 1), mode="circular")
        rows, cols = torch.remainder(rows, h) + 1, torch.remainder(cols, w) + 1
    h, w = x.shape[-2:]
    grid = torch.stack([(2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1], dim=-1)  # (N, H, W, 2)

    def read(t: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(
            t, grid, mode=interpolation, padding_mode=PADDING[fill_mode], align_corners=False
        )

    out = read(x)
    if fill_mode == "constant" and fill_value:  # zeros padding, plus k times the weight outside
        out = out + fill_value * (1 - read(torch.ones_like(x[:, :1])))
    return out


def affine(
    x: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    fill_mode: str,
    interpolation: str,
    fill_value: float,
) -> torch.Tensor:
    """Keras' ``affine_transform`` on x (N, C, H, W): output pixel (column u, row v) of
    example i reads the input at column ``a[i] . (u, v, 1)``, row ``b[i] . (u, v, 1)``;
    a, b: (N, 3)."""
    _, _, h, w = x.shape
    v, u = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=x.dtype),
        torch.arange(w, device=x.device, dtype=x.dtype),
        indexing="ij",
    )  # (H, W) each

    def apply(m: torch.Tensor) -> torch.Tensor:
        return m[:, 0, None, None] * u + m[:, 1, None, None] * v + m[:, 2, None, None]

    return sample(x, apply(b), apply(a), fill_mode, interpolation, fill_value)


class Augment(nn.Module):
    """The identity in eval mode; in training, ``fn`` on the channels-first batch."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], text: str) -> None:
        super().__init__()
        self.fn, self.text = fn, text

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) if self.training else x

    def extra_repr(self) -> str:
        return f"{self.text}, in training only"


class Augmentation(Pointwise):
    """What the six share: images in, the same shape out, the identity at inference."""

    KERAS_IGNORED = ("seed",)  # cnnlab's draws come from the run's seed
    KERAS_FIXED = {"data_format": ("channels_last",)}

    def output_shape(self, shapes: Sequence[Shape], where: str) -> Shape:
        if len(shapes[0]) != 3:
            raise fail(
                where, f"takes images (height, width, channels), as Keras, got {fmt(shapes[0])}"
            )
        return shapes[0]

    def module(self, info: LayerInfo) -> nn.Module:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return Augment(self.augment, args)

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        return xs[0]  # inference: the identity

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """The training-time transform of a (N, C, H, W) batch, one draw per example."""
        raise NotImplementedError


@register
@dataclass(frozen=True, kw_only=True)
class RandomFlip(Augmentation):
    """Flips about half the examples (a draw u <= 0.5): left-right (``horizontal``),
    top-bottom (``vertical``), or both at once (``horizontal_and_vertical``: as Keras, one
    draw per example decides both flips)."""

    mode: str

    KERAS_NAMES = {"RandomFlip": {}}
    ARGS = {"mode": "horizontal_and_vertical"}
    POSITIONAL = ("mode",)

    @classmethod
    def build(cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str) -> RandomFlip:
        return cls(name=name, mode=check_choice(where, "mode", a["mode"], FLIP_MODES))

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        flip = (torch.rand(x.shape[0], device=x.device) <= 0.5).reshape(-1, 1, 1, 1)
        if self.mode != "vertical":
            x = torch.where(flip, x.flip(-1), x)
        if self.mode != "horizontal":
            x = torch.where(flip, x.flip(-2), x)
        return x


@dataclass(frozen=True, kw_only=True)
class Resampling(Augmentation):
    """A geometric augmentation: fill mode, interpolation and fill value, as Keras."""

    fill_mode: str
    interpolation: str
    fill_value: float

    FILL = {"fill_mode": "reflect", "interpolation": "bilinear", "fill_value": 0.0}

    @staticmethod
    def fill_args(a: Mapping[str, Any], where: str) -> dict[str, Any]:
        return {
            "fill_mode": check_choice(where, "fill_mode", a["fill_mode"], FILL_MODES),
            "interpolation": check_choice(
                where, "interpolation", a["interpolation"], INTERPOLATIONS
            ),
            "fill_value": check_float(where, "fill_value", a["fill_value"], -1e9, 1e9),
        }

    def resample(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return affine(x, a, b, self.fill_mode, self.interpolation, self.fill_value)


@register
@dataclass(frozen=True, kw_only=True)
class RandomTranslation(Resampling):
    """Shifts each example by (factor * height) rows and (factor * width) columns, the
    factors drawn in their ranges (negative: up, left; positive: down, right)."""

    height_factor: Factor
    width_factor: Factor

    KERAS_NAMES = {"RandomTranslation": {}}
    ARGS = {"height_factor": REQUIRED, "width_factor": REQUIRED, **Resampling.FILL}
    POSITIONAL = ("height_factor", "width_factor")

    @classmethod
    def build(
        cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str
    ) -> RandomTranslation:
        return cls(
            name=name,
            height_factor=check_factor(where, "height_factor", a["height_factor"], -1, 1),
            width_factor=check_factor(where, "width_factor", a["width_factor"], -1, 1),
            **cls.fill_args(a, where),
        )

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        dy = uniform(x, *bounds(self.height_factor)) * h
        dx = uniform(x, *bounds(self.width_factor)) * w
        one, zero = torch.ones_like(dx), torch.zeros_like(dx)
        # output (u, v) reads the input at (u - dx, v - dy): Keras' [[1, 0, -dx], [0, 1, -dy]]
        return self.resample(x, torch.stack([one, zero, -dx], 1), torch.stack([zero, one, -dy], 1))


@register
@dataclass(frozen=True, kw_only=True)
class RandomRotation(Resampling):
    """Rotates each example about its centre by ``factor * 2 pi``, drawn in the factor's
    range (positive: counter-clockwise, as the image is shown, rows going down)."""

    factor: Factor

    KERAS_NAMES = {"RandomRotation": {}}
    ARGS = {"factor": REQUIRED, **Resampling.FILL}
    POSITIONAL = ("factor",)

    @classmethod
    def build(
        cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str
    ) -> RandomRotation:
        return cls(
            name=name,
            factor=check_factor(where, "factor", a["factor"], -1, 1),
            **cls.fill_args(a, where),
        )

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        theta = uniform(x, *bounds(self.factor)) * (2 * math.pi)
        cos, sin = torch.cos(theta), torch.sin(theta)
        cx, cy = (w - 1) / 2, (h - 1) / 2
        # Keras' _compute_affine_matrix with scale 1, no shear or translation
        a = torch.stack([cos, -sin, cx - cx * cos + cy * sin], 1)
        b = torch.stack([sin, cos, cy - cx * sin - cy * cos], 1)
        return self.resample(x, a, b)


@register
@dataclass(frozen=True, kw_only=True)
class RandomZoom(Resampling):
    """Zooms each example about its centre: it reads the input at ``c + z (p - c)``, with
    ``z = 1 + factor`` drawn per axis (positive: zoom out, negative: zoom in);
    ``width_factor=None`` zooms both axes by the height's draw (the aspect ratio kept)."""

    height_factor: Factor
    width_factor: Factor | None

    KERAS_NAMES = {"RandomZoom": {}}
    ARGS = {"height_factor": REQUIRED, "width_factor": None, **Resampling.FILL}
    POSITIONAL = ("height_factor", "width_factor")

    @classmethod
    def build(cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str) -> RandomZoom:
        def zoom(key: str) -> Factor:
            f = check_factor(where, key, a[key], -1, 1)
            if -1.0 in (f if isinstance(f, tuple) else (f,)):
                raise fail(where, f"{key} must be above -1 (a zoom by 0), got {a[key]!r:.40}")
            return f

        return cls(
            name=name,
            height_factor=zoom("height_factor"),
            width_factor=None if a["width_factor"] is None else zoom("width_factor"),
            **cls.fill_args(a, where),
        )

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        zy = 1 + uniform(x, *bounds(self.height_factor))
        zx = zy if self.width_factor is None else 1 + uniform(x, *bounds(self.width_factor))
        zero = torch.zeros_like(zx)
        # Keras' [[zx, 0, (w - 1) / 2 (1 - zx)], [0, zy, (h - 1) / 2 (1 - zy)]]
        a = torch.stack([zx, zero, (w - 1) / 2 * (1 - zx)], 1)
        b = torch.stack([zero, zy, (h - 1) / 2 * (1 - zy)], 1)
        return self.resample(x, a, b)


@register
@dataclass(frozen=True, kw_only=True)
class RandomContrast(Augmentation):
    """Per example, a contrast factor f drawn in [1 - lower, 1 + upper]; each channel
    becomes ``(x - mean) * f + mean`` (its mean over the image), clipped to ``value_range``.

    As Keras 3's code (not its docstring): one number ``factor=0.2`` gives (lower, upper) =
    (0, 0.2), f in [1, 1.2]; a pair (0.2, 0.2) gives f in [0.8, 1.2]."""

    factor: Factor
    value_range: tuple[float, float]

    KERAS_NAMES = {"RandomContrast": {}}
    ARGS = {"factor": REQUIRED, "value_range": (0, 255)}
    POSITIONAL = ("factor",)

    @classmethod
    def build(
        cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str
    ) -> RandomContrast:
        f = a["factor"]
        factor = check_factor(where, "factor", f, 0, 1 if not isinstance(f, list | tuple) else 1e3)
        if bounds(factor, 0)[0] > 1:
            raise fail(where, f"factor's lower bound must be at most 1, got {f!r:.40}")
        low, high = check_value_range(where, a["value_range"])
        if low > high:
            raise fail(where, f"value_range needs low <= high, got {a['value_range']!r:.40}")
        return cls(name=name, factor=factor, value_range=(low, high))

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        lower, upper = bounds(self.factor, 0)
        f = uniform(x, 1 - lower, 1 + upper).reshape(-1, 1, 1, 1)
        mean = x.mean(dim=(2, 3), keepdim=True)  # per example and channel
        return ((x - mean) * f + mean).clamp(*self.value_range)


@register
@dataclass(frozen=True, kw_only=True)
class RandomBrightness(Augmentation):
    """Per example, adds ``delta * (high - low)`` to every value, delta drawn in the factor's
    range (in [-1, 1]), then clips to ``value_range`` = (low, high)."""

    factor: Factor
    value_range: tuple[float, float]

    KERAS_NAMES = {"RandomBrightness": {}}
    ARGS = {"factor": REQUIRED, "value_range": (0, 255)}
    POSITIONAL = ("factor",)

    @classmethod
    def build(
        cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str
    ) -> RandomBrightness:
        low, high = sorted(check_value_range(where, a["value_range"]))  # Keras sorts it
        return cls(
            name=name,
            factor=check_factor(where, "factor", a["factor"], -1, 1),
            value_range=(low, high),
        )

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.value_range
        delta = uniform(x, *bounds(self.factor)) * (high - low)
        return (x + delta.reshape(-1, 1, 1, 1)).clamp(low, high)

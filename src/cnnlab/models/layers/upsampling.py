"""``UpSampling1D``, ``UpSampling2D``, ``UpSampling3D``: each spatial axis stretched by ``size``.

Keras' semantics (keras/src/layers/reshaping/up_sampling{1,2,3}d.py): ``UpSampling1D(size=2)``
takes one int; ``UpSampling2D(size=(2, 2), interpolation="nearest")`` and
``UpSampling3D(size=(2, 2, 2))`` one int or one per axis, each >= 1. ``nearest`` repeats
every cell ``size`` times along its axis (Keras' ``ops.repeat``). ``bilinear`` (2-D only) is
Keras' ``ops.image.resize`` without antialiasing: output cell ``i`` of an axis of ``n`` cells
samples the input at ``(i + 0.5) / size - 0.5``, clamped to ``[0, n - 1]``, linearly between
its two neighbours (half-pixel centres, PyTorch's ``align_corners=False``). Keras' other
resize kernels (``bicubic``, ``lanczos3``, ``lanczos5``, ``area``) are refused: their results
differ between Keras' backends.

Upsampled units do not lie on a regular grid of the input (a unit's field is its source
cell's, which moves every ``size`` units), so no receptive-field rule applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.fields import POINTWISE, Geometry
from cnnlab.models.layers.base import (
    Array,
    CapabilityError,
    Layer,
    Shape,
    check_int,
    check_tuple,
    fail,
    register,
    resolve_args,
    spatial_input,
)
from cnnlab.models.layers.conv import CHANNELS_LAST

if TYPE_CHECKING:
    from cnnlab.models.description import LayerInfo

INTERPOLATIONS = ("nearest", "bilinear")
REFUSED = ("bicubic", "lanczos3", "lanczos5", "area")  # Keras 3's other resize kernels
# Keras' arguments and defaults per rank (each class's __init__ signature)
ARGS_BY_RANK: dict[int, dict[str, Any]] = {
    1: {"size": 2},
    2: {"size": (2, 2), "interpolation": "nearest"},
    3: {"size": (2, 2, 2)},
}


def linear_axis(x: Array, axis: int, factor: int) -> Array:
    """``x`` stretched ``factor`` times along ``axis`` by linear interpolation with half-pixel
    centres, the source clamped to the first and last cell."""
    n = x.shape[axis]
    src = np.maximum((np.arange(n * factor) + 0.5) / factor - 0.5, 0.0)
    lo = np.floor(src).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    shape = [1] * x.ndim
    shape[axis] = -1
    t = (src - lo).astype(x.dtype).reshape(shape)  # weight of the upper neighbour
    a, b = np.take(x, lo, axis=axis), np.take(x, hi, axis=axis)
    return a + (b - a) * t


class UpSampleModule(nn.Module):
    """Channels-first (N, C, *spatial): each spatial axis stretched by its factor."""

    def __init__(self, size: tuple[int, ...], interpolation: str) -> None:
        super().__init__()
        self.size, self.interpolation = size, interpolation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.interpolation == "bilinear":
            scale = [float(s) for s in self.size]
            return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        for axis, factor in enumerate(self.size, start=2):
            if factor > 1:
                x = x.repeat_interleave(factor, dim=axis)
        return x

    def extra_repr(self) -> str:
        return f"size={self.size}, {self.interpolation}"


@register
@dataclass(frozen=True, kw_only=True)
class UpSampling(Layer):
    """``UpSampling{rank}D``: ``size`` per spatial axis; ``interpolation`` (2-D only)."""

    rank: int
    size: tuple[int, ...]
    interpolation: str = "nearest"

    KERAS_NAMES = {f"UpSampling{r}D": {"rank": r} for r in (1, 2, 3)}
    ARGS = ARGS_BY_RANK[2]  # every argument any rank takes; parse() keeps each rank's own
    POSITIONAL = ("size", "interpolation")
    KERAS_FIXED = CHANNELS_LAST

    @classmethod
    def parse(cls, class_name: str, args: Mapping[str, Any], name: str, where: str) -> UpSampling:
        rank = cls.KERAS_NAMES[class_name]["rank"]
        return cls.build(name, {"rank": rank}, resolve_args(where, ARGS_BY_RANK[rank], args), where)

    @classmethod
    def build(cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str) -> UpSampling:
        rank, size = fixed["rank"], a["size"]
        if rank == 1:  # Keras' UpSampling1D takes an int only
            if isinstance(size, list | tuple):
                raise fail(where, f"size must be one whole number, got {size!r:.40}")
            sizes: tuple[int, ...] = (check_int(where, "size", size),)
        else:
            sizes = check_tuple(where, "size", size, rank)
        mode = a.get("interpolation", "nearest")
        mode = mode.lower() if isinstance(mode, str) else mode  # Keras lower-cases it
        if mode in REFUSED:
            raise fail(
                where,
                f"interpolation {mode!r} is not supported ({' and '.join(INTERPOLATIONS)} are)",
            )
        if mode not in INTERPOLATIONS:
            raise fail(
                where, f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {mode!r:.40}"
            )
        return cls(name=name, rank=rank, size=sizes, interpolation=mode)

    def config(self) -> dict[str, Any]:
        if self.rank == 1:
            return {"size": self.size[0]}
        extra = {"interpolation": self.interpolation} if self.rank == 2 else {}
        return {"size": list(self.size), **extra}

    def output_shape(self, shapes: Sequence[Shape], where: str) -> Shape:
        shape = shapes[0]
        spatial_input(where, shape, self.rank)
        return (*(n * s for n, s in zip(shape[:-1], self.size, strict=True)), shape[-1])

    def module(self, info: LayerInfo) -> nn.Module:
        return UpSampleModule(self.size, self.interpolation)

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        x = xs[0]  # (N, *spatial, C)
        for axis, factor in enumerate(self.size, start=1):
            if factor > 1:
                if self.interpolation == "bilinear":
                    x = linear_axis(x, axis, factor)
                else:
                    x = np.repeat(x, factor, axis=axis)
        return x

    def geometry(self, info: LayerInfo) -> Geometry:
        if all(s == 1 for s in self.size):
            return POINTWISE  # size 1 everywhere: the identity
        raise CapabilityError(
            self,
            "receptive-field rule",
            f"upsampled units (size {'x'.join(map(str, self.size))}) do not lie on a regular "
            "grid of the input",
        )

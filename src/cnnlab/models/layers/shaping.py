"""``ZeroPadding{1,2,3}D`` and ``Flatten``: layers that move values, not compute them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import ops
from cnnlab.models.fields import COLLAPSE, Geometry, Shift
from cnnlab.models.layers.base import (
    Array,
    Layer,
    Shape,
    check_pairs,
    register,
    spatial_input,
)
from cnnlab.models.layers.conv import CHANNELS_LAST
from cnnlab.models.layers.core import Lambda

if TYPE_CHECKING:
    from cnnlab.models.description import LayerInfo


@register
@dataclass(frozen=True, kw_only=True)
class ZeroPadding(Layer):
    """``ZeroPadding{rank}D``: ``padding`` holds (before, after) zeros per spatial axis."""

    rank: int
    padding: tuple[tuple[int, int], ...]

    KERAS_NAMES = {f"ZeroPadding{r}D": {"rank": r} for r in (1, 2, 3)}
    ARGS = {"padding": 1}
    POSITIONAL = ("padding",)
    KERAS_FIXED = CHANNELS_LAST

    @classmethod
    def build(cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str) -> ZeroPadding:
        pads = check_pairs(where, "padding", a["padding"], fixed["rank"])
        return cls(name=name, rank=fixed["rank"], padding=pads)

    def output_shape(self, shapes: Sequence[Shape], where: str) -> Shape:
        shape = shapes[0]
        spatial_input(where, shape, self.rank)
        padded = tuple(n + a + b for n, (a, b) in zip(shape[:-1], self.padding, strict=True))
        return (*padded, shape[-1])

    def module(self, info: LayerInfo) -> nn.Module:
        pads = [v for pair in reversed(self.padding) for v in pair]
        return Lambda(lambda x: F.pad(x, pads), f"pad {self.padding}")

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        return np.pad(xs[0], ((0, 0), *self.padding, (0, 0)))

    def geometry(self, info: LayerInfo) -> Geometry:
        return Shift(self.padding)


class FlattenModule(nn.Module):
    """Keras' Flatten: (N, C, *spatial) -> (N, prod) in channels-last (spatial..., C) order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.movedim(1, -1).flatten(1) if x.ndim > 2 else x


@register
@dataclass(frozen=True, kw_only=True)
class Flatten(Layer):
    """Keras' ``Flatten`` on channels-last maps: (…, C) flattened in (spatial…, C) order."""

    KERAS_NAMES = {"Flatten": {}}
    KERAS_FIXED = CHANNELS_LAST

    def output_shape(self, shapes: Sequence[Shape], where: str) -> Shape:
        return (math.prod(shapes[0]),)

    def module(self, info: LayerInfo) -> nn.Module:
        return FlattenModule()

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        return np.asarray(ops.flatten(xs[0]))  # channels-last row-major: Keras' order

    def geometry(self, info: LayerInfo) -> Geometry:
        return COLLAPSE

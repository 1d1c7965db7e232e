"""``Cropping1D``, ``Cropping2D``, ``Cropping3D``: cells cut off the ends of each spatial axis.

Keras' forms of ``cropping`` (keras/src/layers/reshaping/cropping{1,2,3}d.py): ``Cropping1D``
takes one int or a (before, after) pair, default ``(1, 1)``; ``Cropping2D`` and ``Cropping3D``
take one int for every side, one int per axis (symmetric) or a (before, after) pair per axis,
defaults ``((0, 0), (0, 0))`` and ``((1, 1), (1, 1), (1, 1))``. Every amount is >= 0, and
what remains of each axis must hold at least one cell. The receptive-field rule is a
:class:`~cnnlab.models.fields.Shift` by the negative amounts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cnnlab.models.fields import Geometry, Shift
from cnnlab.models.layers.base import (
    Array,
    Layer,
    Shape,
    check_int,
    check_pairs,
    fail,
    fmt,
    register,
    resolve_args,
    spatial_input,
)
from cnnlab.models.layers.conv import CHANNELS_LAST

if TYPE_CHECKING:
    from cnnlab.models.description import LayerInfo

Pairs = tuple[tuple[int, int], ...]

# Keras' default ``cropping`` per rank (each class's __init__ signature)
DEFAULTS: dict[int, Any] = {1: (1, 1), 2: ((0, 0), (0, 0)), 3: ((1, 1), (1, 1), (1, 1))}


def crop_slices(cropping: Pairs) -> tuple[slice, ...]:
    """One slice per spatial axis: ``before`` cells off the start, ``after`` off the end."""
    return tuple(slice(a, -b if b else None) for a, b in cropping)


class CropModule(nn.Module):
    """Channels-first (N, C, *spatial): the spatial axes cropped."""

    def __init__(self, cropping: Pairs) -> None:
        super().__init__()
        self.cropping = cropping

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[(slice(None), slice(None), *crop_slices(self.cropping))]

    def extra_repr(self) -> str:
        return f"cropping={self.cropping}"


@register
@dataclass(frozen=True, kw_only=True)
class Cropping(Layer):
    """``Cropping{rank}D``: ``cropping`` holds the (before, after) cells cut per spatial axis."""

    rank: int
    cropping: Pairs

    KERAS_NAMES = {f"Cropping{r}D": {"rank": r} for r in (1, 2, 3)}
    ARGS = {"cropping": DEFAULTS[2]}  # the default depends on the rank: see parse()
    POSITIONAL = ("cropping",)
    KERAS_FIXED = CHANNELS_LAST

    @classmethod
    def parse(cls, class_name: str, args: Mapping[str, Any], name: str, where: str) -> Cropping:
        rank = cls.KERAS_NAMES[class_name]["rank"]
        a = resolve_args(where, {"cropping": DEFAULTS[rank]}, args)
        return cls.build(name, {"rank": rank}, a, where)

    @classmethod
    def build(cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str) -> Cropping:
        rank, value = fixed["rank"], a["cropping"]
        if rank > 1:
            return cls(name=name, rank=rank, cropping=check_pairs(where, "cropping", value, rank))
        # Cropping1D: Keras' standardize_tuple(cropping, 2), an int or exactly two ints
        if not isinstance(value, list | tuple):
            value = (value, value)
        if len(value) != 2 or any(isinstance(v, list | tuple) for v in value):
            raise fail(where, f"cropping needs one int or (before, after), got {value!r:.40}")
        before, after = (check_int(where, "cropping", v, 0) for v in value)
        return cls(name=name, rank=rank, cropping=((before, after),))

    def config(self) -> dict[str, Any]:
        pairs = [list(p) for p in self.cropping]
        return {"cropping": pairs[0] if self.rank == 1 else pairs}  # 1-D: flat, as Keras'

    def output_shape(self, shapes: Sequence[Shape], where: str) -> Shape:
        shape = shapes[0]
        spatial_input(where, shape, self.rank)
        out = []
        for axis, (n, (a, b)) in enumerate(zip(shape[:-1], self.cropping, strict=True), 1):
            if a + b >= n:
                raise fail(
                    where,
                    f"cropping ({a}, {b}) leaves nothing of spatial axis {axis} "
                    f"(size {n}, input {fmt(shape)})",
                )
            out.append(n - a - b)
        return (*out, shape[-1])

    def module(self, info: LayerInfo) -> nn.Module:
        return CropModule(self.cropping)

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        return xs[0][(slice(None), *crop_slices(self.cropping), slice(None))]  # (N, *S, C)

    def geometry(self, info: LayerInfo) -> Geometry:
        return Shift(tuple((-a, -b) for a, b in self.cropping))

"""``Reshape`` and ``Permute``: values moved to other positions, as Keras moves them.

Both act on the channels-last shape without the batch axis, as Keras' layers do
(keras/src/layers/reshaping/reshape.py, permute.py): ``Reshape(target_shape)`` reads the
values in row-major (spatial..., channels) order into ``target_shape`` (one entry may be
-1: the size that keeps the number of values); ``Permute(dims)`` reorders the axes, ``dims``
a permutation of 1..rank (Keras counts the batch axis as 0). Their PyTorch modules take
channels-first tensors: they move the channels last, do what Keras does, and move the new
last axis back to position 1 (a flat result stays flat).

A receptive-field rule applies only where nothing moves (the identity) or the result is flat
(then it is Flatten's: every output sees the whole input); elsewhere values change positions
and the layer has none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cnnlab.models.fields import COLLAPSE, POINTWISE, Geometry
from cnnlab.models.layers.base import (
    REQUIRED,
    Array,
    CapabilityError,
    Layer,
    Shape,
    check_int,
    fail,
    fmt,
    register,
)

if TYPE_CHECKING:
    from cnnlab.models.description import LayerInfo

MAX_AXES = 4  # a network's maps: up to 3 spatial axes and the channels


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) -> (N, *spatial, C); a flat (N, F) stays."""
    return x.movedim(1, -1) if x.ndim > 2 else x


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """(N, *spatial, C) -> (N, C, *spatial); a flat (N, F) stays."""
    return x.movedim(-1, 1) if x.ndim > 2 else x


def rearranged(layer: Layer, info: LayerInfo, identity: bool, what: str) -> Geometry:
    """The rule of a layer that moves values: the identity's, Flatten's where the result is
    flat, and none elsewhere (``what``: how it moves them, for the reason)."""
    if identity:
        return POINTWISE
    if len(info.out_shape) == 1:
        return COLLAPSE
    raise CapabilityError(
        layer, "receptive-field rule", f"it moves values to other positions ({what})"
    )


class ReshapeModule(nn.Module):
    """Keras' Reshape on channels-first tensors: ``shape`` is the resolved target."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = channels_last(x).reshape(x.shape[0], *self.shape)  # (N, *target), channels last
        return channels_first(y)

    def extra_repr(self) -> str:
        return f"target_shape={self.shape}"


@register
@dataclass(frozen=True, kw_only=True)
class Reshape(Layer):
    """Keras' ``Reshape``: the channels-last values, in order, in ``target_shape``."""

    target_shape: tuple[int, ...]  # as given: one entry may be -1

    KERAS_NAMES = {"Reshape": {}}
    ARGS = {"target_shape": REQUIRED}
    POSITIONAL = ("target_shape",)

    @classmethod
    def build(cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str) -> Reshape:
        value = a["target_shape"]
        if not isinstance(value, list | tuple):
            value = [value]  # one size: as Keras' ops.reshape reads a bare int
        if not 1 <= len(value) <= MAX_AXES:
            raise fail(where, f"target_shape needs 1 to {MAX_AXES} sizes, got {value!r:.40}")
        shape = tuple(
            -1 if v == -1 and not isinstance(v, bool) else check_int(where, "target_shape", v)
            for v in value
        )
        if shape.count(-1) > 1:
            raise fail(where, f"target_shape may hold one -1 only, got {list(shape)}")
        return cls(name=name, target_shape=shape)

    def resolved(self, in_shape: Shape, where: str) -> Shape:
        """The target shape for an input of ``in_shape`` (its -1 filled in)."""
        n, known = math.prod(in_shape), math.prod(s for s in self.target_shape if s != -1)
        shape = tuple(n // known if s == -1 else s for s in self.target_shape)
        if math.prod(shape) != n:  # Keras: "the total size of the tensor must be unchanged"
            target = "x".join(str(s) for s in self.target_shape)
            raise fail(where, f"cannot reshape {fmt(in_shape)} ({n} values) into {target}")
        return shape

    def output_shape(self, shapes: Sequence[Shape], where: str) -> Shape:
        return self.resolved(shapes[0], where)

    def module(self, info: LayerInfo) -> nn.Module:
        return ReshapeModule(info.out_shape)

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        x = xs[0]  # (N, ...) channels last: Keras' own layout
        return x.reshape(len(x), *self.resolved(x.shape[1:], self.name))

    def geometry(self, info: LayerInfo) -> Geometry:
        shapes = f"{fmt(info.in_shape)} to {fmt(info.out_shape)}"
        return rearranged(self, info, info.out_shape == info.in_shape, shapes)


class PermuteModule(nn.Module):
    """Keras' Permute on channels-first tensors: ``dims`` are Keras' (1-based, batch 0)."""

    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channels_first(channels_last(x).permute(0, *self.dims))

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


@register
@dataclass(frozen=True, kw_only=True)
class Permute(Layer):
    """Keras' ``Permute``: the channels-last axes (batch excluded) reordered by ``dims``."""

    dims: tuple[int, ...]

    KERAS_NAMES = {"Permute": {}}
    ARGS = {"dims": REQUIRED}
    POSITIONAL = ("dims",)

    @classmethod
    def build(cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str) -> Permute:
        value = a["dims"]
        if not isinstance(value, list | tuple) or not 1 <= len(value) <= MAX_AXES:
            raise fail(where, f"dims needs 1 to {MAX_AXES} axes (1-based), got {value!r:.40}")
        dims = tuple(check_int(where, "dims", v) for v in value)
        if sorted(dims) != list(range(1, len(dims) + 1)):
            raise fail(where, f"dims must be a permutation of 1..{len(dims)}, got {list(dims)}")
        return cls(name=name, dims=dims)

    def output_shape(self, shapes: Sequence[Shape], where: str) -> Shape:
        shape = shapes[0]
        if len(shape) != len(self.dims):
            raise fail(
                where,
                f"dims {list(self.dims)} permute {len(self.dims)} axes; the input {fmt(shape)} "
                f"has {len(shape)}",
            )
        return tuple(shape[d - 1] for d in self.dims)

    def module(self, info: LayerInfo) -> nn.Module:
        return PermuteModule(self.dims)

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        return xs[0].transpose(0, *self.dims)  # (N, ...) channels last: Keras' own layout

    def geometry(self, info: LayerInfo) -> Geometry:
        identity = self.dims == tuple(range(1, len(self.dims) + 1))
        return rearranged(self, info, identity, f"dims {', '.join(map(str, self.dims))}")

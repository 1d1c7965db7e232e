"""Merges: ``Add``, ``Subtract``, ``Multiply``, ``Average``, ``Maximum``, ``Minimum``,
``Concatenate``. They take two or more inputs (``Subtract`` exactly two) of one shape and
combine them value by value, as Keras does and in Keras' order (``Average`` sums left to
right, then divides); ``Concatenate`` joins them along ``axis`` (Keras counts the batch axis:
``-1`` is the channels, ``1`` the first spatial axis)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from cnnlab.models.fields import MERGE, Geometry
from cnnlab.models.layers.base import (
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

# name -> (PyTorch, NumPy) of two operands; Average divides the sum afterwards
_OPS: dict[str, tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]]] = {
    "Add": (torch.add, np.add),
    "Subtract": (torch.sub, np.subtract),
    "Multiply": (torch.mul, np.multiply),
    "Average": (torch.add, np.add),
    "Maximum": (torch.maximum, np.maximum),
    "Minimum": (torch.minimum, np.minimum),
}


class MergeModule(nn.Module):
    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = reduce(_OPS[self.op][0], xs)
        return out / len(xs) if self.op == "Average" else out

    def extra_repr(self) -> str:
        return self.op


@register
@dataclass(frozen=True, kw_only=True)
class Merge(Layer):
    """An element-wise merge of two or more inputs of one shape."""

    op: str

    KERAS_NAMES = {op: {"op": op} for op in _OPS}
    N_INPUTS = None

    def output_shape(self, shapes: Sequence[Shape], where: str) -> Shape:
        if self.op == "Subtract" and len(shapes) != 2:
            raise fail(where, f"Subtract takes exactly 2 inputs, got {len(shapes)}")
        if len(set(shapes)) != 1:
            raise fail(where, f"inputs of different shapes: {', '.join(fmt(s) for s in shapes)}")
        return shapes[0]

    def module(self, info: LayerInfo) -> nn.Module:
        return MergeModule(self.op)

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        out = reduce(_OPS[self.op][1], xs)
        return out / out.dtype.type(len(xs)) if self.op == "Average" else out

    def geometry(self, info: LayerInfo) -> Geometry:
        return MERGE


class ConcatModule(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.dim)


@register
@dataclass(frozen=True, kw_only=True)
class Concatenate(Layer):
    """Inputs joined along ``axis`` (Keras' axis: the batch axis is 0, ``-1`` the channels)."""

    axis: int

    KERAS_NAMES = {"Concatenate": {}}
    ARGS = {"axis": -1}
    N_INPUTS = None

    @classmethod
    def build(cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str) -> Concatenate:
        axis = a["axis"]
        if isinstance(axis, int) and not isinstance(axis, bool) and axis < 0:
            return cls(name=name, axis=-check_int(where, "axis", -axis, 1, 5))
        return cls(name=name, axis=check_int(where, "axis", axis, 1, 5))

    def _axis(self, rank: int, where: str) -> int:
        """The axis among the input's axes without the batch axis (0-based)."""
        axis = self.axis - 1 if self.axis > 0 else rank + self.axis
        if not 0 <= axis < rank:
            raise fail(where, f"axis {self.axis} is out of range for {rank + 1}-D inputs")
        return axis

    def output_shape(self, shapes: Sequence[Shape], where: str) -> Shape:
        ranks = {len(s) for s in shapes}
        if len(ranks) != 1:
            raise fail(where, f"inputs of different ranks: {', '.join(fmt(s) for s in shapes)}")
        axis = self._axis(ranks.pop(), where)
        rest = {s[:axis] + s[axis + 1 :] for s in shapes}
        if len(rest) != 1:
            raise fail(
                where,
                f"inputs must agree on every axis but axis {self.axis}: "
                f"{', '.join(fmt(s) for s in shapes)}",
            )
        first = shapes[0]
        return (*first[:axis], sum(s[axis] for s in shapes), *first[axis + 1 :])

    def module(self, info: LayerInfo) -> nn.Module:
        rank = len(info.in_shape)
        axis = self._axis(rank, "")
        # channels-last axis -> channels-first: the channels are 1, spatial axis i is i + 2
        return ConcatModule(1 if axis == rank - 1 else axis + 2)

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        return np.concatenate(xs, axis=self._axis(xs[0].ndim - 1, "") + 1)

    def geometry(self, info: LayerInfo) -> Geometry:
        if self._axis(len(info.in_shape), "") != len(info.in_shape) - 1:
            raise CapabilityError(
                self, "receptive-field rule", "it joins maps along a spatial axis"
            )
        return MERGE

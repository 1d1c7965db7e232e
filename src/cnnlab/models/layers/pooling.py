"""Pooling: ``MaxPooling{1,2,3}D``, ``AveragePooling{1,2,3}D`` and their global forms.

Keras' semantics: ``strides`` default to ``pool_size``; with ``same`` padding TensorFlow's
rule places the odd cell after, padded cells never win a maximum and never count in an
average (the average is over the real cells of each window).
"""

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
from cnnlab.models.fields import COLLAPSE, Geometry, Window
from cnnlab.models.layers.base import (
    Array,
    Layer,
    Shape,
    check_choice,
    check_tuple,
    fmt,
    register,
    spatial_input,
    window_output,
)
from cnnlab.models.layers.conv import CHANNELS_LAST, PADDINGS, per_axis

if TYPE_CHECKING:
    from cnnlab.models.description import LayerInfo

KINDS = {"max": "Max", "average": "Average"}


class PoolModule(nn.Module):
    """Max or average pooling, ``valid`` or TensorFlow's ``same`` (padding never counted)."""

    def __init__(self, layer: Pool, pads: list[int] | None) -> None:
        super().__init__()
        self.kind, self.rank = layer.kind, layer.rank
        self.size, self.strides, self.pads = layer.pool_size, layer.strides, pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = getattr(F, f"{'max' if self.kind == 'max' else 'avg'}_pool{self.rank}d")
        if self.pads is None:
            return pool(x, self.size, self.strides)
        if self.kind == "max":
            return pool(F.pad(x, self.pads, value=-torch.inf), self.size, self.strides)
        # average over the real values only: Keras' same-padded average pooling
        total = pool(F.pad(x, self.pads), self.size, self.strides)
        ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
        count = pool(F.pad(ones, self.pads), self.size, self.strides)
        return total / count


@register
@dataclass(frozen=True, kw_only=True)
class Pool(Layer):
    """``MaxPooling{rank}D`` (kind "max") or ``AveragePooling{rank}D`` (kind "average")."""

    rank: int
    kind: str
    pool_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: str

    KERAS_NAMES = {
        f"{word}Pooling{r}D": {"rank": r, "kind": kind}
        for kind, word in KINDS.items()
        for r in (1, 2, 3)
    }
    ARGS = {"pool_size": 2, "strides": None, "padding": "valid"}
    POSITIONAL = ("pool_size", "strides")
    KERAS_FIXED = CHANNELS_LAST
    MAPS = True

    @classmethod
    def build(cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str) -> Pool:
        rank = fixed["rank"]
        size = check_tuple(where, "pool_size", a["pool_size"], rank)
        strides = (
            size if a["strides"] is None else check_tuple(where, "strides", a["strides"], rank)
        )
        padding = check_choice(where, "padding", a["padding"], PADDINGS)
        return cls(name=name, **fixed, pool_size=size, strides=strides, padding=padding)

    @property
    def window(self) -> Window:
        return Window(self.pool_size, self.strides, (1,) * self.rank, self.padding)

    def output_shape(self, shapes: Sequence[Shape], where: str) -> Shape:
        shape = shapes[0]
        spatial_input(where, shape, self.rank)
        w = self.window
        spatial = window_output(
            where, shape[:-1], w.kernel, w.strides, w.dilation, w.padding, "pool_size"
        )
        return (*spatial, shape[-1])

    def module(self, info: LayerInfo) -> nn.Module:
        pairs = self.window.pads(info.in_shape[:-1])
        pads = [v for pair in reversed(pairs) for v in pair]
        return PoolModule(self, pads if self.padding == "same" and any(pads) else None)

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        pool = ops.max_pool if self.kind == "max" else ops.avg_pool
        return np.asarray(pool(xs[0], self.pool_size, strides=self.strides, padding=self.padding))

    def geometry(self, info: LayerInfo) -> Geometry:
        return self.window

    def connections(self, info: LayerInfo) -> tuple[int, int]:
        return math.prod(self.pool_size), 0

    def describe(self) -> str:
        """``MaxPooling2D 3x3 stride 2, same``."""
        head = f"{self.class_name} {fmt(self.pool_size)}"
        if self.strides != self.pool_size:
            head += per_axis("stride", self.strides) or " stride 1"
        return ", ".join([head, *(["same"] if self.padding == "same" else [])])


class GlobalPoolModule(nn.Module):
    """(N, C, *spatial) -> (N, C): the mean or the maximum over every spatial position."""

    def __init__(self, kind: str, rank: int) -> None:
        super().__init__()
        self.kind, self.dims = kind, tuple(range(2, 2 + rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self.dims) if self.kind == "average" else x.amax(dim=self.dims)


@register
@dataclass(frozen=True, kw_only=True)
class GlobalPool(Layer):
    """``GlobalAveragePooling{rank}D`` or ``GlobalMaxPooling{rank}D``: one value per channel."""

    rank: int
    kind: str

    KERAS_NAMES = {
        f"Global{word}Pooling{r}D": {"rank": r, "kind": kind}
        for kind, word in KINDS.items()
        for r in (1, 2, 3)
    }
    KERAS_FIXED = {"keepdims": (False,), **CHANNELS_LAST}

    def output_shape(self, shapes: Sequence[Shape], where: str) -> Shape:
        spatial_input(where, shapes[0], self.rank)
        return (shapes[0][-1],)

    def module(self, info: LayerInfo) -> nn.Module:
        return GlobalPoolModule(self.kind, self.rank)

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        pool = ops.global_max_pool if self.kind == "max" else ops.global_avg_pool
        return np.asarray(pool(xs[0]))  # (N, *spatial, C) -> (N, C)

    def geometry(self, info: LayerInfo) -> Geometry:
        return COLLAPSE

    def connections(self, info: LayerInfo) -> tuple[int, int]:
        return math.prod(info.in_shape[:-1]), 0

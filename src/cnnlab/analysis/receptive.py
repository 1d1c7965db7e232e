"""Receptive fields and parameter counts per layer, from a network description alone.

Per spatial axis, for a layer with kernel ``k``, stride ``s``, dilation ``d`` and leading
padding ``p`` (TensorFlow's ``same`` puts the smaller half before) applied to a map whose
units have a field of ``r`` input pixels, ``j`` input pixels between neighbouring units and
the first unit's field centred at ``c``:

    k_eff = d * (k - 1) + 1
    r_out = r + (k_eff - 1) * j
    j_out = j * s
    c_out = c + ((k_eff - 1) / 2 - p) * j

starting from the input itself: ``r = 1, j = 1, c = 0``. Unit ``i``'s field is then
``[c + i*j - (r-1)/2, c + i*j + (r-1)/2]``; it may reach past the border (into padding).
Pooling is a window like a convolution's; ``ZeroPadding`` moves ``c`` back by ``p * j``.
After ``Flatten`` or global pooling a unit sees the input pixels that some unit of the
last map reaches through real (non-padding) cells: jump 0, one unit; that range is
tracked exactly, per axis (the geometry is separable). Element-wise layers change nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from cnnlab.models import ModelDescription
from cnnlab.models import layers as L
from cnnlab.models.description import LayerInfo
from cnnlab.ops import padding_amounts


@dataclass(frozen=True)
class Axis:
    """Receptive field along one axis, in input pixels."""

    size: int  # extent of one unit's field
    jump: int  # between neighbouring units' fields; 0 for a single (flat) unit
    start: float  # centre of the first unit's field


def step(prev: Axis, kernel: int, stride: int = 1, dilation: int = 1, pad: int = 0) -> Axis:
    """One application of the recurrence: a window layer on units with field ``prev``."""
    if kernel < 1 or stride < 1 or dilation < 1 or pad < 0:
        raise ValueError(f"invalid window: kernel {kernel}, stride {stride}, dilation {dilation}")
    k_eff = dilation * (kernel - 1) + 1
    return Axis(
        prev.size + (k_eff - 1) * prev.jump,
        prev.jump * stride,
        prev.start + ((k_eff - 1) / 2 - pad) * prev.jump,
    )


@dataclass(frozen=True)
class Field:
    """Receptive field of a layer's units, one :class:`Axis` per spatial axis of the input."""

    axes: tuple[Axis, ...]

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(a.size for a in self.axes)

    @property
    def jump(self) -> tuple[int, ...]:
        return tuple(a.jump for a in self.axes)

    def interval(self, index: Sequence[int]) -> list[tuple[float, float]]:
        """(first, last) input pixel of unit ``index``'s field per axis (may pass the border)."""
        return [
            (a.start + i * a.jump - (a.size - 1) / 2, a.start + i * a.jump + (a.size - 1) / 2)
            for a, i in zip(self.axes, index, strict=True)
        ]


def _window(info: LayerInfo) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], str]:
    """(kernel, strides, dilation, padding) of a conv or pooling layer."""
    layer = info.layer
    if isinstance(layer, L.Conv):
        return layer.kernel_size, layer.strides, layer.dilation_rate, layer.padding
    assert isinstance(layer, L.Pool)
    return layer.pool_size, layer.strides, (1,) * layer.rank, layer.padding


Reach = list[NDArray[np.bool_]]  # per axis (units, input pixels): which pixels each unit reaches


def _reach_window(
    r: NDArray[np.bool_], k: int, s: int, d: int, pads: tuple[int, int]
) -> NDArray[np.bool_]:
    """Pixels each output unit of a window layer reaches along one axis (padding reaches none)."""
    padded = np.pad(r, (pads, (0, 0)))
    m = (len(padded) - (d * (k - 1) + 1)) // s + 1
    out = np.zeros((m, r.shape[1]), dtype=bool)
    for t in range(k):
        out |= padded[t * d : t * d + (m - 1) * s + 1 : s]
    return out


def _next(field: Field, reach: Reach, info: LayerInfo) -> tuple[Field, Reach]:
    """The field (and reach) of ``info``'s output units, given those of its input's."""
    layer = info.layer
    if isinstance(layer, L.Conv | L.Pool):
        kernel, strides, dilation, padding = _window(info)
        axes, reached = [], []
        per_axis = zip(
            field.axes, reach, info.in_shape[:-1], kernel, strides, dilation, strict=True
        )
        for prev, r, n, k, s, d in per_axis:
            pads = padding_amounts(n, k, stride=s, padding=padding, dilation=d)
            axes.append(step(prev, k, s, d, pads[0]))
            reached.append(_reach_window(r, k, s, d, pads))
        return Field(tuple(axes)), reached
    if isinstance(layer, L.ZeroPadding):
        moved = [
            Axis(a.size, a.jump, a.start - before * a.jump)
            for a, (before, _) in zip(field.axes, layer.padding, strict=True)
        ]
        return Field(tuple(moved)), [
            np.pad(r, (p, (0, 0))) for r, p in zip(reach, layer.padding, strict=True)
        ]
    if isinstance(layer, L.Flatten | L.GlobalPool) and len(info.in_shape) > 1:
        axes = []
        for r in reach:
            seen = np.flatnonzero(r.any(axis=0))  # none: the map reads nothing but padding
            lo, hi = (int(seen[0]), int(seen[-1])) if len(seen) else (0, -1)
            axes.append(Axis(hi - lo + 1, 0, (lo + hi) / 2))
        flat = [np.ones((1, r.shape[1]), dtype=bool) for r in reach]  # no longer a grid
        return Field(tuple(axes)), flat
    return field, reach


def receptive_fields(desc: ModelDescription) -> list[Field]:
    """The field of every description layer's output units, in layer order."""
    field = Field(tuple(Axis(1, 1, 0.0) for _ in range(desc.rank)))
    reach: Reach = [np.eye(n, dtype=bool) for n in desc.input_shape[:-1]]
    out = []
    for info in desc.info:
        field, reach = _next(field, reach, info)
        out.append(field)
    return out


@dataclass(frozen=True)
class Row:
    """One row of the per-layer table of a network."""

    name: str
    kind: str  # the Keras class name
    out_shape: tuple[int, ...]  # channels-last, without the batch axis
    field: Field  # jump 0: a single unit per feature (after flattening or global pooling)
    params: int  # trainable and non-trainable
    dense_params: int  # a fully connected layer from the same input volume to the same output
    fan_in: int  # inputs each output unit is connected to (0: not a weighted sum)
    dense_fan_in: int  # ... in that fully connected layer: the whole input volume
    uses_per_weight: int  # output positions sharing each weight (1 for dense layers, 0: none)


SHOWN = (L.Conv, L.Pool, L.GlobalPool, L.ZeroPadding, L.Flatten, L.Dense, L.BatchNormalization)


def _row(info: LayerInfo, field: Field) -> Row:
    layer, n_in, n_out = info.layer, math.prod(info.in_shape), math.prod(info.out_shape)
    fan_in, uses = 0, 0
    if isinstance(layer, L.Conv):
        fan_in, uses = math.prod(layer.kernel_size) * info.in_shape[-1], n_out // layer.filters
    elif isinstance(layer, L.Dense):
        fan_in, uses = info.in_shape[0], 1
    elif isinstance(layer, L.Pool):
        fan_in = math.prod(layer.pool_size)
    elif isinstance(layer, L.GlobalPool):
        fan_in = math.prod(info.in_shape[:-1])
    weighted = isinstance(layer, L.Conv | L.Dense)
    return Row(
        name=layer.name,
        kind=layer.class_name,
        out_shape=info.out_shape,
        field=field,
        params=info.trainable + info.non_trainable,
        dense_params=n_in * n_out + n_out if weighted else 0,
        fan_in=fan_in,
        dense_fan_in=n_in,
        uses_per_weight=uses,
    )


def layer_table(desc: ModelDescription) -> list[Row]:
    """Receptive field, output shape and parameters of every layer but the element-wise ones."""
    rows = zip(desc.info, receptive_fields(desc), strict=True)
    return [_row(info, field) for info, field in rows if isinstance(info.layer, SHOWN)]


def _x(values: Sequence[int]) -> str:
    return "x".join(str(v) for v in values)


def markdown(rows: Sequence[Row]) -> str:
    """The table as Markdown: receptive field and jump, then parameters against dense."""
    head = (
        "| layer | type | output | receptive field | jump | params | dense params "
        "| inputs per unit (dense) | uses per weight |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        jumps = r.field.jump
        jump = "-" if not any(jumps) else str(jumps[0]) if len(set(jumps)) == 1 else _x(jumps)
        dense = f"{r.dense_params:,}" if r.dense_params else "-"
        fan = f"{r.fan_in:,} ({r.dense_fan_in:,})" if r.fan_in else "-"
        uses = f"{r.uses_per_weight:,}" if r.uses_per_weight else "-"
        lines.append(
            f"| {r.name} | {r.kind} | {_x(r.out_shape)} | {_x(r.field.size)} | {jump} "
            f"| {r.params:,} | {dense} | {fan} | {uses} |"
        )
    return "\n".join(lines) + "\n"

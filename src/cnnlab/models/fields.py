"""Receptive-field geometry: what each layer does to the input positions its units see.

A layer kind declares its rule as a :data:`Geometry` (:meth:`Layer.geometry`):

- :class:`Window`: a sliding window (convolutions, pooling) with kernel ``k``, stride ``s``,
  dilation ``d`` and padding. Per spatial axis, on units with a field of ``r`` input pixels,
  ``j`` pixels between neighbours and the first unit's field centred at ``c``:

      k_eff = d * (k - 1) + 1
      r_out = r + (k_eff - 1) * j
      j_out = j * s
      c_out = c + ((k_eff - 1) / 2 - p) * j      (p: the leading padding)

- :class:`Shift`: zeros added (ZeroPadding, amounts > 0) or rows cropped (Cropping, < 0)
  before and after, per axis: ``c`` moves by ``-before * j``;
- :data:`POINTWISE`: each output unit reads the input unit at its own position (activations,
  normalisation over channels, dropout ...): nothing changes;
- :data:`MERGE`: several inputs of one shape, unit by unit: the union of their fields;
- :data:`COLLAPSE`: every output reads every position (Flatten, global pooling, Dense): one
  unit per feature that sees the pixels some unit of the input map reaches (jump 0).

Starting from the input itself (``r = 1, j = 1, c = 0``), unit ``i``'s field is
``[c + i*j - (r-1)/2, c + i*j + (r-1)/2]``; it may reach past the border (into padding).
Which input pixels each unit reaches through real (non-padding) cells is tracked exactly, per
axis, as a boolean matrix (:data:`Reach`): the geometry is separable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

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


@dataclass(frozen=True)
class Window:
    """A sliding window: kernel, strides, dilation per spatial axis; padding valid or same."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: str

    def pads(self, spatial: Sequence[int]) -> list[tuple[int, int]]:
        """(before, after) zeros per axis on a map of ``spatial`` sizes (TensorFlow's rule)."""
        return [
            padding_amounts(n, k, stride=s, padding=self.padding, dilation=d)
            for n, k, s, d in zip(spatial, self.kernel, self.strides, self.dilation, strict=True)
        ]


@dataclass(frozen=True)
class Shift:
    """Zeros added (> 0) or cells cropped (< 0), (before, after) per spatial axis."""

    amounts: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class _Kind:
    name: str


POINTWISE = _Kind("pointwise")
MERGE = _Kind("merge")
COLLAPSE = _Kind("collapse")
Geometry = Window | Shift | _Kind

Reach = list[NDArray[np.bool_]]  # per axis (units, input pixels): which pixels each unit reaches


@dataclass(frozen=True)
class State:
    """The field of a map's units and the exact pixels each reaches."""

    field: Field
    reach: Reach

    @property
    def flat(self) -> bool:
        return bool(self.field.axes) and all(a.jump == 0 for a in self.field.axes)


def input_state(spatial: Sequence[int]) -> State:
    """The network's input: every unit sees its own pixel."""
    return State(
        Field(tuple(Axis(1, 1, 0.0) for _ in spatial)),
        [np.eye(n, dtype=bool) for n in spatial],
    )


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


def _collapse_reach(reach: Reach) -> State:
    """One unit per feature, seeing the pixels that some unit of the map reaches."""
    axes = []
    for r in reach:
        seen = np.flatnonzero(r.any(axis=0))  # none: the map reads nothing but padding
        lo, hi = (int(seen[0]), int(seen[-1])) if len(seen) else (0, -1)
        axes.append(Axis(hi - lo + 1, 0, (lo + hi) / 2))
    flat: Reach = [np.asarray(r.any(axis=0, keepdims=True)) for r in reach]
    return State(Field(tuple(axes)), flat)


def _collapse(state: State) -> State:
    return state if state.flat else _collapse_reach(state.reach)


def _merge(states: Sequence[State]) -> State | str:
    """The union of several maps' fields; a reason string where it has no single rule."""
    reach = [np.logical_or.reduce(rs) for rs in zip(*(s.reach for s in states), strict=True)]
    if all(s.flat for s in states):
        return _collapse_reach(reach)
    if len({s.field.jump for s in states}) != 1:
        jumps = ", ".join("x".join(map(str, s.field.jump)) for s in states)
        return f"its inputs' units lie on different grids (jumps {jumps})"
    axes = []
    for per_input in zip(*(s.field.axes for s in states), strict=True):
        lo = min(a.start - (a.size - 1) / 2 for a in per_input)
        hi = max(a.start + (a.size - 1) / 2 for a in per_input)
        axes.append(Axis(round(hi - lo) + 1, per_input[0].jump, (lo + hi) / 2))
    return State(Field(tuple(axes)), reach)


def apply(geometry: Geometry, states: Sequence[State], in_shapes: Sequence[Any]) -> State | str:
    """The state after a layer of ``geometry`` on inputs in ``states`` (shapes
    ``in_shapes``, channels last); a reason string where the rule does not apply."""
    state = states[0]
    if geometry is POINTWISE:
        return state
    if geometry is COLLAPSE:
        return _collapse(state)
    if geometry is MERGE:
        return _merge(states)
    if state.flat:
        return "its input is flat already"
    if isinstance(geometry, Window):
        spatial = in_shapes[0][:-1]
        axes, reached = [], []
        per_axis = zip(
            state.field.axes,
            state.reach,
            geometry.pads(spatial),
            geometry.kernel,
            geometry.strides,
            geometry.dilation,
            strict=True,
        )
        for prev, r, pads, k, s, d in per_axis:
            axes.append(step(prev, k, s, d, pads[0]))
            reached.append(_reach_window(r, k, s, d, pads))
        return State(Field(tuple(axes)), reached)
    if isinstance(geometry, Shift):
        moved, reached = [], []
        per_axis = zip(state.field.axes, state.reach, geometry.amounts, strict=True)
        for a, r, (before, after) in per_axis:
            moved.append(Axis(a.size, a.jump, a.start - before * a.jump))
            if before >= 0 and after >= 0:
                reached.append(np.pad(r, ((before, after), (0, 0))))
            else:  # cropping: amounts are <= 0
                reached.append(r[-before : len(r) + after])
        return State(Field(tuple(moved)), reached)
    raise AssertionError(f"unknown geometry {geometry!r}")

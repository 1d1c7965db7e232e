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
Which input pixels each unit reaches through real (non-padding) cells is tracked per axis (the
geometry is separable) as the first and last such pixel of every unit (:class:`Span`): all a
collapse or a merge needs, in memory linear in the map's length (a units x pixels matrix was
quadratic: 931 GiB for an input 10^6 long).
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

_EMPTY = np.iinfo(np.int64).max  # a unit's first pixel where it reaches none (padding only)


@dataclass(frozen=True)
class Span:
    """Per unit of one axis, the first and last input pixel it reaches (``lo > hi``: none)."""

    lo: NDArray[np.int64]
    hi: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.lo)

    def padded(self, before: int, after: int) -> Span:
        """Units of padding (reaching nothing) added before and after."""
        return Span(
            np.pad(self.lo, (before, after), constant_values=_EMPTY),
            np.pad(self.hi, (before, after), constant_values=-1),
        )

    def cropped(self, before: int, after: int) -> Span:
        """``before`` and ``after`` units (both >= 0) removed at the ends."""
        return Span(self.lo[before : len(self) - after], self.hi[before : len(self) - after])


Reach = list[Span]  # per spatial axis


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
        [Span(np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64)) for n in spatial],
    )


def _reach_window(r: Span, k: int, s: int, d: int, pads: tuple[int, int]) -> Span:
    """Pixels each output unit of a window layer reaches along one axis (padding reaches none):
    the union over the window's taps, so the least first pixel and the greatest last one."""
    padded = r.padded(*pads)
    m = (len(padded) - (d * (k - 1) + 1)) // s + 1
    lo = np.full(m, _EMPTY, dtype=np.int64)
    hi = np.full(m, -1, dtype=np.int64)
    for t in range(k):
        np.minimum(lo, padded.lo[t * d : t * d + (m - 1) * s + 1 : s], out=lo)
        np.maximum(hi, padded.hi[t * d : t * d + (m - 1) * s + 1 : s], out=hi)
    return Span(lo, hi)


def _collapse_reach(reach: Reach) -> State:
    """One unit per feature, seeing the pixels that some unit of the map reaches."""
    axes, flat = [], []
    for r in reach:
        lo, hi = int(r.lo.min(initial=_EMPTY)), int(r.hi.max(initial=-1))
        if hi < lo:  # none: the map reads nothing but padding
            lo, hi = 0, -1
        axes.append(Axis(hi - lo + 1, 0, (lo + hi) / 2))
        flat.append(Span(np.array([lo if hi >= lo else _EMPTY]), np.array([hi])))
    return State(Field(tuple(axes)), flat)


def _collapse(state: State) -> State:
    return state if state.flat else _collapse_reach(state.reach)


def _merge(states: Sequence[State]) -> State | str:
    """The union of several maps' fields; a reason string where it has no single rule."""
    reach = [
        Span(np.minimum.reduce([r.lo for r in rs]), np.maximum.reduce([r.hi for r in rs]))
        for rs in zip(*(s.reach for s in states), strict=True)
    ]
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
                reached.append(r.padded(before, after))
            else:  # cropping: amounts are <= 0
                reached.append(r.cropped(-before, -after))
        return State(Field(tuple(moved)), reached)
    raise AssertionError(f"unknown geometry {geometry!r}")

"""Equivariance and local invariance per layer: how each feature-map layer's maps react
to a shift of the input, computed with the NumPy engine, for any network of images.

Per feature-map layer (:mod:`cnnlab.analysis.layer_walk`: each convolution and pooling
layer, with the element-wise layers that follow it):

* *unchanged under a 1-pixel shift*: the fraction of units whose value at the same position
  stays the same when the input moves by one pixel (averaged over right, left, down, up).
  A convolution map moves with the input (equivariance), so few of its values stay; a
  max-pooled value stays whenever the window's maximum merely moves inside the window
  (local invariance).
* *relative change under a 1-pixel shift*: ``sum |f(shift x) - f(x)| / sum |f(x)|`` over
  the same units: a graded view of the same question (0 = invariant).
* *equivariant under a shift by the layer's jump J*: the fraction of units where
  ``f(shift_J(x)) == shift_1(f(x))``: shifting the input by the layer's cumulative stride
  (per axis) shifts its map by exactly one unit. Only *clean* units count: those whose
  value reads no padding in any layer (``same`` padding, ``ZeroPadding``) in either map,
  which is exactly where the identity must hold; the zero fill then never enters either.

"Unchanged" / "equal" means ``|a - b| <= rtol * max|f(x)|`` over that layer and batch with
``rtol = 1e-4``: identical windows give identical values up to float rounding, far below it.
Only units that respond count: non-zero (after ReLU) in either of the two maps compared,
with ink (a non-zero pixel) in their receptive field in either image. Units that are off
in both, and the empty background, are equal by construction and would inflate the
fractions; the fraction over all units is kept too (``unchanged_1px_all``). Ink and
padding masks travel through each layer's exact window geometry (strides, dilation,
padding), as a convolution of the mask with a kernel of ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cnnlab import ops
from cnnlab.analysis.layer_walk import MapLayer, feature_map_layers, map_outputs
from cnnlab.engine.numpy_engine import NumpyModel
from cnnlab.errors import CnnlabError
from cnnlab.models import ModelDescription
from cnnlab.models import layers as L
from cnnlab.models.fields import MERGE, POINTWISE, Geometry, Shift, Window

RTOL = 1e-4
ONE_PIXEL = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (dy, dx): right, left, down, up
INVARIANCE_BYTES = 256 << 20  # maps held at once by layer_invariance


def shift_images(x: NDArray[Any], dy: int, dx: int) -> NDArray[Any]:
    """Move the content of x (N, H, W, ...) down by ``dy`` and right by ``dx``; zero fill."""
    out = np.zeros_like(x)
    h, w = x.shape[1], x.shape[2]
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src_y = slice(max(-dy, 0), h - max(dy, 0))
    dst_y = slice(max(dy, 0), h - max(-dy, 0))
    src_x = slice(max(-dx, 0), w - max(dx, 0))
    dst_x = slice(max(dx, 0), w - max(-dx, 0))
    out[:, dst_y, dst_x] = x[:, src_y, src_x]
    return out


@dataclass(frozen=True)
class LayerShift:
    """Shift behaviour of one feature-map layer's maps (see the module docstring)."""

    name: str  # the conv or pooling layer (its maps after the layers that follow it)
    kind: str  # "conv" or "pool"
    what: str  # the layer in words (layer_walk.describe): "Conv2D 3x3, relu"
    jump: list[int]  # cumulative stride of the maps (dy, dx), in input pixels
    unchanged_1px: float  # fraction of responding units unchanged at the same position
    unchanged_1px_all: float  # ... over all units
    relative_change: float  # sum |f(shift x) - f(x)| / sum |f(x)| over responding units
    equivariant: float | None  # fraction of clean responding units (None: there are none)
    # where f(shift_J x) == shift_1 f(x)
    units: int  # responding units counted for unchanged_1px (over the four shifts)
    equivariant_units: int  # clean responding units counted for equivariant (both axes)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


Maps = dict[str, NDArray[Any]]  # feature-map layer name -> (N, h, w, C) or a (N, h, w) mask


def layer_maps(model: NumpyModel, walk: list[MapLayer], x: NDArray[Any]) -> Maps:
    """The maps of every feature-map layer for images x (N, H, W, C)."""
    return {m.name: out for m, out in map_outputs(walk, model.activations(x))}


def _carry(geometry: Geometry, hs: list[NDArray[Any]], full: bool) -> NDArray[Any] | None:
    """A 0/1 mask (N, *spatial, 1) through one layer's geometry; None once it is no map."""
    h = hs[0]
    if geometry is POINTWISE:
        return h
    if geometry is MERGE:
        return np.minimum.reduce(hs) if full else np.maximum.reduce(hs)
    if isinstance(geometry, Window):
        ones = np.ones((*geometry.kernel, 1, 1))
        counts = ops.conv(
            h, ones, stride=geometry.strides, padding=geometry.padding, dilation=geometry.dilation
        )
        return (counts > math.prod(geometry.kernel) - 0.5 if full else counts > 0.5).astype(
            np.float64
        )
    if isinstance(geometry, Shift):
        pads = [(max(a, 0), max(b, 0)) for a, b in geometry.amounts]
        h = np.pad(h, ((0, 0), *pads, (0, 0)))
        crop = tuple(
            slice(max(-a, 0), n - max(-b, 0))
            for (a, b), n in zip(geometry.amounts, h.shape[1:-1], strict=True)
        )
        return h[(slice(None), *crop)]
    return None  # collapsed: no longer a map


def _masks(desc: ModelDescription, walk: list[MapLayer], mask: NDArray[Any], full: bool) -> Maps:
    """A 0/1 input mask (N, H, W, 1) carried through the window geometry of every layer,
    along every path of the graph.

    Each window counts the mask's ones among its taps (a convolution with a kernel of ones:
    strides, dilation, padding and all). ``full=False``: a unit is on if any tap is (ink in
    its field); ``full=True``: if every tap is, so no padding enters its value anywhere. A
    merge's unit is on if any input's is (``full``: if every input's is).
    """
    wanted, out = {m.output: m.name for m in walk}, {}
    h: dict[str, NDArray[Any] | None] = {L.INPUT: mask.astype(np.float64)}
    for info in desc.info:
        inputs = [h[n] for n in info.inputs]
        if any(x is None for x in inputs):
            h[info.layer.name] = None
        else:
            carried = [x for x in inputs if x is not None]
            h[info.layer.name] = _carry(info.layer.geometry(info), carried, full)
        if info.layer.name in wanted:
            got = h[info.layer.name]
            assert got is not None  # a feature-map layer's output is a map
            out[wanted.pop(info.layer.name)] = got[..., 0] > 0
        if not wanted:
            break
    return out


def _ink(desc: ModelDescription, walk: list[MapLayer], x: NDArray[Any]) -> Maps:
    """Per map, True where the unit's receptive field holds a non-zero input pixel."""
    return _masks(desc, walk, (x != 0).any(axis=-1, keepdims=True), full=False)


def _same(a: NDArray[Any], b: NDArray[Any], scale: float) -> NDArray[np.bool_]:
    return np.abs(a - b) <= RTOL * max(scale, float(np.finfo(np.float32).tiny))


def _counted(a: NDArray[Any], b: NDArray[Any], ink: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Units that count: active (non-zero) in either map, with ink in their field."""
    return ((a != 0) | (b != 0)) & ink[..., None]


def check_images(model: NumpyModel) -> list[MapLayer]:
    """The feature-map layers of a network whose maps are 2-D; CnnlabError otherwise."""
    desc = model.description
    if desc.rank != 2:
        shape = "x".join(map(str, desc.input_shape))
        raise CnnlabError(
            f"shift experiments need a network of images (2-D maps); {desc.name} takes {shape}"
        )
    return feature_map_layers(desc)


def _invariance_chunk(
    model: NumpyModel,
    walk: list[MapLayer],
    clean: Maps,
    x: NDArray[Any],
    scales: dict[str, float] | None,
    sums: dict[str, list[float]],
) -> None:
    """Add one chunk of images' counts to ``sums`` (per layer: same & counted, counted, same,
    all units over the four 1-pixel shifts; sum |f(shift x) - f(x)|, sum |f(x)| over the
    counted units; equal and counted clean units under a shift by the jump). ``scales``:
    each layer's largest |value| over all the images (None: this chunk is all of them)."""
    desc = model.description
    base, ink = layer_maps(model, walk, x), _ink(desc, walk, x)
    if scales is None:
        scales = {name: float(np.abs(a).max()) for name, a in base.items()}
    for dy, dx in ONE_PIXEL:
        xs = shift_images(x, dy, dx)
        shifted, ink_s = layer_maps(model, walk, xs), _ink(desc, walk, xs)
        for name, a in base.items():
            same = _same(shifted[name], a, scales[name])  # (N, h, w, C): one per unit
            seen = _counted(a, shifted[name], ink[name] | ink_s[name])
            c = sums[name]
            c[0] += int((same & seen).sum())
            c[1] += int(seen.sum())
            c[2] += int(same.sum())
            c[3] += same.size
            c[4] += float(np.abs(shifted[name] - a)[seen].sum(dtype=np.float64))
            c[5] += float(np.abs(a)[seen].sum(dtype=np.float64))
    for axis in (0, 1):
        for j in sorted({m.jump[axis] for m in walk}):
            xs = shift_images(x, j, 0) if axis == 0 else shift_images(x, 0, j)
            shifted, ink_s = layer_maps(model, walk, xs), _ink(desc, walk, xs)
            # Unit u of f(shift_J x) against unit u - 1 of f(x), where neither reads padding.
            now = (slice(None),) * (axis + 1) + (slice(1, None),)  # (N, h, w[, C]) axis + 1
            before = (slice(None),) * (axis + 1) + (slice(None, -1),)
            for m in (m for m in walk if m.jump[axis] == j):
                a, b = shifted[m.name][now], base[m.name][before]
                both = clean[m.name][now] & clean[m.name][before]  # (1, h', w')
                seen = _counted(a, b, (ink_s[m.name][now] | ink[m.name][before]) & both)
                sums[m.name][6] += int((_same(a, b, scales[m.name]) & seen).sum())
                sums[m.name][7] += int(seen.sum())


def invariance_chunk(desc: ModelDescription) -> int:
    """Images per chunk of :func:`layer_invariance`: its maps (a few copies of every
    feature-map layer's output) within about ``INVARIANCE_BYTES``."""
    per_image = 8 * sum(math.prod(i.out_shape) for i in desc.info)
    return max(1, INVARIANCE_BYTES // max(3 * per_image, 1))


def layer_invariance(
    model: NumpyModel, x: NDArray[Any], chunk: int | None = None
) -> list[LayerShift]:
    """Equivariance and local invariance of each feature-map layer on images x (N, H, W, C).

    Computed ``chunk`` images at a time (default: :func:`invariance_chunk`); with more than
    one chunk, a first pass finds each layer's largest value, which the tolerance scales by.
    """
    desc, walk = model.description, check_images(model)
    chunk = chunk or invariance_chunk(desc)
    clean = _masks(desc, walk, np.ones((1, *x.shape[1:-1], 1)), full=True)  # (1, h, w)
    scales: dict[str, float] | None = None
    if len(x) > chunk:
        scales = {m.name: 0.0 for m in walk}
        for start in range(0, len(x), chunk):
            for name, a in layer_maps(model, walk, x[start : start + chunk]).items():
                scales[name] = max(scales[name], float(np.abs(a).max(initial=0.0)))
    sums: dict[str, list[float]] = {m.name: [0, 0, 0, 0, 0.0, 0.0, 0, 0] for m in walk}
    for start in range(0, len(x), chunk):
        _invariance_chunk(model, walk, clean, x[start : start + chunk], scales, sums)
    tiny = np.finfo(np.float64).tiny
    out = []
    for m in walk:
        c = sums[m.name]
        out.append(
            LayerShift(
                name=m.name,
                kind=m.kind,
                what=m.what,
                jump=list(m.jump),
                unchanged_1px=c[0] / max(c[1], 1),
                unchanged_1px_all=c[2] / max(c[3], 1),
                relative_change=c[4] / max(c[5], tiny),
                equivariant=c[6] / c[7] if c[7] else None,
                units=int(c[1]),
                equivariant_units=int(c[7]),
            )
        )
    return out

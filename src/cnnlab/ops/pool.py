"""Pooling in NumPy, channels-last (N, *spatial, C), with Keras semantics.

- ``strides`` default to ``pool_size`` (non-overlapping windows).
- ``"valid"``: windows must lie inside the input; the output size floors.
- ``"same"``: output size ``ceil(n / stride)``, padded by TensorFlow's rule (odd cell after),
  and padded cells never count: max pooling pads with ``-inf`` (the smallest integer for
  integer inputs) so it never picks them, average pooling divides by the number of real cells
  in each window, not by the window size.

Pooling makes a feature map locally invariant: moving a peak within its pooling window leaves
the pooled value unchanged.

Implementation: a loop over the few window taps (4 for 2x2), each a strided slice of the whole
batch, combined with ``np.maximum``/``+`` in place: vectorised over batch, positions and
channels, and cheaper than reducing a 6-D strided view.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cnnlab.ops.convolution import float_dtype
from cnnlab.ops.shapes import IntOrTuple, as_tuple, output_shape, padding_per_axis

_POOL_PADDINGS = ("valid", "same")


def _spatial_ndim(x: NDArray[np.generic], what: str) -> int:
    ndim = x.ndim - 2
    if ndim not in (1, 2, 3):
        raise ValueError(
            f"{what} expects channels-last input (N, *spatial, C) with 1-3 spatial axes, "
            f"got {x.ndim} dims {x.shape}"
        )
    return ndim


def _pool_geometry(
    x: NDArray[np.generic], pool_size: IntOrTuple, strides: IntOrTuple | None, padding: str
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[int, int], ...], tuple[int, ...]]:
    """Validated ``(pool, strides, pads, out_spatial)`` for pooling ``x`` (N, *spatial, C)."""
    ndim = _spatial_ndim(x, "pooling")
    pool = as_tuple(pool_size, ndim, "pool_size")
    steps = pool if strides is None else as_tuple(strides, ndim, "strides")
    if not isinstance(padding, str) or padding.lower() not in _POOL_PADDINGS:
        raise ValueError(f"unknown pooling padding {padding!r}: expected one of {_POOL_PADDINGS}")
    spatial = tuple(x.shape[1:-1])
    pads = padding_per_axis(spatial, pool, stride=steps, padding=padding.lower())
    out = output_shape(spatial, pool, stride=steps, padding=pads)
    return pool, steps, pads, out


def _taps(
    xp: NDArray[np.generic],
    pool: tuple[int, ...],
    steps: tuple[int, ...],
    out: tuple[int, ...],
) -> Iterator[NDArray[np.generic]]:
    """For each offset inside the window, the (N, *out, C) view of the cells at that offset."""
    for offset in np.ndindex(*pool):
        index = tuple(
            slice(o, o + (m - 1) * s + 1, s) for o, m, s in zip(offset, out, steps, strict=True)
        )
        yield xp[(slice(None), *index, slice(None))]


def max_pool(
    x: ArrayLike,
    pool_size: IntOrTuple = 2,
    *,
    strides: IntOrTuple | None = None,
    padding: str = "valid",
) -> NDArray[np.generic]:
    """Max over each window: (N, *spatial, C) -> (N, *out_spatial, C), dtype kept.

    Keras ``MaxPooling1D/2D/3D``; padded cells (``"same"``) are never picked.
    """
    x_arr = np.asarray(x)
    pool, steps, pads, out = _pool_geometry(x_arr, pool_size, strides, padding)
    if np.issubdtype(x_arr.dtype, np.floating):
        fill: float | int | bool = -np.inf
    elif np.issubdtype(x_arr.dtype, np.integer):
        fill = int(np.iinfo(x_arr.dtype).min)
    elif x_arr.dtype == np.bool_:
        fill = False
    else:
        raise ValueError(f"max_pool needs a real numeric input, got dtype {x_arr.dtype}")
    xp = (
        np.pad(x_arr, ((0, 0), *pads, (0, 0)), constant_values=fill)
        if any(map(any, pads))
        else x_arr
    )
    taps = _taps(xp, pool, steps, out)
    result = np.array(next(taps))  # (N, *out, C): a copy of the first tap, then max in place
    for tap in taps:
        np.maximum(result, tap, out=result)
    return result


def _real_cells(
    spatial: tuple[int, ...],
    pool: tuple[int, ...],
    steps: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    out: tuple[int, ...],
) -> NDArray[np.int64]:
    """Number of input (non-padding) cells in each window, shape (1, *out, 1).

    Axes are independent, so the count is the product of per-axis counts: a window starting at
    ``o * stride - before`` covers ``[max(start, 0), min(start + pool, n))``.
    """
    counts = np.ones((1, *out, 1), dtype=np.int64)
    for axis, (n, p, s, (before, _), m) in enumerate(
        zip(spatial, pool, steps, pads, out, strict=True)
    ):
        start = np.arange(m) * s - before
        per_axis = np.minimum(start + p, n) - np.maximum(start, 0)
        shape = [1] * counts.ndim
        shape[axis + 1] = m
        counts = counts * per_axis.reshape(shape)
    return counts


def avg_pool(
    x: ArrayLike,
    pool_size: IntOrTuple = 2,
    *,
    strides: IntOrTuple | None = None,
    padding: str = "valid",
) -> NDArray[np.floating]:
    """Mean over each window: (N, *spatial, C) -> (N, *out_spatial, C).

    Keras ``AveragePooling1D/2D/3D``: with ``"same"`` each window's sum is divided by the
    number of real cells in it, so border outputs are not dragged towards zero. Floating
    inputs keep their dtype; others give float64.
    """
    x_arr = np.asarray(x)
    pool, steps, pads, out = _pool_geometry(x_arr, pool_size, strides, padding)
    x_arr = x_arr.astype(float_dtype(x_arr), copy=False)
    xp = np.pad(x_arr, ((0, 0), *pads, (0, 0))) if any(map(any, pads)) else x_arr
    taps = _taps(xp, pool, steps, out)
    total = np.array(next(taps))  # (N, *out, C)
    for tap in taps:
        np.add(total, tap, out=total)
    counts = _real_cells(tuple(x_arr.shape[1:-1]), pool, steps, pads, out)
    total /= counts.astype(total.dtype)
    return total


def global_avg_pool(x: ArrayLike) -> NDArray[np.floating]:
    """Mean over all spatial axes: (N, *spatial, C) -> (N, C). Keras ``GlobalAveragePooling``."""
    x_arr = np.asarray(x)
    ndim = _spatial_ndim(x_arr, "global_avg_pool")
    x_arr = x_arr.astype(float_dtype(x_arr), copy=False)
    return x_arr.mean(axis=tuple(range(1, ndim + 1)))


def global_max_pool(x: ArrayLike) -> NDArray[np.generic]:
    """Max over all spatial axes: (N, *spatial, C) -> (N, C). Keras ``GlobalMaxPooling``."""
    x_arr = np.asarray(x)
    ndim = _spatial_ndim(x_arr, "global_max_pool")
    return x_arr.max(axis=tuple(range(1, ndim + 1)))

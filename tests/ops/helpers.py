"""Shared test helpers for cnnlab.ops: one comparison function and independent references."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, DTypeLike, NDArray


def assert_matches(
    actual: object,
    expected: ArrayLike | torch.Tensor,
    *,
    dtype: DTypeLike = np.float64,
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> None:
    """``actual`` is an ndarray of ``expected``'s shape, of ``dtype``, and equal to the float64
    reference ``expected`` within ``rtol``/``atol`` (the tolerances are always explicit)."""
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    reference = np.asarray(expected, dtype=np.float64)
    assert isinstance(actual, np.ndarray), f"expected an ndarray, got {type(actual).__name__}"
    assert actual.shape == reference.shape, f"shape {actual.shape} != expected {reference.shape}"
    assert actual.dtype == np.dtype(dtype), f"dtype {actual.dtype} != expected {np.dtype(dtype)}"
    np.testing.assert_allclose(actual.astype(np.float64), reference, rtol=rtol, atol=atol)


def tf_same_pads(n: int, k: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's documented SAME rule, written out independently of cnnlab.ops.shapes."""
    out = math.ceil(n / stride)
    needed = (out - 1) * stride + (k - 1) * dilation + 1
    total = max(needed - n, 0)
    return total // 2, total - total // 2


def torch_conv(
    x: NDArray[np.float64],
    w: NDArray[np.float64],
    b: NDArray[np.float64] | None,
    *,
    pads: Sequence[tuple[int, int]],
    stride: Sequence[int],
    dilation: Sequence[int],
    groups: int = 1,
) -> NDArray[np.float64]:
    """PyTorch's conv1d/2d/3d on channels-last numpy data, padded explicitly with ``F.pad``.

    x (N, *spatial, C_in) -> (N, C_in, *spatial); w (*k, C_in / groups, C_out) ->
    (C_out, C_in / groups, *k). Symmetric padding goes through conv's own ``padding=``
    argument, asymmetric through ``F.pad`` (which lists the LAST axis first).
    """
    ndim = w.ndim - 2
    xt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))
    wt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(w, (-1, -2), (0, 1))))
    bt = None if b is None else torch.from_numpy(b)
    if all(before == after for before, after in pads):
        padding: tuple[int, ...] = tuple(before for before, _ in pads)
    else:
        xt = F.pad(xt, [p for pair in reversed(pads) for p in pair])
        padding = (0,) * ndim
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[ndim]
    y = fn(
        xt, wt, bt, stride=tuple(stride), padding=padding, dilation=tuple(dilation), groups=groups
    )
    return np.moveaxis(y.numpy(), 1, -1)


def brute_force_pool(
    x: NDArray[np.float64],
    pool: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[tuple[int, int]],
    reduce: str,
) -> NDArray[np.float64]:
    """Pooling by an explicit loop over output windows, ignoring cells outside the input."""
    spatial = x.shape[1:-1]
    out_shape = tuple(
        (n + before + after - p) // s + 1
        for n, p, s, (before, after) in zip(spatial, pool, strides, pads, strict=True)
    )
    out = np.empty((x.shape[0], *out_shape, x.shape[-1]))
    for index in np.ndindex(*out_shape):
        window = tuple(
            slice(max(o * s - before, 0), min(o * s - before + p, n))
            for o, s, (before, _), p, n in zip(index, strides, pads, pool, spatial, strict=True)
        )
        cells = x[(slice(None), *window, slice(None))].reshape(x.shape[0], -1, x.shape[-1])
        out[(slice(None), *index, slice(None))] = (
            cells.max(axis=1) if reduce == "max" else cells.mean(axis=1)
        )
    return out

"""The input pipeline: a split's stored memory is fed as it is, batch by batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data.rows import RowView
from cnnlab.data.scaling import InputScale
from cnnlab.engine.blocks import kernel_inputs
from cnnlab.engine.device import to_tensors
from cnnlab.engine.feed import Feed

CPU = torch.device("cpu")
SHAPES = [(13, 7, 5, 3), (9, 11, 4), (6, 3, 5, 4, 2), (10, 6, 6, 1), (8, 17)]


def stored(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    rng = np.random.default_rng(len(shape) * 100 + shape[-1])
    if dtype is np.uint8:
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return rng.standard_normal(shape).astype(np.float32)


def as_torch_layout(x: np.ndarray) -> np.ndarray:
    """The reference: (N, *spatial, C) -> (N, C, *spatial) by NumPy."""
    return np.moveaxis(x, -1, 1) if x.ndim > 2 else x


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_an_in_memory_split_is_not_copied(shape: tuple[int, ...], dtype: type) -> None:
    x = stored(shape, dtype)
    y = np.arange(shape[0]) % 3
    feed = Feed(x, y, CPU)
    assert feed.x.data_ptr() == x.ctypes.data  # the array's own memory, no copy
    assert feed.x.dtype == torch.from_numpy(x).dtype  # uint8 stays uint8: no float copy
    np.testing.assert_array_equal(feed.x.numpy(), as_torch_layout(x))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_batches_are_the_stored_rows_channels_last(shape: tuple[int, ...], dtype: type) -> None:
    x = stored(shape, dtype)
    y = np.arange(shape[0]) % 3
    feed = Feed(x, y, CPU)
    order = torch.randperm(shape[0], generator=torch.Generator().manual_seed(0))
    seen = []
    for xb, yb, denom in feed.batches(order, 4):
        idx = order[len(seen) * 4 : len(seen) * 4 + len(yb)].numpy()
        np.testing.assert_array_equal(xb.numpy(), as_torch_layout(x[idx]))
        np.testing.assert_array_equal(yb.numpy(), y[idx])
        assert denom == len(idx)
        # the memory is (B, *spatial, C): moving the channels last again is a view
        assert xb.movedim(1, -1).is_contiguous()
        seen.append(idx)
    assert sum(len(i) for i in seen) == shape[0]


def test_the_kernels_read_a_batch_without_a_transpose() -> None:
    x = stored((12, 9, 7, 3), np.uint8)
    feed = Feed(x, np.zeros(12, dtype=np.int64), CPU)
    xb, _, _ = next(feed.batches(torch.arange(12), 5))
    k = kernel_inputs(xb, InputScale(255.0, "the chapter's /255"))
    assert k.shape == (5, 9, 7, 3) and k.dtype == torch.float32
    np.testing.assert_array_equal(k.numpy(), x[:5].astype(np.float32) / np.float32(255.0))
    # channels-last already, so no copy beyond the uint8 -> float32 conversion
    assert k.is_contiguous()


@pytest.mark.parametrize("shape", [(13, 7, 5, 3), (9, 11, 4)])
def test_rows_read_from_the_disk_match_the_in_memory_batches(
    tmp_path: Path, shape: tuple[int, ...]
) -> None:
    x = stored(shape, np.uint8)
    y = np.arange(shape[0]) % 2
    path = tmp_path / "rows.npy"
    np.save(path, x)
    lazy, eager = Feed(RowView(path), y, CPU), Feed(x, y, CPU)
    assert lazy.lazy and not eager.lazy
    order = torch.randperm(shape[0], generator=torch.Generator().manual_seed(1))
    for (a, ya, _), (b, yb, _) in zip(lazy.batches(order, 5), eager.batches(order, 5), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())
        assert a.stride() == b.stride()


def test_to_tensors_is_a_view_of_the_array() -> None:
    x = stored((5, 4, 4, 3), np.float32)
    xt, yt = to_tensors(x, np.arange(5), CPU)
    assert xt.shape == (5, 3, 4, 4) and xt.data_ptr() == x.ctypes.data
    assert xt.is_contiguous(memory_format=torch.channels_last)
    assert yt.dtype == torch.int64

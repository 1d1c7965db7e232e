"""Pooling against torch (valid) and a brute-force loop (same), and local invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.ops import avg_pool, global_avg_pool, global_max_pool, max_pool

from .helpers import assert_matches, brute_force_pool, tf_same_pads

TORCH_POOLS = {
    "max": {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d},
    "avg": {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d},
}
OURS = {"max": max_pool, "avg": avg_pool}

# (pool_size, strides) as passed to us; None strides means "= pool_size" as in Keras.
WINDOWS = {
    1: [(2, None), (3, None), (3, 1), (2, 3), ((4,), (2,))],
    2: [(2, None), (3, None), (3, 2), ((2, 3), None), ((3, 2), (1, 2))],
    3: [(2, None), ((2, 3, 1), None), (3, 2), ((1, 2, 2), (2, 1, 1))],
}
CASES = [(ndim, pool, strides) for ndim, windows in WINDOWS.items() for pool, strides in windows]


def to_tuple(value: int | tuple[int, ...] | None, ndim: int) -> tuple[int, ...] | None:
    if value is None:
        return None
    return value if isinstance(value, tuple) else (value,) * ndim


def random_maps(ndim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spatial = {1: (23,), 2: (11, 12), 3: (7, 8, 9)}[ndim]
    return rng.standard_normal((2, *spatial, 3))


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize(("ndim", "pool", "strides"), CASES)
def test_valid_pooling_matches_torch(
    kind: str, ndim: int, pool: int | tuple[int, ...], strides: int | tuple[int, ...] | None
) -> None:
    x = random_maps(ndim, seed=ndim)
    xt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))  # channels-first
    pool_t = to_tuple(pool, ndim)
    stride_t = to_tuple(strides, ndim) or pool_t  # torch's default stride is also the window
    expected = np.moveaxis(TORCH_POOLS[kind][ndim](xt, pool_t, stride_t).numpy(), 1, -1)
    assert_matches(OURS[kind](x, pool, strides=strides, padding="valid"), expected)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize(("ndim", "pool", "strides"), CASES)
def test_same_pooling_matches_brute_force(
    kind: str, ndim: int, pool: int | tuple[int, ...], strides: int | tuple[int, ...] | None
) -> None:
    x = random_maps(ndim, seed=10 + ndim)
    if kind == "max":
        x = -np.abs(x)  # all negative: a max that picked a padded zero would show
    pool_t = to_tuple(pool, ndim)
    assert pool_t is not None
    stride_t = to_tuple(strides, ndim) or pool_t
    pads = [tf_same_pads(n, p, s) for n, p, s in zip(x.shape[1:-1], pool_t, stride_t, strict=True)]
    result = OURS[kind](x, pool, strides=strides, padding="same")
    assert result.shape[1:-1] == tuple(
        -(-n // s) for n, s in zip(x.shape[1:-1], stride_t, strict=True)
    )
    assert_matches(result, brute_force_pool(x, pool_t, stride_t, pads, kind))


def test_same_average_divides_by_real_cells_only() -> None:
    """A 3x3 map of ones pooled 2x2 SAME -> 2x2; border windows hold 2 or 1 real cells."""
    x = np.ones((1, 3, 3, 1))
    assert_matches(avg_pool(x, 2, padding="same"), np.ones((1, 2, 2, 1)), rtol=0, atol=0)
    x[0, 2, 2, 0] = 5.0  # alone in the bottom-right window: averaged with nothing
    assert avg_pool(x, 2, padding="same")[0, 1, 1, 0] == 5.0
    assert max_pool(-x, 2, padding="same")[0, 1, 1, 0] == -5.0  # not the padded -inf or 0


def test_float32_and_integer_dtypes() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 6, 4))
    expected_max = brute_force_pool(x, (2, 2), (2, 2), [(0, 0)] * 2, "max")
    expected_avg = brute_force_pool(x, (2, 2), (2, 2), [(0, 0)] * 2, "avg")
    x32 = x.astype(np.float32)
    assert_matches(max_pool(x32), expected_max, dtype=np.float32, rtol=1e-6, atol=1e-6)
    assert_matches(avg_pool(x32), expected_avg, dtype=np.float32, rtol=1e-6, atol=1e-6)
    ints = rng.integers(-100, 100, size=(2, 5, 5, 3))
    as_float = ints.astype(np.float64)
    pads = [(0, 1), (0, 1)]
    assert_matches(
        max_pool(ints, padding="same"),
        brute_force_pool(as_float, (2, 2), (2, 2), pads, "max"),
        dtype=ints.dtype,
        rtol=0,
        atol=0,
    )
    assert_matches(
        avg_pool(ints, padding="same"), brute_force_pool(as_float, (2, 2), (2, 2), pads, "avg")
    )


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_global_pools(ndim: int) -> None:
    x = random_maps(ndim, seed=20)
    axes = tuple(range(1, ndim + 1))
    xt = torch.from_numpy(x)
    assert_matches(global_avg_pool(x), xt.mean(dim=axes))
    assert_matches(global_max_pool(x), xt.amax(dim=axes), rtol=0, atol=0)
    assert global_avg_pool(x.astype(np.float32)).dtype == np.float32


def test_max_pool_is_locally_invariant_to_small_shifts() -> None:
    """A single peak moved by one pixel inside its 2x2 window pools to the same output."""
    x = np.zeros((1, 8, 8, 1))
    x[0, 2, 4, 0] = 1.0  # window (1, 2) covers rows 2-3, columns 4-5
    pooled = max_pool(x)
    expected = np.zeros((1, 4, 4, 1))
    expected[0, 1, 2, 0] = 1.0
    assert_matches(pooled, expected, rtol=0, atol=0)
    for dy, dx in [(0, 1), (1, 0), (1, 1)]:
        moved = np.roll(x, (dy, dx), axis=(1, 2))
        assert_matches(max_pool(moved), pooled, rtol=0, atol=0)
    # Invariance is only local: crossing a window boundary moves the pooled peak too.
    crossed = max_pool(np.roll(x, -1, axis=2))  # column 3 belongs to window column 1
    assert not np.array_equal(crossed, pooled)

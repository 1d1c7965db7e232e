"""Single-channel correlate/convolve against scipy.signal, and translation equivariance."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from cnnlab.ops import convolve, correlate

from .helpers import assert_matches


def random_case(
    ndim: int, seed: int, *, odd_kernel: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A float64 input and a kernel no larger than it, random shapes of rank ``ndim``."""
    rng = np.random.default_rng(seed)
    max_n = {1: 40, 2: 14, 3: 7}[ndim]
    shape = tuple(int(n) for n in rng.integers(4, max_n + 1, size=ndim))
    kernel = [int(rng.integers(1, min(n, 5) + 1)) for n in shape]
    if odd_kernel is not None:
        # Nudge each size to the wanted parity, staying within 1..n.
        kernel = [
            k if (k % 2 == 1) == odd_kernel else (k + 1 if k < n else k - 1)
            for k, n in zip(kernel, shape, strict=True)
        ]
    return rng.standard_normal(shape), rng.standard_normal(tuple(kernel))


CASES = [(ndim, seed) for ndim in (1, 2, 3) for seed in range(6)]


@pytest.mark.parametrize(("ndim", "seed"), CASES)
@pytest.mark.parametrize("mode", ["valid", "full"])
def test_correlate_matches_scipy(ndim: int, seed: int, mode: str) -> None:
    x, k = random_case(ndim, seed)
    assert_matches(
        correlate(x, k, padding=mode), signal.correlate(x, k, mode=mode, method="direct")
    )


@pytest.mark.parametrize(("ndim", "seed"), CASES)
@pytest.mark.parametrize("mode", ["valid", "full"])
def test_convolve_matches_scipy(ndim: int, seed: int, mode: str) -> None:
    x, k = random_case(ndim, seed)
    assert_matches(convolve(x, k, padding=mode), signal.convolve(x, k, mode=mode, method="direct"))


@pytest.mark.parametrize(("ndim", "seed"), CASES)
def test_same_matches_scipy_for_odd_kernels(ndim: int, seed: int) -> None:
    x, k = random_case(ndim, seed, odd_kernel=True)
    assert_matches(convolve(x, k, padding="same"), signal.convolve(x, k, mode="same"))
    assert_matches(correlate(x, k, padding="same"), signal.correlate(x, k, mode="same"))


@pytest.mark.parametrize(("ndim", "seed"), [(1, 0), (2, 1), (2, 2), (3, 3)])
def test_same_for_even_kernels_is_shifted_from_scipy_as_documented(ndim: int, seed: int) -> None:
    """TF rule: the extra zero goes after, so we take full[k//2 : k//2 + n]; scipy centres the
    full output with the extra sample before, full[k//2 - 1 : k//2 - 1 + n]."""
    x, k = random_case(ndim, seed, odd_kernel=False)
    for ours, scipy_fn in ((convolve, signal.convolve), (correlate, signal.correlate)):
        full = scipy_fn(x, k, mode="full")
        ours_window = tuple(
            slice(m // 2, m // 2 + n) for m, n in zip(k.shape, x.shape, strict=True)
        )
        assert_matches(ours(x, k, padding="same"), full[ours_window])
        scipy_window = tuple(
            slice(m // 2 - 1, m // 2 - 1 + n) for m, n in zip(k.shape, x.shape, strict=True)
        )
        assert_matches(scipy_fn(x, k, mode="same"), full[scipy_window])


@pytest.mark.parametrize(("ndim", "seed"), CASES[::2])
@pytest.mark.parametrize("padding", ["valid", "same", "full", 1])
def test_convolve_is_correlate_with_flipped_kernel(
    ndim: int, seed: int, padding: str | int
) -> None:
    x, k = random_case(ndim, seed)
    flipped = k[(slice(None, None, -1),) * ndim]  # reversed along every axis
    expected = correlate(x, flipped, padding=padding, stride=2, dilation=1)
    assert_matches(convolve(x, k, padding=padding, stride=2), expected, rtol=0, atol=0)


def test_convolve_and_correlate_differ_for_an_asymmetric_kernel() -> None:
    x = np.zeros((5, 5))
    x[2, 2] = 1.0  # an impulse: correlate gives the kernel flipped, convolve the kernel itself
    k = np.arange(9.0).reshape(3, 3)  # not symmetric under a 180 degree rotation
    assert_matches(convolve(x, k, padding="same")[1:4, 1:4], k, rtol=0, atol=0)
    assert_matches(correlate(x, k, padding="same")[1:4, 1:4], k[::-1, ::-1], rtol=0, atol=0)
    assert not np.array_equal(convolve(x, k), correlate(x, k))
    symmetric = k + k[::-1, ::-1]
    assert_matches(convolve(x, symmetric), correlate(x, symmetric), rtol=0, atol=0)


def test_stride_and_dilation_match_subsampled_scipy() -> None:
    """Stride subsamples the stride-1 result; dilation is a kernel with zeros between taps."""
    rng = np.random.default_rng(7)
    x, k = rng.standard_normal((17, 15)), rng.standard_normal((3, 2))
    full = signal.correlate(x, k, mode="valid")
    assert_matches(correlate(x, k, stride=(2, 3)), full[::2, ::3])
    dilated = np.zeros((5, 3))
    dilated[::2, ::2] = k
    assert_matches(correlate(x, k, dilation=2), signal.correlate(x, dilated, mode="valid"))


def test_dtypes() -> None:
    rng = np.random.default_rng(3)
    x, k = rng.standard_normal((12, 12)), rng.standard_normal((3, 3))
    expected = signal.correlate(x, k, mode="valid")
    ours32 = correlate(x.astype(np.float32), k.astype(np.float32))
    assert_matches(ours32, expected, dtype=np.float32, rtol=1e-5, atol=1e-5)
    ints = correlate(np.arange(10), np.array([1, 2, 1]))  # ints compute in float64
    assert_matches(
        ints, signal.correlate(np.arange(10.0), [1.0, 2.0, 1.0], mode="valid"), rtol=0, atol=0
    )


@pytest.mark.parametrize("shift", [(1, 0), (0, 2), (3, -2), (-1, -1)])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_translation_equivariance(shift: tuple[int, int], padding: str) -> None:
    """Shifting the input by (dy, dx) shifts the output by (dy, dx), away from the borders.

    Integer-valued data makes every sum exact, so the check is exact equality.
    """
    rng = np.random.default_rng(11)
    dy, dx = shift
    big = rng.integers(-5, 6, size=(40, 40)).astype(np.float64)
    k = rng.integers(-3, 4, size=(3, 4)).astype(
        np.float64
    )  # even width: no symmetry to hide behind
    x = big[10:30, 10:30]
    x_shifted = big[10 - dy : 30 - dy, 10 - dx : 30 - dx]  # x_shifted[i, j] == x[i - dy, j - dx]
    y, y_shifted = correlate(x, k, padding=padding), correlate(x_shifted, k, padding=padding)
    m = 6  # margin wide enough for the shift plus the kernel's reach into padding
    assert_matches(y_shifted[m:-m, m:-m], y[m - dy : -m - dy, m - dx : -m - dx], rtol=0, atol=0)
    # ...and the shift is real: the unshifted outputs differ.
    assert not np.array_equal(y_shifted[m:-m, m:-m], y[m:-m, m:-m])


def test_translation_by_a_stride_multiple_shifts_the_strided_output() -> None:
    rng = np.random.default_rng(12)
    big = rng.integers(-5, 6, size=(40, 40)).astype(np.float64)
    k = rng.integers(-3, 4, size=(3, 3)).astype(np.float64)
    y = correlate(big[10:30, 10:30], k, stride=2)
    y_shifted = correlate(big[6:26, 10:30], k, stride=2)  # content moved down by 4 = 2 strides
    assert_matches(y_shifted[3:-3], y[1:-5], rtol=0, atol=0)

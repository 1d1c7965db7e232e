"""The channels-last depthwise convolution against torch.nn.functional.conv1d/2d/3d with
``groups=C`` (float64), and against single-channel correlations in Keras' channel order."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.ops import correlate, depthwise_conv

from .helpers import assert_matches, torch_conv
from .test_conv import GEOMETRIES, PADDINGS, expected_pads


def torch_depthwise(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None, **geometry: object
) -> np.ndarray:
    """PyTorch's grouped convolution, one group per channel. Keras' kernel (*k, C, M) gives
    output channel ``c * M + m`` the kernel ``w[..., c, m]``: as a grouped kernel
    (*k, 1, C * M) that is a plain reshape, C before M."""
    *k, c, m = w.shape
    grouped = w.reshape(*k, 1, c * m)
    return torch_conv(x, grouped, b, groups=c, **geometry)  # type: ignore[arg-type]


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_depthwise_matches_torch_groups(
    ndim: int, geometry: str, padding: str, with_bias: bool
) -> None:
    seed = [7, ndim, list(GEOMETRIES).index(geometry), PADDINGS.index(padding), int(with_bias)]
    rng = np.random.default_rng(seed)
    parity, stride_spec, dilation_spec = GEOMETRIES[geometry]
    stride = tuple(stride_spec[:ndim]) if isinstance(stride_spec, tuple) else (stride_spec,) * ndim
    dilation = (
        tuple(dilation_spec[:ndim]) if isinstance(dilation_spec, tuple) else (dilation_spec,) * ndim
    )
    choices = {"odd": [1, 3, 5], "even": [2, 4], "mixed": [2, 3, 4]}[parity]
    kernel = tuple(int(rng.choice(choices)) for _ in range(ndim))
    low, high = {1: (12, 24), 2: (8, 13), 3: (8, 10)}[ndim]
    spatial = tuple(int(n) for n in rng.integers(low, high, size=ndim))
    batch, channels, multiplier = (
        int(rng.integers(1, 4)),
        int(rng.choice([1, 3, 5])),
        int(rng.integers(1, 4)),
    )
    x = rng.standard_normal((batch, *spatial, channels))
    w = rng.standard_normal((*kernel, channels, multiplier))
    b = rng.standard_normal(channels * multiplier) if with_bias else None
    arg, pads = expected_pads(padding, spatial, kernel, stride, dilation, rng)

    result = depthwise_conv(x, w, b, stride=stride, padding=arg, dilation=dilation)

    expected = torch_depthwise(x, w, b, pads=pads, stride=stride, dilation=dilation)
    assert_matches(result, expected, rtol=1e-10, atol=1e-12)


def test_keras_channel_order_is_c_times_m_plus_m() -> None:
    """Output channel c * M + m is channel c correlated with w[..., c, m], plus its bias."""
    rng = np.random.default_rng(12)
    x, w, b = (
        rng.standard_normal((2, 7, 6, 3)),
        rng.standard_normal((3, 2, 3, 2)),
        rng.standard_normal(6),
    )
    expected = np.zeros((2, 5, 5, 6))
    for n in range(2):
        for c in range(3):
            for m in range(2):
                expected[n, ..., c * 2 + m] = correlate(x[n, ..., c], w[..., c, m]) + b[c * 2 + m]
    assert_matches(depthwise_conv(x, w, b), expected)


def test_one_channel_is_an_ordinary_convolution_and_channels_never_mix() -> None:
    rng = np.random.default_rng(13)
    x, w = rng.standard_normal((2, 10, 4)), rng.standard_normal((3, 4, 2))
    y = depthwise_conv(x, w, padding="same")
    for c in range(4):  # each channel alone gives the same two output channels
        alone = np.zeros_like(x)
        alone[..., c] = x[..., c]
        got = depthwise_conv(alone, w, padding="same")[..., 2 * c : 2 * c + 2]
        assert_matches(got, y[..., 2 * c : 2 * c + 2])
    one = torch_conv(x[..., :1], w[:, :1, :], None, pads=[(1, 1)], stride=(1,), dilation=(1,))
    assert_matches(y[..., :2], one)


def test_dtypes_layouts_and_an_empty_batch() -> None:
    rng = np.random.default_rng(14)
    x, w = rng.standard_normal((3, 9, 8, 4)), rng.standard_normal((3, 3, 4, 2))
    expected = torch_depthwise(x, w, None, pads=[(0, 0)] * 2, stride=(1, 1), dilation=(1, 1))
    assert_matches(depthwise_conv(np.asfortranarray(x), w), expected)
    assert_matches(depthwise_conv(x.tolist(), w.tolist()), expected)
    assert_matches(
        depthwise_conv(x.astype(np.float32), w), expected, dtype=np.float32, rtol=1e-5, atol=1e-5
    )
    ints = rng.integers(-3, 4, size=x.shape)
    assert_matches(
        depthwise_conv(ints, w),
        torch_depthwise(
            ints.astype(np.float64), w, None, pads=[(0, 0)] * 2, stride=(1, 1), dilation=(1, 1)
        ),
    )
    assert_matches(depthwise_conv(np.zeros((0, 9, 8, 4)), w), np.zeros((0, 7, 6, 8)), atol=0)

"""Independent references for the figure tests: SciPy and PyTorch in float64, no cnnlab.ops."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import scipy.signal
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, NDArray

RTOL, ATOL = 1e-12, 1e-12

# Every figure `cnnlab figures` must write, spelled out here (not read from the registry).
REQUIRED = (
    "correlation_vs_convolution_1d",
    "correlation_vs_convolution_2d",
    "correlation_vs_convolution_3d",
    "sparse_connectivity",
    "padding_valid",
    "padding_same",
    "padding_full",
    "padding_same_even_kernel",
    "padding_same_stride",
    "neurons_feature_maps",
    "parameter_sharing",
    "strides",
    "stride_vs_pooling",
    "dilation",
    "pooling",
    "pooling_invariance",
    "multichannel_filters",
    "multichannel_depth_sum",
    "receptive_field_growth",
)
# Every figure also comes as an animation; these slide a window, one frame per position.
SLIDING = (
    "correlation_vs_convolution_1d",
    "correlation_vs_convolution_2d",
    "correlation_vs_convolution_3d",
    "padding_valid",
    "padding_same",
    "padding_full",
    "padding_same_even_kernel",
    "padding_same_stride",
    "neurons_feature_maps",
    "strides",
    "dilation",
    "pooling",
    "multichannel_filters",
    "multichannel_depth_sum",
)


def close(actual: ArrayLike, expected: ArrayLike | torch.Tensor) -> None:
    """Same shape, equal in float64 within tight tolerances."""
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"shape {a.shape} != reference {e.shape}"
    np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL)


def tf_same(n: int, k: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's documented SAME padding for one axis, written out from its docs."""
    out = math.ceil(n / stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - n, 0)
    return total // 2, total - total // 2


def t(x: ArrayLike) -> torch.Tensor:
    """A float64 tensor."""
    return torch.tensor(np.asarray(x, dtype=np.float64))


def torch_corr2d(
    x: ArrayLike,
    k: ArrayLike,
    *,
    pads: Sequence[tuple[int, int]] = ((0, 0), (0, 0)),
    stride: int = 1,
    dilation: int = 1,
) -> NDArray[np.float64]:
    """Single-channel 2-D cross-correlation by ``torch.nn.functional.conv2d``."""
    (top, bottom), (left, right) = pads
    xt = F.pad(t(x)[None, None], [left, right, top, bottom])
    y = F.conv2d(xt, t(k)[None, None], stride=stride, dilation=dilation)
    return y[0, 0].numpy()


def torch_conv_layer(x: ArrayLike, w: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Channels-last (H, W, C_in) ⋆ (kh, kw, C_in, C_out) + b by conv2d, as (H', W', C_out)."""
    xt = t(x).permute(2, 0, 1)[None]
    wt = t(w).permute(3, 2, 0, 1)
    return F.conv2d(xt, wt, t(b))[0].permute(1, 2, 0).numpy()


def torch_pool(x: ArrayLike, kind: str, size: int = 2) -> NDArray[np.float64]:
    """2-D max or average pooling, stride = size, of one map."""
    fn = F.max_pool2d if kind == "max" else F.avg_pool2d
    return fn(t(x)[None, None], size)[0, 0].numpy()


def jacobian(fn: Callable[[torch.Tensor], torch.Tensor], n: int) -> NDArray[np.float64]:
    """d fn(x) / d x at x = 0 for a linear fn of a length-n vector, by autograd."""
    jac = torch.autograd.functional.jacobian(fn, torch.zeros(n, dtype=torch.float64))
    return np.asarray(jac.numpy())


def receptive_field(
    shape: Sequence[int], layers: int, out_index: Sequence[int], k: int = 3
) -> NDArray[np.bool_]:
    """Input cells that output ``out_index`` of ``layers`` valid k×k layers depends on.

    Autograd through conv2d with all-ones kernels (every tap non-zero), so the non-zero
    gradient marks the receptive field.
    """
    x = torch.zeros((1, 1, *shape), dtype=torch.float64, requires_grad=True)
    y = x
    for _ in range(layers):
        y = F.conv2d(y, torch.ones((1, 1, k, k), dtype=torch.float64))
    y[(0, 0, *out_index)].backward()
    assert x.grad is not None
    return np.asarray(x.grad[0, 0].numpy() != 0)


def scipy_corr(x: ArrayLike, k: ArrayLike, mode: str = "valid") -> NDArray[np.float64]:
    """``scipy.signal.correlate`` in float64."""
    return np.asarray(scipy.signal.correlate(np.asarray(x, float), np.asarray(k, float), mode=mode))


def scipy_conv(x: ArrayLike, k: ArrayLike, mode: str = "valid") -> NDArray[np.float64]:
    """``scipy.signal.convolve`` (the kernel flipped) in float64."""
    return np.asarray(scipy.signal.convolve(np.asarray(x, float), np.asarray(k, float), mode=mode))

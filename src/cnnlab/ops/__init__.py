"""The convolution mechanism in NumPy, channels-last (N, *spatial, C), from first principles.

- :func:`correlate` / :func:`convolve`: single-channel cross-correlation and true convolution.
- :func:`conv`: the batched multi-channel layer CNN libraries call convolution;
  :func:`depthwise_conv`: each channel with kernels of its own (Keras' DepthwiseConv).
- :func:`max_pool`, :func:`avg_pool`, :func:`global_avg_pool`, :func:`global_max_pool`.
- :func:`relu`, :func:`softmax`, :func:`flatten`, :func:`dense`.
- :func:`output_size`, :func:`padding_amounts` and their per-axis forms: the shape arithmetic.

Runtime dependency: NumPy only.
"""

from __future__ import annotations

from cnnlab.ops.convolution import conv, convolve, correlate, depthwise_conv
from cnnlab.ops.nn import dense, flatten, relu, softmax
from cnnlab.ops.pool import avg_pool, global_avg_pool, global_max_pool, max_pool
from cnnlab.ops.shapes import (
    Padding,
    effective_kernel_size,
    output_shape,
    output_size,
    padding_amounts,
    padding_per_axis,
)

__all__ = [
    "Padding",
    "avg_pool",
    "conv",
    "convolve",
    "correlate",
    "dense",
    "depthwise_conv",
    "effective_kernel_size",
    "flatten",
    "global_avg_pool",
    "global_max_pool",
    "max_pool",
    "output_shape",
    "output_size",
    "padding_amounts",
    "padding_per_axis",
    "relu",
    "softmax",
]

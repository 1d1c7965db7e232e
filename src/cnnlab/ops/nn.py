"""The non-convolutional pieces of a CNN forward pass: relu, softmax, flatten, dense.

All keep a floating input's dtype (float32 stays float32) and give float64 for other inputs.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cnnlab.ops.convolution import float_dtype


def relu(x: ArrayLike) -> NDArray[np.floating]:
    """``max(x, 0)`` elementwise."""
    x_arr = np.asarray(x)
    return np.maximum(x_arr.astype(float_dtype(x_arr), copy=False), 0)


def softmax(x: ArrayLike, axis: int = -1) -> NDArray[np.floating]:
    """``exp(x) / sum(exp(x))`` along ``axis``, numerically stable.

    Subtracting the maximum first changes nothing mathematically (the factor ``exp(-max)``
    cancels) but keeps ``exp`` from overflowing for large logits: the largest term becomes 1.
    """
    x_arr = np.asarray(x)
    x_arr = x_arr.astype(float_dtype(x_arr), copy=False)
    e = np.exp(x_arr - x_arr.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def flatten(x: ArrayLike) -> NDArray[np.generic]:
    """(N, *dims) -> (N, prod(dims)) in row-major order.

    On channels-last feature maps this is Keras' ``Flatten`` order (channel fastest);
    PyTorch flattens (N, C, H, W), so weights of a dense layer after a flatten must be permuted
    when moving between the two.
    """
    x_arr = np.asarray(x)
    if x_arr.ndim < 1:
        raise ValueError("flatten needs an input with a batch axis, got a scalar")
    return x_arr.reshape(x_arr.shape[0], -1)


def dense(x: ArrayLike, w: ArrayLike, b: ArrayLike | None = None) -> NDArray[np.floating]:
    """Fully connected layer ``x @ w + b``: x (N, D_in), w (D_in, D_out) as in Keras, b (D_out,).

    (PyTorch's ``nn.Linear`` stores the transpose, (D_out, D_in).)
    """
    x_arr, w_arr = np.asarray(x), np.asarray(w)
    if w_arr.ndim != 2:
        raise ValueError(f"dense kernel must be 2-D (D_in, D_out), got shape {w_arr.shape}")
    if x_arr.ndim < 1 or x_arr.shape[-1] != w_arr.shape[0]:
        raise ValueError(
            f"feature mismatch: input shape {x_arr.shape} has last axis "
            f"{x_arr.shape[-1] if x_arr.ndim else None}, kernel expects D_in={w_arr.shape[0]}"
        )
    dtype = float_dtype(x_arr)
    y = x_arr.astype(dtype, copy=False) @ w_arr.astype(dtype, copy=False)
    if b is not None:
        b_arr = np.asarray(b)
        if b_arr.shape != (w_arr.shape[1],):
            raise ValueError(
                f"bias shape {b_arr.shape} does not match the kernel's D_out: "
                f"expected ({w_arr.shape[1]},)"
            )
        y += b_arr.astype(dtype, copy=False)
    return y

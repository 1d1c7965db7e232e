"""Convolution in NumPy, channels-last: single-channel correlate/convolve and the conv layer.

Two operations are easily confused:

- **cross-correlation** slides the kernel over the input as it is:
  ``y[i] = sum_j x[i * stride + j * dilation] * k[j]`` (after padding ``x``);
- **true convolution** (the mathematician's, ``scipy.signal.convolve``) first flips the kernel
  along every axis: ``y[i] = sum_j x[i - j] * k[j]``.

What CNN libraries (Keras ``Conv2D``, PyTorch ``conv2d``) call "convolution" is
cross-correlation; since the kernel is learned, flipping it changes nothing about what a network
can represent. :func:`conv` therefore cross-correlates. :func:`correlate` and :func:`convolve`
are the single-channel operations, both for 1-D, 2-D and 3-D arrays. :func:`depthwise_conv`
correlates each channel with kernels of its own (Keras' ``DepthwiseConv``), over the same
windows.

Implementation: im2col. A read-only strided view of the padded input gathers every receptive
field as ``(N, *out_spatial, *kernel, C_in)`` without copying; copying a chunk of images of it
into a ``(rows, prod(kernel) * C_in)`` matrix (plus a column of ones for the bias) and one BLAS
matrix product with the kernel reshaped to ``(prod(kernel) * C_in, C_out)`` does all the
multiply-adds. No Python loop runs over output positions, only over chunks of the batch, which
keep the copied patches small enough to stay in cache. On 2 cores this matches or beats
``torch.nn.functional.conv2d`` on the MNIST layer shapes (see ``benchmarks/bench_ops.py``).
A depthwise convolution mixes no channels, so it has no matrix product to hand to BLAS:
it reads the same strided view one kernel tap at a time.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import ArrayLike, NDArray

from cnnlab.ops.shapes import IntOrTuple, Padding, as_tuple, output_size, padding_per_axis

# Bytes of im2col patches per chunk of the batch: large enough for BLAS to run at full speed,
# small enough that the copy is still in L2/L3 cache when the matrix product reads it.
_CHUNK_BYTES = 1 << 21
# Channel runs shorter than this many bytes make the patch-major im2col copy slow (see below).
_MIN_RUN_BYTES = 32


def float_dtype(x: NDArray[np.generic]) -> np.dtype[Any]:
    """The dtype results are computed in: ``x``'s own if floating (float32 stays float32),
    float64 otherwise (ints, bools)."""
    if np.iscomplexobj(x):
        raise ValueError(f"complex input is not supported (dtype {x.dtype})")
    if np.issubdtype(x.dtype, np.floating):
        return x.dtype
    return np.dtype(np.float64)


def _pad(x: NDArray[np.floating], pads: tuple[tuple[int, int], ...]) -> NDArray[np.floating]:
    """Zero-pad the spatial axes of ``x`` (N, *spatial, C); batch and channels are untouched."""
    if not any(before or after for before, after in pads):
        return x  # no copy: the strided view below reads ``x`` directly
    return np.pad(x, ((0, 0), *pads, (0, 0)))


def _windows(
    xp: NDArray[np.floating],
    out_spatial: tuple[int, ...],
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
) -> NDArray[np.floating]:
    """Read-only view (N, *out_spatial, *kernel, C) of padded ``xp`` (N, *padded, C).

    Element ``[n, *o, *j, c]`` is ``xp[n, *(o * stride + j * dilation), c]``: moving one output
    step jumps ``stride`` pixels, moving one tap jumps ``dilation`` pixels. Putting the kernel
    axes before the channel axis makes the flattened patch order ``(*kernel, C_in)``, which is
    exactly the memory order of a channels-last kernel ``(*kernel, C_in, C_out)``.
    """
    step = xp.strides[1:-1]
    shape = (xp.shape[0], *out_spatial, *kernel, xp.shape[-1])
    view_strides = (
        xp.strides[0],
        *(st * s for st, s in zip(step, strides, strict=True)),
        *(st * d for st, d in zip(step, dilations, strict=True)),
        xp.strides[-1],
    )
    return as_strided(xp, shape=shape, strides=view_strides, writeable=False)


def _geometry(
    x: NDArray[np.floating],
    kernel: tuple[int, ...],
    stride: IntOrTuple,
    padding: Padding,
    dilation: IntOrTuple,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[int, int], ...], tuple[int, ...]]:
    """``(strides, dilations, pads, out_spatial)`` of a ``kernel`` slid over ``x``
    (N, *spatial, C); ValueError if a kernel overhangs the padded input."""
    spatial = tuple(x.shape[1:-1])
    ndim = len(kernel)
    strides = as_tuple(stride, ndim, "stride")
    dilations = as_tuple(dilation, ndim, "dilation")
    pads = padding_per_axis(spatial, kernel, stride=strides, padding=padding, dilation=dilations)
    out_spatial = tuple(
        output_size(n, k, stride=s, padding=p, dilation=d)
        for n, k, s, p, d in zip(spatial, kernel, strides, pads, dilations, strict=True)
    )
    return strides, dilations, pads, out_spatial


def _conv_nd(
    x: NDArray[np.floating],
    w: NDArray[np.floating],
    b: NDArray[np.floating] | None,
    stride: IntOrTuple,
    padding: Padding,
    dilation: IntOrTuple,
) -> NDArray[np.floating]:
    """Validated core of :func:`conv`: ``x`` (N, *spatial, C_in), ``w`` (*k, C_in, C_out)."""
    kernel = tuple(w.shape[:-2])
    strides, dilations, pads, out_spatial = _geometry(x, kernel, stride, padding, dilation)
    ndim = len(kernel)
    batch, c_out = x.shape[0], w.shape[-1]
    out = np.empty((batch, *out_spatial, c_out), dtype=x.dtype)  # (N, *out_spatial, C_out)
    if batch == 0:
        return out
    patches = _windows(_pad(x, pads), out_spatial, kernel, strides, dilations)
    # (N, *out_spatial, *kernel, C_in)
    patch_len = math.prod(kernel) * x.shape[-1]
    w_mat = w.reshape(patch_len, c_out)  # (prod(k) * C_in, C_out), a flattened patch's order
    if b is not None:
        # Bias folded into the product: one more patch entry, always 1, weighted by ``b``.
        # Cheaper than a second pass over the output to add it.
        w_mat = np.concatenate([w_mat, b[None, :]])
    rows_per_image = math.prod(out_spatial)
    chunk = max(1, min(batch, _CHUNK_BYTES // (rows_per_image * w_mat.shape[0] * x.itemsize)))
    # One reusable buffer for the copied patches: allocating per chunk costs page faults.
    # Its layout decides how fast the im2col copy is: the copy's innermost run should be
    # contiguous in the input. With many channels, patch-major (one row per output position)
    # copies runs of C_in values; with few (the 28x28x1 first layer), a run of C_in floats is
    # too short and tap-major (one row per kernel tap and channel) copies whole image rows,
    # several times faster. BLAS takes either as is (a transposed operand costs nothing).
    tap_major = x.shape[-1] * x.itemsize < _MIN_RUN_BYTES
    if tap_major:
        buffer = np.empty((w_mat.shape[0], chunk * rows_per_image), dtype=x.dtype)
        target = np.reshape(
            buffer[:patch_len], (*kernel, x.shape[-1], chunk, *out_spatial), copy=False
        )
        source = patches.transpose(*range(ndim + 1, 2 * ndim + 2), *range(ndim + 1))
        batch_axis = ndim + 1  # (*kernel, C_in, N, *out_spatial)
        cols = buffer.T  # (rows, K)
    else:
        cols = np.empty((chunk * rows_per_image, w_mat.shape[0]), dtype=x.dtype)  # (rows, K)
        target = np.reshape(
            cols[:, :patch_len], (chunk, *out_spatial, *kernel, x.shape[-1]), copy=False
        )  # copy=False: a view of the buffer, or an error, never a silent copy
        source, batch_axis = patches, 0
    if b is not None:
        cols[:, patch_len] = 1  # the bias input; never overwritten by the copies below
    before = (slice(None),) * batch_axis
    for start in range(0, batch, chunk):
        stop = min(start + chunk, batch)
        np.copyto(target[(*before, slice(0, stop - start))], source[(*before, slice(start, stop))])
        rows = (stop - start) * rows_per_image
        out_rows = np.reshape(out[start:stop], (rows, c_out), copy=False)  # (rows, C_out)
        np.matmul(cols[:rows], w_mat, out=out_rows)
    return out


def conv(
    x: ArrayLike,
    w: ArrayLike,
    b: ArrayLike | None = None,
    *,
    stride: IntOrTuple = 1,
    padding: Padding = "valid",
    dilation: IntOrTuple = 1,
) -> NDArray[np.floating]:
    """Batched multi-channel convolution layer as CNN libraries define it (cross-correlation).

    Channels-last, like Keras: ``x`` is (N, *spatial, C_in), ``w`` is (*kernel, C_in, C_out),
    ``b`` is (C_out,) or None; the result is (N, *out_spatial, C_out). The spatial rank (1, 2
    or 3) is ``w.ndim - 2``: a 2-D layer takes a batch of (height, width, depth) tensors and a
    4-D kernel (height, width, in-depth, out-depth). Each output channel ``o`` is
    ``sum_c correlate(x[..., c], w[..., c, o]) + b[o]``.

    ``stride`` and ``dilation`` are ints or per-axis tuples; ``padding`` is ``"valid"``,
    ``"same"`` (TensorFlow rule), ``"full"``, an int or per-axis tuple of ints or
    ``(before, after)`` pairs (see :mod:`cnnlab.ops.shapes`). The result has ``x``'s dtype if it
    is floating (``w`` and ``b`` are cast to it), float64 otherwise.
    """
    x_arr, w_arr, b_arr = _operands(x, w, b, depthwise=False)
    return _conv_nd(x_arr, w_arr, b_arr, stride, padding, dilation)


def _operands(
    x: ArrayLike, w: ArrayLike, b: ArrayLike | None, depthwise: bool
) -> tuple[NDArray[np.floating], NDArray[np.floating], NDArray[np.floating] | None]:
    """``x`` (N, *spatial, C), ``w`` (*kernel, C_in, C_out) or, ``depthwise``, (*kernel, C, M),
    and ``b`` checked against one another and cast to the result's dtype."""
    layout, c_in, out = ("C, M", "C", "C*M") if depthwise else ("C_in, C_out", "C_in", "C_out")
    x_arr, w_arr = np.asarray(x), np.asarray(w)
    dtype = float_dtype(x_arr)
    ndim = w_arr.ndim - 2
    if ndim not in (1, 2, 3):
        raise ValueError(
            f"kernel must have shape (*kernel, {layout}) with 1-3 spatial axes, "
            f"got {w_arr.ndim} dims {w_arr.shape}"
        )
    if x_arr.ndim != ndim + 2:
        raise ValueError(
            f"rank mismatch: a {ndim}-D kernel {w_arr.shape} needs input (N, *spatial, C) with "
            f"{ndim + 2} dims, got {x_arr.ndim} dims {x_arr.shape}"
        )
    if x_arr.shape[-1] != w_arr.shape[-2]:
        raise ValueError(
            f"channel mismatch: input has {x_arr.shape[-1]} channels but kernel {w_arr.shape} "
            f"expects {c_in}={w_arr.shape[-2]}"
        )
    c_out = w_arr.shape[-2] * w_arr.shape[-1] if depthwise else w_arr.shape[-1]
    b_arr = None
    if b is not None:
        b_arr = np.asarray(b)
        if b_arr.shape != (c_out,):
            raise ValueError(
                f"bias shape {b_arr.shape} does not match the kernel's {out}: expected ({c_out},)"
            )
        b_arr = b_arr.astype(dtype, copy=False)
    return x_arr.astype(dtype, copy=False), w_arr.astype(dtype, copy=False), b_arr


def depthwise_conv(
    x: ArrayLike,
    w: ArrayLike,
    b: ArrayLike | None = None,
    *,
    stride: IntOrTuple = 1,
    padding: Padding = "valid",
    dilation: IntOrTuple = 1,
) -> NDArray[np.floating]:
    """Depthwise convolution (Keras ``DepthwiseConv1D/2D``): each input channel correlated
    with its own ``M`` kernels, channels never mixed.

    Channels-last: ``x`` is (N, *spatial, C), ``w`` is (*kernel, C, M) (Keras' depthwise
    kernel; ``M`` is the depth multiplier), ``b`` is (C * M,) or None; the result is
    (N, *out_spatial, C * M), output channel ``c * M + m`` being
    ``correlate(x[..., c], w[..., c, m]) + b[c * M + m]``: Keras' (and TensorFlow's) order,
    a grouped convolution with ``groups = C`` in PyTorch's terms. ``stride``, ``padding``
    and ``dilation`` as for :func:`conv`; so is the dtype.
    """
    x_arr, w_arr, b_arr = _operands(x, w, b, depthwise=True)
    kernel = tuple(w_arr.shape[:-2])
    strides, dilations, pads, out_spatial = _geometry(x_arr, kernel, stride, padding, dilation)
    batch, (c, m) = x_arr.shape[0], w_arr.shape[-2:]
    out = np.zeros((batch, *out_spatial, c, m), dtype=x_arr.dtype)  # (N, *out_spatial, C, M)
    if batch:
        patches = _windows(_pad(x_arr, pads), out_spatial, kernel, strides, dilations)
        # (N, *out_spatial, *kernel, C): one multiply-add over the whole batch per kernel tap
        # (few taps), broadcasting each channel against its own M weights
        product = np.empty_like(out)
        for tap in np.ndindex(*kernel):
            np.multiply(patches[(Ellipsis, *tap, slice(None))][..., None], w_arr[tap], out=product)
            out += product
    if b_arr is not None:
        out += b_arr.reshape(c, m)
    return out.reshape(batch, *out_spatial, c * m)  # channel c * M + m, as Keras orders them


def _single_channel(
    x: ArrayLike, k: ArrayLike
) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
    x_arr, k_arr = np.asarray(x), np.asarray(k)
    if k_arr.ndim not in (1, 2, 3):
        raise ValueError(f"kernel must be 1-D, 2-D or 3-D, got {k_arr.ndim} dims {k_arr.shape}")
    if x_arr.ndim != k_arr.ndim:
        raise ValueError(
            f"rank mismatch: input has {x_arr.ndim} dims {x_arr.shape} but kernel has "
            f"{k_arr.ndim} dims {k_arr.shape}; they must match"
        )
    dtype = float_dtype(x_arr)
    return x_arr.astype(dtype, copy=False), k_arr.astype(dtype, copy=False)


def correlate(
    x: ArrayLike,
    k: ArrayLike,
    *,
    stride: IntOrTuple = 1,
    padding: Padding = "valid",
    dilation: IntOrTuple = 1,
) -> NDArray[np.floating]:
    """Single-channel cross-correlation of 1-D, 2-D or 3-D ``x`` with ``k`` (same rank).

    The kernel is NOT flipped: ``y[i] = sum_j xp[i * stride + j * dilation] * k[j]`` where ``xp``
    is ``x`` zero-padded. This is what CNN layers compute; with ``"valid"`` and ``"full"``
    padding it equals ``scipy.signal.correlate`` in the same mode, with ``"same"`` for odd
    kernels too. For even kernels ``"same"`` follows the TensorFlow rule (extra zero after),
    while scipy centres on the full output (extra zero before): the results differ by a
    one-sample shift.
    """
    x_arr, k_arr = _single_channel(x, k)
    y = _conv_nd(x_arr[None, ..., None], k_arr[..., None, None], None, stride, padding, dilation)
    return y[0, ..., 0]


def convolve(
    x: ArrayLike,
    k: ArrayLike,
    *,
    stride: IntOrTuple = 1,
    padding: Padding = "valid",
    dilation: IntOrTuple = 1,
) -> NDArray[np.floating]:
    """Single-channel TRUE convolution: the kernel is flipped along every axis first.

    ``convolve(x, k, ...) == correlate(x, flip(k), ...)`` for every padding spec. It is the
    textbook convolution ``y[i] = sum_j x[i - j] * k[j]``, i.e. ``scipy.signal.convolve``, in
    ``"valid"`` and ``"full"`` modes, and in ``"same"`` mode for odd kernels. For an even kernel
    ``"same"`` keeps the TensorFlow rule (the odd zero goes after the input), whereas scipy's
    ``mode="same"`` takes the centre of the full output with the extra sample before: ours is
    ``scipy_full[k // 2 : k // 2 + n]`` per axis, scipy's is
    ``scipy_full[k // 2 - 1 : k // 2 - 1 + n]``, one sample apart.

    For a symmetric kernel the flip is invisible and convolve equals correlate; for an
    asymmetric one (an edge detector, say) the two differ.
    """
    x_arr, k_arr = _single_channel(x, k)
    return correlate(x_arr, np.flip(k_arr), stride=stride, padding=padding, dilation=dilation)

"""Padding and output-size arithmetic for convolution and pooling, one axis at a time.

Every spatial axis is independent: with input length ``n``, kernel length ``k``, stride ``s``,
dilation ``d`` and zero padding ``(before, after)``, the kernel's effective extent is
``(k - 1) * d + 1`` and the output length is::

    (n + before + after - ((k - 1) * d + 1)) // s + 1

Padding specs (``Padding``):

- ``"valid"``: no padding; windows that would run off the input are dropped (the floor above).
- ``"same"``: the TensorFlow/Keras rule. Output length is ``ceil(n / s)``; the total padding is
  ``max((out - 1) * s + (k - 1) * d + 1 - n, 0)``; ``before = total // 2`` and the odd pixel, if
  any, goes AFTER. This holds for even kernels, strides and dilation too. (PyTorch's
  ``padding="same"`` agrees at stride 1 but refuses strides > 1.)
- ``"full"``: ``(k - 1) * d`` on both sides, so every partial overlap produces an output.
- an ``int`` ``p``: ``(p, p)`` on every axis.
- a tuple with one entry per axis, each an ``int`` ``p`` (meaning ``(p, p)``) or a
  ``(before, after)`` pair. For a single axis a flat pair of ints ``(before, after)`` is also
  accepted, like Keras' ``ZeroPadding1D``.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import TypeAlias

PaddingPair: TypeAlias = tuple[int, int]
AxisPadding: TypeAlias = "str | int | PaddingPair"
Padding: TypeAlias = "str | int | Sequence[int | Sequence[int]]"
IntOrTuple: TypeAlias = "int | Sequence[int]"

PADDING_MODES = ("valid", "same", "full")


def _as_int(value: object, name: str) -> int:
    """``value`` as a Python int; bools and floats are refused (``True`` is not a stride)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _positive(value: object, name: str) -> int:
    number = _as_int(value, name)
    if number < 1:
        raise ValueError(f"{name} must be a positive integer, got {number}")
    return number


def as_tuple(value: IntOrTuple, ndim: int, name: str) -> tuple[int, ...]:
    """A positive int or per-axis sequence of positive ints as a tuple of length ``ndim``.

    Used for kernel/pool sizes, strides and dilations; zero or negative entries raise
    ``ValueError`` naming ``name``.
    """
    if isinstance(value, Sequence) and not isinstance(value, str):
        values = tuple(value)
        if len(values) != ndim:
            raise ValueError(f"{name} needs {ndim} entries (one per spatial axis), got {value!r}")
        return tuple(_positive(v, name) for v in values)
    return (_positive(value, name),) * ndim


def _check_sizes(n: int, k: int, stride: int, dilation: int) -> tuple[int, int, int, int]:
    return (
        _positive(n, "input size"),
        _positive(k, "kernel size"),
        _positive(stride, "stride"),
        _positive(dilation, "dilation"),
    )


def effective_kernel_size(k: int, dilation: int = 1) -> int:
    """Extent covered by a ``k``-tap kernel with holes of ``dilation - 1`` between taps."""
    return (k - 1) * dilation + 1


def _pair(value: object, what: str) -> PaddingPair:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ValueError(f"padding {what} must be an int or a (before, after) pair, got {value!r}")
    before, after = (_as_int(v, "padding") for v in value)
    if before < 0 or after < 0:
        raise ValueError(f"padding must be non-negative, got {value!r}")
    return before, after


def padding_amounts(
    n: int, k: int, *, stride: int = 1, padding: AxisPadding = "valid", dilation: int = 1
) -> PaddingPair:
    """Zeros added ``(before, after)`` one axis of length ``n`` for a ``k``-tap kernel.

    ``padding`` is ``"valid"``, ``"same"``, ``"full"``, an int or a ``(before, after)`` pair.
    For ``"same"`` this is TensorFlow's rule: the odd pixel goes after.

    >>> padding_amounts(28, 3, stride=2, padding="same")
    (0, 1)
    >>> padding_amounts(5, 4, padding="same")  # even kernel: 3 in total, 1 before, 2 after
    (1, 2)
    """
    n, k, stride, dilation = _check_sizes(n, k, stride, dilation)
    eff = effective_kernel_size(k, dilation)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return 0, 0
        if mode == "full":
            return eff - 1, eff - 1
        if mode == "same":
            out = -(-n // stride)  # ceil(n / stride) without floats
            total = max((out - 1) * stride + eff - n, 0)
            return total // 2, total - total // 2
        raise ValueError(f"unknown padding {padding!r}: expected one of {PADDING_MODES}")
    if isinstance(padding, Sequence):
        return _pair(padding, "for one axis")
    amount = _as_int(padding, "padding")
    if amount < 0:
        raise ValueError(f"padding must be non-negative, got {amount}")
    return amount, amount


def output_size(
    n: int, k: int, *, stride: int = 1, padding: AxisPadding = "valid", dilation: int = 1
) -> int:
    """Output length along one axis; ``ValueError`` if the kernel overhangs the padded input.

    >>> output_size(28, 3)  # the chapter's first layer: 28 -> 26
    26
    >>> output_size(28, 3, stride=2, padding="same")
    14
    """
    before, after = padding_amounts(n, k, stride=stride, padding=padding, dilation=dilation)
    padded = n + before + after
    eff = effective_kernel_size(k, dilation)
    if padded < eff:
        raise ValueError(
            f"kernel larger than input: effective kernel size {eff} (k={k}, dilation={dilation}) "
            f"exceeds the padded input size {padded} (n={n}, padding={padding!r})"
        )
    return (padded - eff) // stride + 1


def padding_per_axis(
    spatial: Sequence[int],
    kernel: Sequence[int],
    *,
    stride: IntOrTuple = 1,
    padding: Padding = "valid",
    dilation: IntOrTuple = 1,
) -> tuple[PaddingPair, ...]:
    """``(before, after)`` for every spatial axis; see the module docstring for ``padding``.

    >>> padding_per_axis((28, 28), (3, 3), stride=2, padding="same")
    ((0, 1), (0, 1))
    >>> padding_per_axis((10, 10), (3, 3), padding=(1, (0, 2)))
    ((1, 1), (0, 2))
    """
    ndim = len(spatial)
    if len(kernel) != ndim:
        raise ValueError(f"rank mismatch: input spatial shape {tuple(spatial)} vs kernel {kernel}")
    strides = as_tuple(stride, ndim, "stride")
    dilations = as_tuple(dilation, ndim, "dilation")
    per_axis: Sequence[AxisPadding]
    if isinstance(padding, str):
        per_axis = (padding,) * ndim
    elif isinstance(padding, Sequence):
        entries = tuple(padding)
        flat_pair = ndim == 1 and len(entries) == 2 and not isinstance(entries[0], Sequence)
        if flat_pair:
            per_axis = (_pair(entries, "for one axis"),)
        elif len(entries) != ndim:
            raise ValueError(
                f"padding needs {ndim} entries (one per spatial axis), got {padding!r}"
            )
        else:
            per_axis = tuple(
                _pair(e, f"entry {i}") if isinstance(e, Sequence) else _as_int(e, "padding")
                for i, e in enumerate(entries)
            )
    else:
        per_axis = (_as_int(padding, "padding"),) * ndim
    return tuple(
        padding_amounts(n, k, stride=s, padding=p, dilation=d)
        for n, k, s, p, d in zip(spatial, kernel, strides, per_axis, dilations, strict=True)
    )


def output_shape(
    spatial: Sequence[int],
    kernel: Sequence[int],
    *,
    stride: IntOrTuple = 1,
    padding: Padding = "valid",
    dilation: IntOrTuple = 1,
) -> tuple[int, ...]:
    """Output spatial shape: :func:`output_size` on every axis.

    >>> output_shape((13, 13), (3, 3))  # the chapter's second layer
    (11, 11)
    """
    pads = padding_per_axis(spatial, kernel, stride=stride, padding=padding, dilation=dilation)
    ndim = len(spatial)
    strides = as_tuple(stride, ndim, "stride")
    dilations = as_tuple(dilation, ndim, "dilation")
    return tuple(
        output_size(n, k, stride=s, padding=p, dilation=d)
        for n, k, s, p, d in zip(spatial, kernel, strides, pads, dilations, strict=True)
    )

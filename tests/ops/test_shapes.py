"""Padding and output-size arithmetic: the TensorFlow SAME rule, full, explicit padding."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlab.ops import correlate, output_shape, output_size, padding_amounts, padding_per_axis
from cnnlab.ops import shapes as shapes_module

from .helpers import tf_same_pads

# Known TensorFlow/Keras SAME results, (n, k, stride, dilation) -> (output, (before, after)),
# written out by hand: the odd pixel goes after.
KNOWN_TF_SAME = [
    ((28, 3, 2, 1), (14, (0, 1))),  # MNIST 3x3 stride 2
    ((28, 3, 1, 1), (28, (1, 1))),
    ((5, 4, 1, 1), (5, (1, 2))),  # even kernel: 3 zeros, 1 before, 2 after
    ((7, 2, 2, 1), (4, (0, 1))),
    ((10, 3, 3, 1), (4, (1, 1))),
    ((6, 1, 2, 1), (3, (0, 0))),  # 1x1 stride 2 needs no padding
    ((9, 3, 1, 2), (9, (2, 2))),  # dilation 2: effective kernel 5
    ((8, 4, 1, 3), (8, (4, 5))),  # effective kernel 10
    ((224, 7, 2, 1), (112, (2, 3))),  # ResNet stem in TF
    ((224, 3, 2, 1), (112, (0, 1))),  # MobileNet stride-2 conv in TF
    ((13, 2, 2, 1), (7, (0, 1))),  # 2x2 pooling of an odd map
    ((3, 5, 1, 1), (3, (2, 2))),  # kernel larger than input is fine with SAME
]


@pytest.mark.parametrize(("args", "expected"), KNOWN_TF_SAME)
def test_same_matches_known_tensorflow_results(
    args: tuple[int, int, int, int], expected: tuple[int, tuple[int, int]]
) -> None:
    n, k, s, d = args
    out, pads = expected
    assert padding_amounts(n, k, stride=s, padding="same", dilation=d) == pads
    assert output_size(n, k, stride=s, padding="same", dilation=d) == out
    assert tf_same_pads(n, k, s, d) == pads  # the test's own formula agrees with the table


@pytest.mark.parametrize(
    ("args", "padding", "expected"),
    [
        ((28, 3, 1, 1), "valid", 26),  # the chapter's first conv layer
        ((26, 2, 2, 1), "valid", 13),  # 2x2 max pooling
        ((13, 3, 1, 1), "valid", 11),  # second conv layer
        ((11, 2, 2, 1), "valid", 5),  # floor
        ((5, 3, 1, 1), "full", 7),
        ((5, 3, 2, 1), "full", 4),
        ((5, 3, 1, 2), "full", 9),
        ((5, 3, 1, 1), 1, 5),
        ((5, 3, 1, 1), (0, 2), 5),
        ((5, 3, 2, 1), (2, 0), 3),
        ((10, 3, 1, 4), "valid", 2),  # effective kernel 9
        ((9, 3, 2, 4), "valid", 1),
    ],
)
def test_output_size_known_values(
    args: tuple[int, int, int, int], padding: str | int | tuple[int, int], expected: int
) -> None:
    n, k, s, d = args
    assert output_size(n, k, stride=s, padding=padding, dilation=d) == expected


def test_full_pads_effective_kernel_minus_one_on_both_sides() -> None:
    assert padding_amounts(10, 4, padding="full") == (3, 3)
    assert padding_amounts(10, 4, padding="full", dilation=2) == (6, 6)


def test_padding_is_case_insensitive() -> None:
    assert padding_amounts(28, 3, stride=2, padding="SAME") == (0, 1)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 30),
    k=st.integers(1, 6),
    stride=st.integers(1, 4),
    dilation=st.integers(1, 3),
)
def test_same_rule_properties(n: int, k: int, stride: int, dilation: int) -> None:
    before, after = padding_amounts(n, k, stride=stride, padding="same", dilation=dilation)
    assert (before, after) == tf_same_pads(n, k, stride, dilation)
    assert after - before in (0, 1)  # the odd pixel goes after
    assert output_size(n, k, stride=stride, padding="same", dilation=dilation) == math.ceil(
        n / stride
    )


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 20),
    k=st.integers(1, 5),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 3),
    padding=st.sampled_from(["valid", "same", "full", 0, 2, (1, 0), (0, 3)]),
)
def test_output_size_is_the_size_correlate_produces(
    n: int, k: int, stride: int, dilation: int, padding: str | int | tuple[int, int]
) -> None:
    before, after = padding_amounts(n, k, stride=stride, padding=padding, dilation=dilation)
    if n + before + after < (k - 1) * dilation + 1:
        with pytest.raises(ValueError, match="kernel larger than input"):
            output_size(n, k, stride=stride, padding=padding, dilation=dilation)
        return
    size = output_size(n, k, stride=stride, padding=padding, dilation=dilation)
    y = correlate(np.ones(n), np.ones(k), stride=stride, padding=padding, dilation=dilation)
    assert y.shape == (size,)


def test_per_axis_versions() -> None:
    assert padding_per_axis((28, 28), (3, 3), stride=2, padding="same") == ((0, 1), (0, 1))
    assert padding_per_axis((10, 12), (3, 4), padding=(1, (0, 2))) == ((1, 1), (0, 2))
    assert padding_per_axis((10, 12), (3, 4), padding=((1, 2), (3, 4))) == ((1, 2), (3, 4))
    assert padding_per_axis((10,), (3,), padding=(1, 2)) == ((1, 2),)  # 1-D: (before, after)
    assert padding_per_axis((10, 10, 10), (3, 3, 3), padding=2) == ((2, 2),) * 3
    assert output_shape((28, 28), (3, 3)) == (26, 26)
    assert output_shape((28, 20, 9), (3, 2, 4), stride=(2, 1, 3), padding="same") == (14, 20, 3)
    assert output_shape((9, 9), (3, 3), dilation=(1, 2), padding="full") == (11, 13)


def test_docstring_examples() -> None:
    result = doctest.testmod(shapes_module)
    assert result.attempted > 0 and result.failed == 0

"""Bad arguments raise ValueError with a message naming the problem."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from cnnlab.ops import (
    avg_pool,
    conv,
    convolve,
    correlate,
    dense,
    depthwise_conv,
    global_avg_pool,
    max_pool,
    output_size,
    padding_amounts,
    padding_per_axis,
)

X = np.zeros((2, 8, 8, 3))  # (N, H, W, C_in)
W = np.zeros((3, 3, 3, 4))  # (kh, kw, C_in, C_out)

CASES: list[tuple[str, Callable[[], object], str]] = [
    # rank
    ("conv input rank", lambda: conv(np.zeros((8, 8, 3)), W), "rank mismatch"),
    ("conv kernel rank", lambda: conv(X, np.zeros((3, 3))), "kernel must have shape"),
    (
        "conv 4-D spatial",
        lambda: conv(np.zeros((1, 4, 4, 4, 4, 1)), np.zeros((2, 2, 2, 2, 1, 1))),
        "1-3 spatial",
    ),
    ("correlate rank", lambda: correlate(np.zeros((5, 5)), np.zeros(3)), "rank mismatch"),
    ("convolve rank", lambda: convolve(np.zeros(5), np.zeros((1, 3))), "rank mismatch"),
    ("correlate 4-D", lambda: correlate(np.zeros((3,) * 4), np.zeros((1,) * 4)), "1-D, 2-D or 3-D"),
    # channels and bias
    ("channel mismatch", lambda: conv(X, np.zeros((3, 3, 2, 4))), "channel mismatch"),
    ("bias length", lambda: conv(X, W, np.zeros(3)), r"bias shape \(3,\).*expected \(4,\)"),
    ("bias rank", lambda: conv(X, W, np.zeros((1, 4))), "bias shape"),
    ("dense bias", lambda: dense(np.zeros((2, 5)), np.zeros((5, 3)), np.zeros(5)), "bias shape"),
    ("dense features", lambda: dense(np.zeros((2, 5)), np.zeros((4, 3))), "feature mismatch"),
    ("dense kernel rank", lambda: dense(np.zeros((2, 5)), np.zeros(5)), "must be 2-D"),
    # a depthwise kernel (*k, C, M): C must be the input's channels, the bias C * M long
    ("depthwise rank", lambda: depthwise_conv(X, np.zeros((3, 3))), r"\(\*kernel, C, M\)"),
    ("depthwise input rank", lambda: depthwise_conv(X[0], W), "rank mismatch"),
    ("depthwise channels", lambda: depthwise_conv(X, np.zeros((3, 3, 4, 2))), "expects C=4"),
    (
        "depthwise bias",
        lambda: depthwise_conv(X, np.zeros((3, 3, 3, 2)), np.zeros(2)),
        r"kernel's C\*M: expected \(6,\)",
    ),
    ("depthwise too large", lambda: depthwise_conv(X, np.zeros((9, 1, 3, 1))), "larger than"),
    ("depthwise stride", lambda: depthwise_conv(X, W, stride=0), "stride must be a positive"),
    ("depthwise padding", lambda: depthwise_conv(X, W, padding="causal"), "unknown padding"),
    # kernel larger than a valid input
    ("kernel too large", lambda: conv(X, np.zeros((9, 3, 3, 4))), "kernel larger than input"),
    ("dilated too large", lambda: conv(X, W, dilation=4), "kernel larger than input"),
    (
        "correlate too large",
        lambda: correlate(np.zeros(3), np.zeros(4)),
        "kernel larger than input",
    ),
    ("pool too large", lambda: max_pool(np.zeros((1, 3, 3, 1)), 4), "kernel larger than input"),
    ("size helper", lambda: output_size(3, 5), "kernel larger than input"),
    # padding specs
    ("unknown mode", lambda: conv(X, W, padding="causal"), "unknown padding 'causal'"),
    ("negative int", lambda: conv(X, W, padding=-1), "non-negative"),
    ("negative pair", lambda: conv(X, W, padding=((0, -1), 0)), "non-negative"),
    ("wrong count", lambda: conv(X, W, padding=(1, 1, 1)), "padding needs 2 entries"),
    ("bad pair", lambda: conv(X, W, padding=((1, 2, 3), 0)), r"\(before, after\) pair"),
    ("float padding", lambda: conv(X, W, padding=1.5), "padding must be an integer"),
    ("pool padding", lambda: max_pool(X, padding="full"), "unknown pooling padding 'full'"),
    ("pool int padding", lambda: avg_pool(X, padding=1), "unknown pooling padding"),
    ("helper mode", lambda: padding_amounts(5, 3, padding="middle"), "unknown padding"),
    ("per-axis rank", lambda: padding_per_axis((5, 5), (3,)), "rank mismatch"),
    # stride and dilation
    ("zero stride", lambda: conv(X, W, stride=0), "stride must be a positive integer, got 0"),
    (
        "negative stride",
        lambda: correlate(np.zeros(5), np.zeros(2), stride=-1),
        "stride must be a positive",
    ),
    ("zero stride in tuple", lambda: conv(X, W, stride=(1, 0)), "stride must be a positive"),
    ("stride count", lambda: conv(X, W, stride=(1, 1, 1)), "stride needs 2 entries"),
    ("bool stride", lambda: conv(X, W, stride=True), "stride must be an integer"),
    ("zero dilation", lambda: conv(X, W, dilation=0), "dilation must be a positive integer, got 0"),
    ("negative dilation", lambda: conv(X, W, dilation=(1, -2)), "dilation must be a positive"),
    ("zero pool", lambda: max_pool(X, 0), "pool_size must be a positive"),
    ("zero pool stride", lambda: avg_pool(X, 2, strides=0), "strides must be a positive"),
    ("pool rank", lambda: max_pool(np.zeros((4, 4))), "channels-last input"),
    ("global rank", lambda: global_avg_pool(np.zeros((4, 4))), "1-3 spatial axes"),
    ("empty input", lambda: correlate(np.zeros(0), np.zeros(1)), "input size must be a positive"),
    ("complex", lambda: correlate(np.zeros(4, complex), np.zeros(2)), "complex input"),
]


@pytest.mark.parametrize(("name", "call", "match"), CASES, ids=[c[0] for c in CASES])
def test_bad_arguments_raise_value_error(name: str, call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()

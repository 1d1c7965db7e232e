"""Every figure's drawn numbers against an independent reference (SciPy, PyTorch) and cnnlab.ops.

Each check reads the grids a figure draws (``FigureData.grids``), recomputes them from the
figure's own inputs with SciPy or PyTorch in float64, and with cnnlab.ops as a second opinion.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab import ops
from cnnlab.figures import FIGURES, FigureData, build_figure

from .refs import (
    REQUIRED,
    SLIDING,
    close,
    jacobian,
    receptive_field,
    scipy_conv,
    scipy_corr,
    t,
    tf_same,
    torch_conv_layer,
    torch_corr2d,
    torch_pool,
)

CHECKS: dict[str, Callable[[FigureData], None]] = {}


def check(*names: str) -> Callable[[Callable[[FigureData], None]], Callable[[FigureData], None]]:
    def register(fn: Callable[[FigureData], None]) -> Callable[[FigureData], None]:
        for name in names:
            CHECKS[name] = fn
        return fn

    return register


@check(
    "correlation_vs_convolution_1d",
    "correlation_vs_convolution_2d",
    "correlation_vs_convolution_3d",
)
def _corr_conv(d: FigureData) -> None:
    x, k = d.grids["input"], d.grids["kernel"]
    close(d.grids["correlation"], scipy_corr(x, k))
    close(d.grids["convolution"], scipy_conv(x, k))
    close(d.grids["flipped_kernel"], k[(slice(None, None, -1),) * k.ndim])
    close(d.grids["correlation"], ops.correlate(x, k))
    close(d.grids["convolution"], ops.convolve(x, k))
    assert not np.array_equal(d.grids["correlation"], d.grids["convolution"])  # k asymmetric


@check("sparse_connectivity")
def _sparse(d: FigureData) -> None:
    x, k = d.grids["input_1d"], d.grids["kernel_1d"]
    close(d.grids["output_1d"], scipy_corr(x, k))
    jac = jacobian(lambda v: F.conv1d(v[None, None], t(k)[None, None])[0, 0], len(x))
    close(d.grids["connections"], jac)
    assert (d.grids["connections"] != 0).sum(axis=1).tolist() == [3] * 5  # 3 inputs each
    x2, k2 = d.grids["input_2d"], d.grids["kernel_2d"]
    close(d.grids["output_2d"], torch_corr2d(x2, k2))
    focus = tuple(d.params["receptive_field_2d_output"])
    close(d.grids["receptive_field_2d"], receptive_field(x2.shape, 1, focus))
    close(d.grids["output_2d"], ops.correlate(x2, k2))


@check("parameter_sharing")
def _sharing(d: FigureData) -> None:
    x, k = d.grids["input"], d.grids["kernel"]
    close(d.grids["output"], scipy_corr(x, k))
    jac = jacobian(lambda v: F.conv1d(v[None, None], t(k)[None, None])[0, 0], len(x))
    close(d.grids["connections"], jac)
    taps = jacobian(lambda v: F.conv1d(v[None, None], t([1, 2, 3])[None, None])[0, 0], len(x))
    close(d.grids["taps"], taps)
    for tap in range(3):  # every connection of one colour carries the same weight
        assert set(d.grids["connections"][d.grids["taps"] == tap + 1]) == {k[tap]}
    close(d.grids["output"], ops.correlate(x, k))


def _padded(d: FigureData, padding: str, stride: int, dilation: int) -> None:
    x, k = d.grids["input"], d.grids["kernel"]
    n, kk = x.shape[0], k.shape[0]
    pads = {
        "valid": (0, 0),
        "same": tf_same(n, kk, stride, dilation),
        "full": ((kk - 1) * dilation,) * 2,
    }[padding]
    assert d.params["pads"] == [list(pads)] * 2
    close(d.grids["padded_input"], np.pad(x, (pads, pads)))
    ref = torch_corr2d(x, k, pads=(pads, pads), stride=stride, dilation=dilation)
    close(d.grids["output"], ref)
    if padding == "same":
        assert d.grids["output"].shape == (-(-n // stride),) * 2
    if padding == "full":
        close(d.grids["output"], scipy_corr(x, k, "full"))
    close(d.grids["output"], ops.correlate(x, k, padding=padding, stride=stride, dilation=dilation))


@check("padding_valid", "padding_same", "padding_full", "padding_same_even_kernel")
def _padding(d: FigureData) -> None:
    _padded(d, d.params["padding"], 1, 1)


@check("padding_same_stride")
def _padding_stride(d: FigureData) -> None:
    assert d.params["pads"] == [[0, 1], [0, 1]]  # the odd zero after, per TensorFlow
    _padded(d, "same", 2, 1)


@check("strides")
def _strides(d: FigureData) -> None:
    _padded(d, "valid", 2, 1)


@check("dilation")
def _dilation(d: FigureData) -> None:
    _padded(d, "valid", 1, 2)
    k = d.grids["kernel"]
    holes = np.zeros((5, 5))
    holes[::2, ::2] = k
    close(d.grids["dilated_kernel"], holes)
    close(d.grids["output_via_dilated_kernel"], torch_corr2d(d.grids["input"], holes))


@check("neurons_feature_maps")
def _neurons(d: FigureData) -> None:
    x, w, b = d.grids["input"], d.grids["kernels"], d.grids["bias"]
    pre = torch_conv_layer(x[:, :, None], w, b)
    close(d.grids["pre_activation"], pre)
    close(d.grids["feature_maps"], torch.relu(t(pre)))
    close(d.grids["feature_maps"], ops.relu(ops.conv(x[None, :, :, None], w, b))[0])


@check("stride_vs_pooling")
def _stride_pool(d: FigureData) -> None:
    x, k = d.grids["input"], d.grids["kernel"]
    dense = torch_corr2d(x, k)
    close(d.grids["stride_1_output"], dense)
    close(d.grids["stride_2_output"], torch_corr2d(x, k, stride=2))
    close(d.grids["stride_2_output"], dense[::2, ::2])
    close(d.grids["max_pooled"], torch_pool(dense, "max"))
    close(d.grids["max_pooled"], ops.max_pool(dense[None, :, :, None])[0, :, :, 0])


@check("pooling")
def _pooling(d: FigureData) -> None:
    x = d.grids["input"]
    close(d.grids["max_pooled"], torch_pool(x, "max"))
    close(d.grids["avg_pooled"], torch_pool(x, "avg"))
    close(d.grids["avg_pooled"], ops.avg_pool(x[None, :, :, None])[0, :, :, 0])


@check("pooling_invariance")
def _invariance(d: FigureData) -> None:
    x, shifted = d.grids["input"], d.grids["shifted_input"]
    close(shifted[:, 1:], x[:, :-1])
    close(shifted[:, 0], np.zeros(len(x)))
    for kind in ("max", "avg"):
        close(d.grids[f"{kind}_pooled"], torch_pool(x, kind))
        close(d.grids[f"{kind}_pooled_shifted"], torch_pool(shifted, kind))
    close(d.grids["max_pooled_shifted"], d.grids["max_pooled"])  # the claim of the figure
    assert not np.array_equal(d.grids["avg_pooled_shifted"], d.grids["avg_pooled"])
    close(d.grids["max_pooled"], ops.max_pool(x[None, :, :, None])[0, :, :, 0])


@check("multichannel_filters", "multichannel_depth_sum")
def _multichannel(d: FigureData) -> None:
    x, w, b = d.grids["input"], d.grids["kernel"], d.grids["bias"]
    assert x.ndim == 3 and w.ndim == 4 and w.shape[2] == x.shape[2]
    close(d.grids["output"], torch_conv_layer(x, w, b))
    parts = d.grids["partial_sums"]
    for c in range(x.shape[2]):
        for f in range(w.shape[3]):
            close(parts[:, :, c, f], scipy_corr(x[:, :, c], w[:, :, c, f]))
    close(parts.sum(axis=2) + b, d.grids["output"])  # the sum over input depth
    close(d.grids["output"], ops.conv(x[None], w, b)[0])


@check("receptive_field_growth")
def _growth(d: FigureData) -> None:
    layer = d.grids["input"]
    for i in (1, 2, 3):
        layer = torch_corr2d(layer, d.grids[f"kernel_{i}"])
        close(d.grids[f"layer_{i}"], layer)
    focus = tuple(d.params["focus"])
    for i in (0, 1, 2):
        shape = d.grids[f"receptive_field_{i}"].shape
        close(d.grids[f"receptive_field_{i}"], receptive_field(shape, 3 - i, focus))
    assert d.params["receptive_field"] == [7, 5, 3, 1]
    close(d.grids["layer_1"], ops.correlate(d.grids["input"], d.grids["kernel_1"]))


@pytest.mark.parametrize("name", REQUIRED)
def test_figure_numbers_match_an_independent_reference(name: str) -> None:
    assert name in FIGURES, f"required figure {name!r} is not registered"
    CHECKS[name](build_figure(name))


def test_every_registered_figure_is_checked() -> None:
    assert sorted(FIGURES) == sorted(REQUIRED) == sorted(CHECKS)


WINDOWS = {  # figure: (input panel, kernel grid, output panel) of one slide
    "correlation_vs_convolution_1d": [
        ("in_a", "kernel", "out_a"),
        ("in_b", "flipped_kernel", "out_b"),
    ],
    "correlation_vs_convolution_2d": [
        ("in_a", "kernel", "out_a"),
        ("in_b", "flipped_kernel", "out_b"),
    ],
    **{
        name: [("x", "kernel", "y")]
        for name in SLIDING
        if name.startswith("padding") or name in ("strides", "dilation")
    },
}


@pytest.mark.parametrize("name", sorted(WINDOWS))
def test_each_frame_highlights_the_window_that_gives_the_output(name: str) -> None:
    d = build_figure(name)
    assert len(d.frames) >= 4
    for frame in d.frames[:-1]:
        for in_key, kernel, out_key in WINDOWS[name]:
            window = d.panel(in_key).view(d.grids)[frame.highlights[in_key] > 0]
            out = d.panel(out_key).view(d.grids)[frame.highlights[out_key] > 0]
            assert out.shape == (1,)
            assert window @ d.grids[kernel].ravel() == pytest.approx(out[0], abs=1e-12)


def test_pooling_frames_highlight_the_pooled_window() -> None:
    d = build_figure("pooling")
    for frame in d.frames[:-1]:
        window = d.grids["input"][frame.highlights["x"] > 0]
        assert window.max() == d.grids["max_pooled"][frame.highlights["m"] > 0][0]
        assert window.mean() == d.grids["avg_pooled"][frame.highlights["a"] > 0][0]


@pytest.mark.parametrize("name", REQUIRED)
def test_grids_are_labelled_input_kernel_output(name: str) -> None:
    d = build_figure(name)
    panels = d.panels()
    assert {"input", "output"} <= {p.role for p in panels}
    for p in panels:
        assert p.grid in d.grids
        word = {"input": "input", "kernel": "kernel", "output": "output"}.get(p.role)
        assert word is None or word in p.label, f"{p.role} panel labelled {p.label!r}"

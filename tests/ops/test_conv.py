"""The batched channels-last conv layer against torch.nn.functional.conv1d/2d/3d (float64)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.ops import conv, correlate
from cnnlab.ops import convolution as convolution_module

from .helpers import assert_matches, tf_same_pads, torch_conv

# name -> (kernel parity, stride, dilation); per-axis variety comes from mixing within a case.
GEOMETRIES = {
    "odd": ("odd", 1, 1),
    "even": ("even", 1, 1),
    "odd-stride2": ("odd", 2, 1),
    "even-stride2-dilation2": ("even", 2, 2),
    "mixed-per-axis": ("mixed", (1, 2, 3), (2, 1, 1)),
}
PADDINGS = ["valid", "same", "full", "int", "per-axis-ints", "pairs"]


def expected_pads(
    spec: str,
    spatial: tuple[int, ...],
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    rng: np.random.Generator,
) -> tuple[object, list[tuple[int, int]]]:
    """The padding argument to pass for ``spec`` and the (before, after) pads it must mean,
    derived from the documented rules independently of cnnlab.ops.shapes."""
    ndim = len(spatial)
    if spec == "valid":
        return "valid", [(0, 0)] * ndim
    if spec == "same":
        return "same", [
            tf_same_pads(n, k, s, d)
            for n, k, s, d in zip(spatial, kernel, stride, dilation, strict=True)
        ]
    if spec == "full":
        return "full", [((k - 1) * d, (k - 1) * d) for k, d in zip(kernel, dilation, strict=True)]
    if spec == "int":
        return 2, [(2, 2)] * ndim
    if spec == "per-axis-ints":
        amounts = tuple(int(p) for p in rng.integers(0, 3, size=ndim))
        return amounts, [(p, p) for p in amounts]
    pairs = tuple((int(a), int(b)) for a, b in rng.integers(0, 4, size=(ndim, 2)))
    return pairs, list(pairs)


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_conv_matches_torch(ndim: int, geometry: str, padding: str, with_bias: bool) -> None:
    seed = [ndim, list(GEOMETRIES).index(geometry), PADDINGS.index(padding), int(with_bias)]
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
    batch, c_in, c_out = (
        int(rng.integers(1, 4)),
        int(rng.choice([1, 3, 9])),
        int(rng.integers(1, 6)),
    )
    x = rng.standard_normal((batch, *spatial, c_in))
    w = rng.standard_normal((*kernel, c_in, c_out))
    b = rng.standard_normal(c_out) if with_bias else None
    arg, pads = expected_pads(padding, spatial, kernel, stride, dilation, rng)

    stride_arg = stride if len(set(stride)) > 1 else stride[0]  # ints and tuples both accepted
    result = conv(x, w, b, stride=stride_arg, padding=arg, dilation=dilation)

    expected = torch_conv(x, w, b, pads=pads, stride=stride, dilation=dilation)
    assert_matches(result, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@pytest.mark.parametrize("kernel", [(2, 2), (3, 4), (4, 4)])
@pytest.mark.parametrize("dilation", [1, 2])
def test_same_at_stride_1_matches_torch_same(kernel: tuple[int, int], dilation: int) -> None:
    """PyTorch's own padding="same" (stride 1 only) also puts the odd zero after."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 9, 10, 3)), rng.standard_normal((*kernel, 3, 4))
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    wt = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
    expected = F.conv2d(xt, wt, padding="same", dilation=dilation).numpy().transpose(0, 2, 3, 1)
    assert_matches(conv(x, w, padding="same", dilation=dilation), expected)


def test_known_tensorflow_same_shape_with_stride() -> None:
    """n=28, k=3, stride 2, SAME -> 14, padded (0, 1): bottom/right only."""
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 28, 28, 1)), rng.standard_normal((3, 3, 1, 4))
    result = conv(x, w, stride=2, padding="same")
    assert result.shape == (2, 14, 14, 4)
    expected = torch_conv(x, w, None, pads=[(0, 1), (0, 1)], stride=(2, 2), dilation=(1, 1))
    assert_matches(result, expected)
    # A symmetric (1, 1) padding would give a different (shifted) result of the same shape.
    shifted = torch_conv(x, w, None, pads=[(1, 1), (1, 1)], stride=(2, 2), dilation=(1, 1))
    assert not np.allclose(result, shifted)


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "out_shape"),
    [
        ((5, 28, 28, 1), (3, 3, 1, 16), (5, 26, 26, 16)),  # the chapter's first layer
        ((5, 13, 13, 16), (3, 3, 16, 64), (5, 11, 11, 64)),  # and its second
    ],
)
def test_chapter_layer_shapes_float32(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(8)
    x, w, b = rng.random(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[-1])
    expected = torch_conv(x, w, b, pads=[(0, 0)] * 2, stride=(1, 1), dilation=(1, 1))
    result = conv(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32))
    assert result.shape == out_shape
    assert_matches(result, expected, dtype=np.float32, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("chunk_bytes", "min_run_bytes"), itertools.product([1, 3000], [0, 10**9]))
def test_batch_chunking_and_both_im2col_layouts(
    monkeypatch: pytest.MonkeyPatch, chunk_bytes: int, min_run_bytes: int
) -> None:
    """Chunks of 1 image or several with a partial last chunk; patch-major and tap-major."""
    monkeypatch.setattr(convolution_module, "_CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(convolution_module, "_MIN_RUN_BYTES", min_run_bytes)
    rng = np.random.default_rng(9)
    x, w, b = (
        rng.standard_normal((7, 9, 8, 2)),
        rng.standard_normal((3, 2, 2, 3)),
        rng.standard_normal(3),
    )
    for bias in (b, None):
        expected = torch_conv(x, w, bias, pads=[(1, 1), (0, 1)], stride=(2, 1), dilation=(1, 2))
        result = conv(x, w, bias, stride=(2, 1), padding=(1, (0, 1)), dilation=(1, 2))
        assert_matches(result, expected)


def test_conv_is_a_sum_of_single_channel_correlations() -> None:
    rng = np.random.default_rng(10)
    x, w, b = (
        rng.standard_normal((2, 7, 6, 3)),
        rng.standard_normal((2, 3, 3, 4)),
        rng.standard_normal(4),
    )
    expected = np.stack(
        [
            np.stack(
                [
                    sum(correlate(x[n, ..., c], w[..., c, o]) for c in range(3)) + b[o]
                    for o in range(4)
                ],
                axis=-1,
            )
            for n in range(2)
        ]
    )
    assert_matches(conv(x, w, b), expected)


def test_layout_and_dtype_handling() -> None:
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((3, 10, 9, 4)), rng.standard_normal((3, 3, 4, 2))
    expected = torch_conv(x, w, None, pads=[(0, 0)] * 2, stride=(1, 1), dilation=(1, 1))
    assert_matches(conv(np.asfortranarray(x), np.asfortranarray(w)), expected)  # any memory order
    wide = np.repeat(x, 2, axis=2)  # a strided view of every other column is x again
    assert_matches(conv(wide[:, :, ::2], w), expected)
    assert_matches(conv(x.tolist(), w.tolist()), expected)  # nested lists are fine
    # float32 input: float32 output, even with float64 weights (they are cast to the input's dtype)
    assert_matches(conv(x.astype(np.float32), w), expected, dtype=np.float32, rtol=1e-5, atol=1e-5)
    ints = rng.integers(-3, 4, size=x.shape)
    assert_matches(
        conv(ints, w),
        torch_conv(
            ints.astype(np.float64), w, None, pads=[(0, 0)] * 2, stride=(1, 1), dilation=(1, 1)
        ),
    )
    empty = conv(np.zeros((0, 10, 9, 4)), w)
    assert_matches(empty, np.zeros((0, 8, 7, 2)), rtol=0, atol=0)

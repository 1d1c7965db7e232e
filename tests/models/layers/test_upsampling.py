"""UpSampling1D/2D/3D: nearest against NumPy indexing, bilinear against PyTorch's
``F.interpolate`` and a per-pixel NumPy loop from the definition (half-pixel centres, no
antialiasing), Keras 3 configs, and through every consumer; no receptive-field rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab import cli
from cnnlab.analysis.layer_walk import feature_map_layers
from cnnlab.errors import CnnlabError
from cnnlab.interop.keras_config import translate
from cnnlab.models import ModelDescription, build_module, parse_compact
from cnnlab.models import layers as L
from cnnlab.models.layers.upsampling import UpSampling

from .helpers import check_network, keras_sequential, one_line_error

CHAINS = [
    "Input(7,2) Conv1D(3,2) UpSampling1D(3) Conv1D(2,3,2) Flatten Dense(2,softmax)",
    "Input(5,6,2) Conv2D(3,2) UpSampling2D MaxPooling2D(3) Flatten Dense(3,softmax)",
    "Input(5,6,2) UpSampling2D(2x3,bilinear) Conv2D(2,3,2,same) Flatten Dense(2,softmax)",
    "Input(3,4,2,1) Conv3D(2,2) UpSampling3D(1x2x3) GlobalAveragePooling3D Dense(2,softmax)",
    "Input(9,2) Conv1D(3,2) UpSampling1D(1) Conv1D(2,2) Flatten Dense(2,softmax)",  # identity
]


@pytest.mark.parametrize("line", CHAINS)
def test_chains_through_every_consumer(line: str) -> None:
    # fields are checked up to the upsampling (exact), and through it where size is 1
    check_network(parse_compact(line), exact_fields=True)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_a_unet_like_graph_through_every_consumer(interpolation: str, tmp_path: Path) -> None:
    desc = ModelDescription.from_dict(
        {"name": "unet", "input_shape": [8, 6, 2], "layers": [
            {"class_name": "Conv2D", "name": "down", "filters": 3, "kernel_size": 3,
             "padding": "same", "activation": "relu"},
            {"class_name": "AveragePooling2D", "name": "pool"},
            {"class_name": "Conv2D", "name": "deep", "filters": 4, "kernel_size": 3,
             "padding": "same", "activation": "tanh"},
            {"class_name": "UpSampling2D", "name": "up", "interpolation": interpolation},
            {"class_name": "Concatenate", "name": "skip", "inputs": ["down", "up"]},
            {"class_name": "Conv2D", "filters": 2, "kernel_size": 1},
            {"class_name": "GlobalAveragePooling2D"},
            {"class_name": "Dense", "units": 3, "activation": "softmax"},
        ]}
    )  # fmt: skip
    # ONNX: bilinear here, nearest (the same module code for every rank) in 1-D and 3-D below
    onnx = tmp_path if interpolation == "bilinear" else None
    check_network(desc, exact_fields=True, onnx_dir=onnx)


def test_3d_and_1d_export_to_onnx(tmp_path: Path) -> None:
    for i, line in enumerate(
        [
            "Input(6,2) UpSampling1D(2) Conv1D(2,3) Flatten Dense(2,softmax)",
            "Input(2,3,2,1) UpSampling3D(2x1x3) Conv3D(2,2) Flatten Dense(2,softmax)",
        ]
    ):
        (tmp_path / str(i)).mkdir()
        check_network(parse_compact(line), onnx_dir=tmp_path / str(i))


def _run(line: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The layer's PyTorch module and its NumPy forward pass on channels-last ``x``."""
    desc = parse_compact(line)
    layer = desc.layers[0]
    with torch.no_grad():
        got = build_module(desc).double()(torch.from_numpy(x).movedim(-1, 1)).movedim(1, -1)
    return got.numpy(), layer.forward_numpy([x], {})


def test_nearest_repeats_each_cell_along_each_axis() -> None:
    rng = np.random.default_rng(0)
    for rank in (1, 2, 3):
        for _ in range(3):
            spatial = [int(v) for v in rng.integers(1, 5, rank)]
            size = [int(v) for v in rng.integers(1, 4, rank)]
            x = rng.normal(size=(2, *spatial, 3))
            # out[i] = x[i // size] along every axis: the definition
            index = np.ix_(*[np.arange(n * s) // s for n, s in zip(spatial, size, strict=True)])
            want = x[:, *index, :]
            arg = str(size[0]) if rank == 1 else "x".join(map(str, size))
            line = f"Input({','.join(map(str, [*spatial, 3]))}) UpSampling{rank}D({arg})"
            for got in _run(line, x):
                np.testing.assert_array_equal(got, want)


def bilinear_loop(x: np.ndarray, sy: int, sx: int) -> np.ndarray:
    """Keras' bilinear resize by (sy, sx), pixel by pixel: output pixel (i, j) samples the
    input at ((i + 0.5) / sy - 0.5, (j + 0.5) / sx - 0.5), clamped to the image, weighting
    its four neighbours by the distances (x: (N, H, W, C))."""
    n, h, w, c = x.shape
    out = np.zeros((n, h * sy, w * sx, c))
    for i in range(h * sy):
        for j in range(w * sx):
            y = min(max((i + 0.5) / sy - 0.5, 0.0), h - 1)
            z = min(max((j + 0.5) / sx - 0.5, 0.0), w - 1)
            y0, z0 = int(np.floor(y)), int(np.floor(z))
            y1, z1 = min(y0 + 1, h - 1), min(z0 + 1, w - 1)
            dy, dz = y - y0, z - z0
            out[:, i, j] = (
                (1 - dy) * (1 - dz) * x[:, y0, z0]
                + (1 - dy) * dz * x[:, y0, z1]
                + dy * (1 - dz) * x[:, y1, z0]
                + dy * dz * x[:, y1, z1]
            )
    return out


@pytest.mark.parametrize(("shape", "size"), [((4, 5), (2, 2)), ((3, 2), (3, 1)), ((1, 4), (2, 5))])
def test_bilinear_against_pytorch_and_the_definition(shape: tuple[int, int], size: Any) -> None:
    x = np.random.default_rng(sum(shape)).normal(size=(2, *shape, 3))
    line = f"Input({shape[0]},{shape[1]},3) UpSampling2D({size[0]}x{size[1]},bilinear)"
    loop = bilinear_loop(x, *size)
    with torch.no_grad():
        t = torch.from_numpy(x).movedim(-1, 1)
        out_size = (shape[0] * size[0], shape[1] * size[1])
        ref = F.interpolate(t, size=out_size, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(ref.movedim(1, -1).numpy(), loop, rtol=0, atol=1e-13)
    for got in _run(line, x):
        np.testing.assert_allclose(got, loop, rtol=0, atol=1e-13)


def test_bilinear_by_hand() -> None:
    # a row 0, 1, 3 doubled: sample points -0.25 (clamped to 0), 0.25, 0.75, 1.25, 1.75, 2.25
    x = np.array([0.0, 1.0, 3.0]).reshape(1, 1, 3, 1)
    for got in _run("Input(1,3,1) UpSampling2D(size=1x2,interpolation=bilinear)", x):
        np.testing.assert_allclose(got.ravel(), [0, 0.25, 0.75, 1.5, 2.5, 3], atol=1e-15)


# keras.layers.UpSampling2D((2, 3), interpolation="bilinear") on the 2x3 image below, as
# Keras 3.15.1 computed it (float32), times 12
KERAS_OUTPUT_X12 = [
    [0, 0, 4, 8, 12, 20, 28, 36, 36],
    [12, 12, 13, 14, 15, 27, 39, 51, 51],
    [36, 36, 31, 26, 21, 41, 61, 81, 81],
    [48, 48, 40, 32, 24, 48, 72, 96, 96],
]


def test_bilinear_against_keras_own_output() -> None:
    x = np.array([[0.0, 1, 3], [4, 2, 8]]).reshape(1, 2, 3, 1)
    for got in _run("Input(2,3,1) UpSampling2D(2x3,bilinear)", x):
        np.testing.assert_allclose(got[0, :, :, 0] * 12, KERAS_OUTPUT_X12, atol=1e-5)


def test_no_receptive_field_rule_in_one_line_naming_the_layer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = "Input(8,8,1) Conv2D(2,3) UpSampling2D Conv2D(2,3) MaxPooling2D Flatten Dense(2,softmax)"
    assert cli.main(["receptive", "--model", line]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "layer 'up_sampling2d' (UpSampling2D) has no receptive-field rule: upsampled" in err
    walk = feature_map_layers(parse_compact(line))  # the maps are still listed
    assert [m.name for m in walk] == ["conv2d", "conv2d_1", "max_pooling2d"]
    assert walk[0].field is not None and walk[1].field is None and walk[2].field is None


BAD = [
    ("Input(8,2) UpSampling1D(size=2x2)", "size must be one whole number, got [2, 2]"),
    ("Input(8,2) UpSampling1D(size=0)", "size must be at least 1, got 0"),
    ("Input(8,8,2) UpSampling2D(size=2x2x2)", "size needs 2 entries (one per spatial axis)"),
    ("Input(8,8,2) UpSampling2D(size=a)", "size must be a whole number, got 'a'"),
    (
        "Input(8,8,2) UpSampling2D(2,bicubic)",
        "interpolation 'bicubic' is not supported (nearest and bilinear are)",
    ),
    ("Input(8,8,2) UpSampling2D(2,area)", "interpolation 'area' is not supported"),
    ("Input(8,8,2) UpSampling2D(2,cubic)", "interpolation must be one of nearest, bilinear"),
    ("Input(4,4,4,2) UpSampling3D(interpolation=bilinear)", "unknown argument 'interpolation'"),
    ("Input(8,2) UpSampling1D(interpolation=nearest)", "unknown argument 'interpolation'"),
    ("Input(8,8,2) UpSampling1D", "needs a 1-D input with channels (2 axes), got 8x8x2"),
    ("Input(8,8,2) UpSampling2D(size=2048)", "output 16384x16384x2 is too large"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_arguments_in_one_line_naming_the_layer(case: int) -> None:
    one_line_error(*BAD[case], ("UpSampling",))


def test_keras_lower_cases_the_interpolation_and_the_json_form_reads_back() -> None:
    layer = L.parse_layer("UpSampling2D", {"interpolation": "Bilinear"}, "u", "layer 1")
    assert isinstance(layer, UpSampling) and layer.interpolation == "bilinear"
    assert layer.size == (2, 2) and layer.config() == {"size": [2, 2], "interpolation": "bilinear"}
    for cls, config in [("UpSampling1D", {"size": 2}), ("UpSampling3D", {"size": [2, 2, 2]})]:
        default = L.parse_layer(cls, {}, "u", "layer 1")
        assert default.config() == config and L.parse_layer(cls, config, "u", "") == default


# ---------------------------------------------------------------- Keras 3 configs


_LAST = {"data_format": "channels_last"}
KERAS = [  # input shape, class, Keras 3's own arguments, size, interpolation, output shape
    ([6, 2], "UpSampling1D", {"size": 3}, (3,), "nearest", (18, 2)),
    ([4, 5, 2], "UpSampling2D", {"size": [2, 3], "interpolation": "bilinear"} | _LAST,
     (2, 3), "bilinear", (8, 15, 2)),
    ([4, 5, 2], "UpSampling2D", {"size": [2, 2], "interpolation": "nearest"} | _LAST,
     (2, 2), "nearest", (8, 10, 2)),
    ([2, 3, 4, 1], "UpSampling3D", {"size": [1, 2, 2]} | _LAST, (1, 2, 2), "nearest",
     (2, 6, 8, 1)),
]  # fmt: skip


@pytest.mark.parametrize("case", range(len(KERAS)))
def test_keras_configs_import(case: int) -> None:
    shape, cls, cfg, size, interpolation, out = KERAS[case]
    config = keras_sequential(shape, (cls, cfg), ("Flatten", _LAST))
    desc = translate(config, Path("up.keras"), "up").description
    layer = desc.layers[0]
    assert isinstance(layer, UpSampling) and layer.class_name == cls
    assert (layer.size, layer.interpolation, desc.info[0].out_shape) == (size, interpolation, out)


def test_a_keras_resize_kernel_it_cannot_reproduce_is_refused() -> None:
    cfg = {"size": [2, 2], "interpolation": "lanczos3"} | _LAST
    with pytest.raises(CnnlabError) as info:
        translate(keras_sequential([4, 4, 1], ("UpSampling2D", cfg)), Path("l.keras"), "l")
    text = str(info.value)
    assert "layer 1 (UpSampling2D 'layer_0'): interpolation 'lanczos3' is not supported" in text
    assert "\n" not in text

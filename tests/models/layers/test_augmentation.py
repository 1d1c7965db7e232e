"""RandomFlip, RandomTranslation, RandomRotation, RandomZoom, RandomContrast, RandomBrightness:
the identity at inference (every consumer), reproducible in training, and each transform
against NumPy written out here (np.pad's modes for Keras' fill modes, loops for bilinear
sampling, Keras' contrast and brightness formulas), their draws spread over Keras' ranges."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cnnlab.engine.fastpath import fast_forward
from cnnlab.engine.plan import plan, where
from cnnlab.errors import CnnlabError
from cnnlab.interop.keras_config import translate
from cnnlab.interop.keras_import import read_keras
from cnnlab.models import DescriptionError, ModelDescription, build_module, parse_compact
from cnnlab.models.layers import augmentation

from .helpers import check_network

ALL: list[tuple[str, dict[str, Any]]] = [
    ("RandomFlip", {"mode": "horizontal"}),
    ("RandomTranslation", {"height_factor": 0.2, "width_factor": [-0.1, 0.3]}),
    ("RandomRotation", {"factor": 0.1, "fill_mode": "constant", "fill_value": 0.5}),
    ("RandomZoom", {"height_factor": [-0.3, 0.2], "fill_mode": "wrap"}),
    ("RandomContrast", {"factor": 0.4, "value_range": [0, 1]}),
    ("RandomBrightness", {"factor": [-0.2, 0.1], "value_range": [0, 1]}),
]
# Keras' fill modes as np.pad extends an array (Keras' "reflect" repeats the edge pixel)
PAD = {"reflect": "symmetric", "wrap": "wrap", "nearest": "edge", "constant": "constant"}
MODES = list(PAD)
N = 400
NESTED = Path("keras-functional/nested_augment.keras")
REPO = Path(__file__).resolve().parents[3]


def run(cls: str, args: dict[str, Any], x: np.ndarray, seed: int = 0, train: bool = True):
    """x (N, H, W, C) through the layer alone, in training or eval mode: (N, H, W, C)."""
    desc = ModelDescription.build("aug", x.shape[1:], [(cls, args)])
    model = build_module(desc).double().train(train)
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(torch.from_numpy(x).movedim(-1, 1)).movedim(1, -1).numpy()


def images(n: int, h: int, w: int, c: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, h, w, c))


def ramp(n: int, size: int) -> np.ndarray:
    """Channel 0 the column index, channel 1 the row index: bilinear sampling is exact on it."""
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return np.broadcast_to(np.stack([cols, rows], -1), (n, size, size, 2)).astype(float)


def extended(img: np.ndarray, mode: str, fill: float, p: int) -> np.ndarray:
    kw = {"constant_values": fill} if mode == "constant" else {}
    return np.pad(img, ((p, p), (p, p), (0, 0)), mode=PAD[mode], **kw)  # type: ignore[call-overload]


def numpy_sample(img, rows, cols, mode: str, interpolation: str, fill: float = 0.0):
    """img (H, W, C) read at fractional input positions rows, cols (H, W), in loops."""
    h, w, _ = img.shape
    p = 3 * max(h, w)
    ext = extended(img, mode, fill, p)
    out = np.empty(img.shape)
    for i in range(h):
        for j in range(w):
            r, c = rows[i, j] + p, cols[i, j] + p
            if interpolation == "nearest":
                out[i, j] = ext[math.floor(r + 0.5), math.floor(c + 0.5)]
                continue
            r0, c0 = math.floor(r), math.floor(c)
            fr, fc = r - r0, c - c0
            out[i, j] = (1 - fr) * ((1 - fc) * ext[r0, c0] + fc * ext[r0, c0 + 1]) + fr * (
                (1 - fc) * ext[r0 + 1, c0] + fc * ext[r0 + 1, c0 + 1]
            )
    return out


def spread(values: np.ndarray, lower: float, upper: float) -> None:
    """Draws within [lower, upper], reaching near both ends (400 uniform draws)."""
    margin = 0.05 * (upper - lower)
    assert lower - 1e-9 <= values.min() < lower + margin, (values.min(), lower)
    assert upper - margin < values.max() <= upper + 1e-9, (values.max(), upper)


# ---------------------------------------------------------------- every consumer


def test_chain_through_every_consumer(tmp_path: Path) -> None:
    line = (
        "Input(9,8,3) RandomFlip RandomTranslation(0.1,0.2) RandomRotation(0.1) RandomZoom(0.2) "
        "RandomContrast(0.3) RandomBrightness(0.1) Conv2D(4,3,tanh) AveragePooling2D Flatten "
        "Dense(2,softmax)"
    )
    check_network(parse_compact(line), exact_fields=True, onnx_dir=tmp_path)


def test_graph_through_every_consumer() -> None:
    layers: list[dict[str, Any]] = [
        {"class_name": "RandomFlip", "name": "flip", "mode": "vertical"},
        {"class_name": "RandomZoom", "name": "zoom", "height_factor": 0.2, "width_factor": 0.1},
        {"class_name": "Conv2D", "name": "a", "filters": 3, "kernel_size": 3, "padding": "same"},
        {"class_name": "Conv2D", "name": "b", "inputs": ["zoom"], "filters": 3, "kernel_size": 1},
        {"class_name": "Add", "name": "sum", "inputs": ["a", "b"]},
        {"class_name": "RandomBrightness", "factor": 0.2},
        {"class_name": "GlobalAveragePooling2D"},
        {"class_name": "Dense", "units": 3, "activation": "softmax"},
    ]
    data = {"name": "g", "input_shape": [7, 6, 2], "layers": layers}
    check_network(ModelDescription.from_dict(data), exact_fields=True)


@pytest.mark.parametrize("cls,args", ALL)
def test_identity_at_inference(cls: str, args: dict[str, Any]) -> None:
    x = images(6, 5, 7, 3)
    np.testing.assert_array_equal(run(cls, args, x, train=False), x)
    layer = ModelDescription.build("aug", x.shape[1:], [(cls, args)]).layers[0]
    assert layer.forward_numpy([x], {}) is x
    assert not np.array_equal(run(cls, args, x), x)  # training: transformed


@pytest.mark.parametrize("cls,args", ALL)
def test_reproducible_from_the_seed(cls: str, args: dict[str, Any]) -> None:
    x = images(32, 6, 5)
    one, again, other = run(cls, args, x, 1), run(cls, args, x, 1), run(cls, args, x, 2)
    np.testing.assert_array_equal(one, again)
    assert not np.array_equal(one, other)


def test_the_fast_engine_runs_them_as_pytorch() -> None:
    desc = parse_compact(
        "Input(12,12,3) RandomFlip RandomRotation(0.1) Conv2D(4,3,relu) MaxPooling2D Flatten "
        "Dense(2,softmax)"
    )
    assert [b.kind for b in plan(desc).blocks[:3]] == ["pytorch", "pytorch", "conv_pool_relu"]
    ran = where(desc, True)
    assert ran["random_flip"] == ran["random_rotation"] == "pytorch"
    assert ran["conv2d"] == ran["max_pooling2d"] == "cnnlab"
    model = build_module(desc).train()
    x = torch.rand(8, 3, 12, 12)
    torch.manual_seed(3)
    want = model(x)
    torch.manual_seed(3)
    got = fast_forward(model, x)  # the autograd step's forward pass, in training
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(want, model.eval()(x), atol=1e-3)


# ---------------------------------------------------------------- each transform


@pytest.mark.parametrize("mode", ["horizontal", "vertical", "horizontal_and_vertical"])
def test_flip_about_half_of_the_examples(mode: str) -> None:
    x = images(N, 4, 5)
    out = run("RandomFlip", {"mode": mode}, x)
    axes = {"horizontal": (2,), "vertical": (1,), "horizontal_and_vertical": (1, 2)}[mode]
    flipped = np.flip(x, axis=axes)
    same = np.all(out == x, axis=(1, 2, 3))
    turned = np.all(out == flipped, axis=(1, 2, 3))
    assert np.all(same ^ turned)  # each example exactly as it was, or flipped exactly
    assert abs(int(turned.sum()) - N / 2) < 4.5 * math.sqrt(N / 4)  # binomial(400, 1/2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("dy,dx", [(2, -3), (-3, 5), (8, 1)])
def test_translation_by_whole_pixels(mode: str, interpolation: str, dy: int, dx: int) -> None:
    x = images(3, 8, 10)
    args = {"height_factor": [dy / 8] * 2, "width_factor": [dx / 10] * 2, "fill_mode": mode,
            "interpolation": interpolation, "fill_value": -2.5}  # fmt: skip
    out = run("RandomTranslation", args, x)
    for img, got in zip(x, out, strict=True):
        p = 20  # out[i, j] = in[i - dy, j - dx], the image extended by the fill mode
        want = extended(img, mode, -2.5, p)[p - dy : p - dy + 8, p - dx : p - dx + 10]
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_translations_spread_over_the_factor_range() -> None:
    args = {"height_factor": [0.1, -0.2], "width_factor": 0.15, "fill_mode": "nearest"}
    out = run("RandomTranslation", args, ramp(N, 32))
    spread((16 - out[:, 16, 16, 1]) / 32, -0.2, 0.1)  # shifts down, as fractions of the size
    spread((16 - out[:, 16, 16, 0]) / 32, -0.15, 0.15)  # shifts right


@pytest.mark.parametrize("size", [6, 7])
@pytest.mark.parametrize("factor,k", [(0.25, 1), (-0.25, -1), (0.5, 2)])
def test_rotation_by_quarter_turns_is_rot90(size: int, factor: float, k: int) -> None:
    x = images(3, size, size)
    want = np.rot90(x, k, axes=(1, 2))  # counter-clockwise as shown (rows going down)
    args = {"factor": [factor, factor], "fill_mode": "constant", "fill_value": 9.0}
    np.testing.assert_allclose(run("RandomRotation", args, x), want, atol=1e-12)
    exact = run("RandomRotation", {**args, "interpolation": "nearest"}, x)
    np.testing.assert_array_equal(exact, want)


def test_rotations_spread_over_the_factor_range() -> None:
    out = run("RandomRotation", {"factor": [-0.1, 0.05], "fill_mode": "nearest"}, ramp(N, 33))
    # output (u, v) reads column cx + cos(t) (u - cx) - sin(t) (v - cy) of the input
    cos, sin = out[:, 16, 17, 0] - 16, 16 - out[:, 17, 16, 0]
    np.testing.assert_allclose(cos**2 + sin**2, 1, atol=1e-12)
    spread(np.arctan2(sin, cos) / (2 * math.pi), -0.1, 0.05)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_zoom_against_numpy(mode: str, interpolation: str) -> None:
    x = images(2, 6, 7)
    zy, zx = 1.3, 0.8
    args = {"height_factor": [0.3, 0.3], "width_factor": [-0.2, -0.2], "fill_mode": mode,
            "interpolation": interpolation, "fill_value": 0.7}  # fmt: skip
    rows, cols = np.meshgrid(np.arange(6.0), np.arange(7.0), indexing="ij")
    rows, cols = 2.5 + zy * (rows - 2.5), 3 + zx * (cols - 3)  # about the centre
    out = run("RandomZoom", args, x)
    for img, got in zip(x, out, strict=True):
        want = numpy_sample(img, rows, cols, mode, interpolation, 0.7)
        np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("width", [None, 0.25])
def test_zooms_spread_and_keep_the_aspect_ratio(width: float | None) -> None:
    args = {"height_factor": 0.4, "width_factor": width, "fill_mode": "nearest"}
    out = run("RandomZoom", args, ramp(N, 33))
    zx, zy = out[:, 16, 17, 0] - 16, out[:, 17, 16, 1] - 16
    spread(zy, 0.6, 1.4)
    if width is None:
        np.testing.assert_allclose(zx, zy, atol=1e-12)
    else:
        spread(zx, 0.75, 1.25)


# Keras' factor ranges (its _set_factor): one number f -> (max(-f, low), f), a pair sorted;
# RandomContrast's low is 0, so factor=0.2 gives (0, 0.2): contrast in [1.0, 1.2]
@pytest.mark.parametrize(
    "factor,lower,upper,value_range",
    [(0.2, 0.0, 0.2, (0, 255)), ([0.5, 0.3], 0.3, 0.5, (0, 255)), ([1, 0], 0, 1, (10, 200))],
)
def test_contrast_against_keras_formula(monkeypatch, factor, lower, upper, value_range) -> None:
    u = np.array([0.0, 0.5, 1.0, 0.25])
    monkeypatch.setattr(
        augmentation, "uniform", lambda x, lo, hi: lo + (hi - lo) * torch.from_numpy(u)
    )
    x = images(4, 5, 6, 3) * 255
    out = run("RandomContrast", {"factor": factor, "value_range": list(value_range)}, x)
    f = (1 - lower) + ((1 + upper) - (1 - lower)) * u
    mean = x.mean(axis=(1, 2), keepdims=True)  # per image and channel
    want = np.clip((x - mean) * f[:, None, None, None] + mean, *value_range)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


def test_contrast_factors_spread_per_image() -> None:
    x = images(N, 4, 5, 3, seed=1)
    out = run("RandomContrast", {"factor": [0.2, 0.4], "value_range": [-1e6, 1e6]}, x)
    mean = x.mean(axis=(1, 2), keepdims=True)
    f = ((out - mean) / (x - mean))[:, 0, 0, 0]
    np.testing.assert_allclose((out - mean), (x - mean) * f[:, None, None, None], atol=1e-10)
    spread(f, 0.8, 1.4)


@pytest.mark.parametrize(
    "factor,lower,upper,value_range",
    [(0.3, -0.3, 0.3, [0, 255]), ([0.1, -0.2], -0.2, 0.1, [255, 0]), (1, -1, 1, [-1, 1])],
)
def test_brightness_against_keras_formula(monkeypatch, factor, lower, upper, value_range) -> None:
    u = np.array([0.0, 0.5, 1.0, 0.8])
    monkeypatch.setattr(
        augmentation, "uniform", lambda x, lo, hi: lo + (hi - lo) * torch.from_numpy(u)
    )
    low, high = sorted(value_range)  # Keras sorts it
    x = low + images(4, 3, 5, 3) * (high - low)
    out = run("RandomBrightness", {"factor": factor, "value_range": value_range}, x)
    delta = (lower + (upper - lower) * u) * (high - low)
    want = np.clip(x + delta[:, None, None, None], low, high)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


def test_brightness_deltas_spread_per_image() -> None:
    x = images(N, 3, 4, 3, seed=2) + 100
    out = run("RandomBrightness", {"factor": 0.25, "value_range": [0, 200]}, x)
    delta = out - x
    np.testing.assert_allclose(delta, np.broadcast_to(delta[:, :1, :1, :1], x.shape), atol=1e-9)
    spread(delta[:, 0, 0, 0] / 200, -0.25, 0.25)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_on_the_batch_device() -> None:
    x = images(16, 8, 10)
    shift = {"height_factor": [0.25, 0.25], "width_factor": [-0.3, -0.3]}
    desc = ModelDescription.build("aug", x.shape[1:], [("RandomTranslation", shift)])
    model = build_module(desc).double().cuda().train()
    got = model(torch.from_numpy(x).movedim(-1, 1).cuda()).movedim(1, -1).cpu().numpy()
    np.testing.assert_allclose(got, run("RandomTranslation", desc.layers[0].config(), x))
    for cls, args in ALL:
        model = build_module(ModelDescription.build("a", x.shape[1:], [(cls, args)])).cuda()
        xs = torch.from_numpy(x).float().movedim(-1, 1).cuda()
        outs = []
        for seed in (5, 5, 6):
            torch.manual_seed(seed)
            outs.append(model.train()(xs))
        assert outs[0].device == xs.device and torch.equal(outs[0], outs[1]), cls
        assert not torch.equal(outs[0], outs[2]) and torch.equal(model.eval()(xs), xs), cls


# ---------------------------------------------------------------- arguments and Keras import

BAD = [
    ("Input(6,6,3) RandomFlip(diagonal)", "RandomFlip): mode must be one of horizontal"),
    ("Input(6,6,3) RandomTranslation(1.5,0)", "RandomTranslation): height_factor must be in"),
    ("Input(6,6,3) RandomRotation(0.1,fill_mode=mirror)", "RandomRotation): fill_mode must be"),
    ("Input(6,6,3) RandomZoom(0.1,interpolation=bicubic)", "RandomZoom): interpolation must"),
    ("Input(6,6,3) RandomZoom(-1)", "RandomZoom): height_factor must be above -1"),
    ("Input(6,6,3) RandomContrast(1.5)", "RandomContrast): factor must be in [0, 1]"),
    ("Input(6,6,3) RandomContrast(0.1,value_range=255)", "RandomContrast): value_range needs"),
    ("Input(6,6,3) RandomBrightness(0.1,seed=3)", "RandomBrightness): unknown argument 'seed'"),
    ("Input(10,3) RandomFlip", "RandomFlip): takes images (height, width, channels)"),
    ("Input(4,4,4,2) RandomZoom(0.1)", "RandomZoom): takes images"),
]


@pytest.mark.parametrize("line,message", BAD)
def test_bad_arguments_name_the_layer(line: str, message: str) -> None:
    with pytest.raises(DescriptionError) as info:
        parse_compact(line)
    text = str(info.value)
    assert text.startswith("layer 1 (") and message in text and "\n" not in text


def test_contrast_pairs_are_checked() -> None:
    for factor, message in [([-0.1, 0.2], "must be in [0, 1000]"), ([1.5, 2], "at most 1")]:
        with pytest.raises(DescriptionError, match=re.escape(message)):
            ModelDescription.build("c", (4, 4, 1), [("RandomContrast", {"factor": factor})])
    with pytest.raises(DescriptionError, match="low <= high"):
        args = {"factor": 0.1, "value_range": [2, 1]}
        ModelDescription.build("c", (4, 4, 1), [("RandomContrast", args)])


def keras_layer(cls: str, name: str, **cfg: Any) -> dict[str, Any]:
    """A layer's entry as Keras 3.15 writes it in config.json."""
    dtype = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}}
    config = {"name": name, "trainable": True, "dtype": dtype, "data_format": "channels_last",
              "seed": None, **cfg}  # fmt: skip
    return {"module": "keras.layers", "class_name": cls, "config": config, "registered_name": None}


def keras_model(*layers: dict[str, Any]) -> dict[str, Any]:
    cfg = {"batch_shape": [None, 10, 12, 3], "dtype": "float32", "sparse": False,
           "ragged": False, "name": "input_layer"}  # fmt: skip
    inp = {"class_name": "InputLayer", "config": cfg}
    return {"module": "keras", "class_name": "Sequential", "config": {"layers": [inp, *layers]}}


def test_keras_configs_import() -> None:
    fill = {"fill_mode": "reflect", "interpolation": "bilinear", "fill_value": 0.0}
    layers = [
        keras_layer("RandomFlip", "flip", mode="horizontal"),
        keras_layer("RandomTranslation", "shift", height_factor=0.1, width_factor=0.2, **fill),
        keras_layer("RandomRotation", "turn", factor=[-0.1, 0.1], **fill),
        keras_layer("RandomZoom", "zoom", height_factor=0.1, width_factor=None, **fill),
        keras_layer("RandomContrast", "contrast", factor=[0, 0.2], value_range=[0, 255]),
        keras_layer("RandomBrightness", "bright", factor=[-0.2, 0.2], value_range=[0, 255]),
    ]  # fmt: skip
    desc = translate(keras_model(*layers), Path("m.keras"), "m").description
    for layer, entry in zip(desc.layers, layers, strict=True):
        cfg = {k: v for k, v in entry["config"].items() if k in type(layer).ARGS}
        assert layer.name == entry["config"]["name"] and layer.config() == cfg
    bad = keras_layer("RandomFlip", "flip", mode="vertical", data_format="channels_first")
    with pytest.raises(CnnlabError, match=r"layer 1 \(RandomFlip 'flip'\): data_format="):
        translate(keras_model(bad), Path("m.keras"), "m")


def test_keras_nested_augmentation_model() -> None:
    env = os.environ.get("CNNLAB_DATA")
    roots = [Path(env)] if env else []
    found = [r for r in [*roots, REPO.parent / "shared" / "data"] if (r / NESTED).is_file()]
    if not found:
        pytest.skip("keras-functional not found: set CNNLAB_DATA to a folder holding it")
    folder = (found[0] / NESTED).parent
    km = read_keras(found[0] / NESTED)
    model = build_module(km.description)
    model.load_state_dict(km.state_dict)
    x = torch.from_numpy(np.load(folder / "nested_augment.inputs.npy")).movedim(-1, 1)
    with torch.no_grad():
        got = torch.softmax(model.eval()(x), dim=1).numpy()
    np.testing.assert_allclose(got, np.load(folder / "nested_augment.outputs.npy"), atol=1e-5)

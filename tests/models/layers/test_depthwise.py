"""DepthwiseConv1D, DepthwiseConv2D: the kind against PyTorch's grouped convolution
(``groups=C``) in float64, Keras' kernel order written out, Keras' Glorot fans, Keras' own
outputs, hand-written Keras configs, the fast engine, and every consumer."""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ops.helpers import tf_same_pads, torch_conv

from cnnlab import ops
from cnnlab.analysis.receptive import layer_table
from cnnlab.engine.fastpath import make_step
from cnnlab.engine.plan import PYTORCH, plan, where
from cnnlab.errors import CnnlabError
from cnnlab.interop.keras_import import read_keras
from cnnlab.models import ModelDescription, Network, build_module, parse_compact
from cnnlab.models import layers as L
from cnnlab.train.loop import TrainConfig, make_optimizer

from .helpers import check_network


def _keras_functional() -> Path:
    """The shared Keras models: $CNNLAB_DATA/keras-functional, else ../shared/data's."""
    env = os.environ.get("CNNLAB_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[4] / "shared" / "data"
    return root / "keras-functional"


KERAS_FUNCTIONAL = _keras_functional()

CHAINS = [
    "Input(17,3) DepthwiseConv1D(5,2,same,depth_multiplier=2,activation=gelu) Conv1D(4,1) "
    "DepthwiseConv1D(3,dilation_rate=2,use_bias=false) GlobalAveragePooling1D Dense(2,softmax)",
    "Input(9,11,2) DepthwiseConv2D(3,depth_multiplier=3,dilation_rate=2,activation=tanh) "
    "DepthwiseConv2D(2x3,2,same,use_bias=false) Flatten Dense(3,softmax)",
]


def graph(rank: int) -> ModelDescription:
    """A MobileNet-style residual block: depthwise (x2), 1x1, added to a strided shortcut."""
    spatial = {1: [13], 2: [9, 8]}[rank]
    layers: list[dict[str, Any]] = [
        {"class_name": f"Conv{rank}D", "name": "stem", "filters": 3, "kernel_size": 1},
        {"class_name": f"DepthwiseConv{rank}D", "name": "dw", "kernel_size": 3, "strides": 2,
         "padding": "same", "depth_multiplier": 2, "activation": "silu"},
        {"class_name": f"Conv{rank}D", "name": "pw", "filters": 4, "kernel_size": 1},
        {"class_name": f"DepthwiseConv{rank}D", "name": "short", "inputs": ["stem"],
         "kernel_size": 1, "strides": 2, "depth_multiplier": 2, "padding": "same"},
        {"class_name": f"Conv{rank}D", "name": "wide", "filters": 4, "kernel_size": 1},
        {"class_name": "Add", "name": "sum", "inputs": ["pw", "wide"]},
        {"class_name": f"GlobalAveragePooling{rank}D"},
        {"class_name": "Dense", "units": 2, "activation": "softmax"},
    ]  # fmt: skip
    return ModelDescription.from_dict({"name": "g", "input_shape": [*spatial, 2], "layers": layers})


@pytest.mark.parametrize("line", CHAINS)
def test_every_consumer_on_chains(line: str, tmp_path: Path) -> None:
    onnx = tmp_path if "DepthwiseConv2D" in line else None  # one export: seconds each
    check_network(parse_compact(line), exact_fields=True, onnx_dir=onnx)


@pytest.mark.parametrize("rank", [1, 2])
def test_every_consumer_on_a_graph(rank: int) -> None:
    check_network(graph(rank), exact_fields=True)


def keras_layout(weight: np.ndarray, m: int) -> np.ndarray:
    """A grouped weight (C * M, 1, *k) as Keras' (*k, C, M): output channel c * M + m."""
    k = weight.shape[2:]
    return weight.reshape(-1, m, *k).transpose(*range(2, 2 + len(k)), 0, 1)


@pytest.mark.parametrize("rank", [1, 2])
def test_against_torch_grouped_convolution(rank: int) -> None:
    rng = np.random.default_rng(rank)
    tried = 0
    for trial in range(10):
        spatial = [int(v) for v in rng.integers(5, 11, rank)]
        c, m = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        k = [int(v) for v in rng.integers(1, 5, rank)]
        strided = trial % 2 == 0
        s = [int(v) for v in rng.integers(1, 4, rank)] if strided else [1] * rank
        d = [1] * rank if strided else [int(v) for v in rng.integers(1, 3, rank)]
        padding = ["same", "valid"][trial % 3 == 0]
        args = {"kernel_size": k, "strides": s, "dilation_rate": d, "padding": padding}
        args |= {"depth_multiplier": m, "use_bias": trial % 4 != 1}
        try:
            desc = ModelDescription.build("d", (*spatial, c), [(f"DepthwiseConv{rank}D", args)])
        except L.DescriptionError:
            continue  # a kernel larger than the map
        tried += 1
        info = desc.info[0]
        assert info.out_shape[-1] == c * m
        model = build_module(desc).double()
        conv = model._modules[info.layer.name]
        assert isinstance(conv, torch.nn.Conv1d | torch.nn.Conv2d) and conv.groups == c
        weight = conv.weight.detach().numpy()  # (C * M, 1, *k)
        bias = None if conv.bias is None else conv.bias.detach().numpy()
        x = rng.normal(size=(2, *spatial, c))
        pads = (
            [tf_same_pads(n, kk, ss, dd) for n, kk, ss, dd in zip(spatial, k, s, d, strict=True)]
            if padding == "same"
            else [(0, 0)] * rank
        )
        grouped = weight.transpose(*range(2, 2 + rank), 1, 0)  # (*k, 1, C * M)
        want = torch_conv(x, grouped, bias, pads=pads, stride=s, dilation=d, groups=c)
        with torch.no_grad():
            got = model(torch.from_numpy(x).movedim(-1, 1)).movedim(1, -1).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
        # Keras' layout, written out here: the kind's Weight agrees, and its NumPy pass too
        keras = keras_layout(weight, m)
        kernel, *rest = info.layer.weights(info.in_shapes)
        assert (kernel.keras, kernel.shape) == ("depthwise_kernel", (*k, c, m))
        np.testing.assert_array_equal(kernel.from_torch(weight), keras)
        np.testing.assert_array_equal(kernel.to_torch(keras), weight)
        w = {"depthwise_kernel": keras} | ({"bias": bias} if bias is not None else {})
        assert [x.keras for x in rest] == (["bias"] if bias is not None else [])
        np.testing.assert_allclose(info.layer.forward_numpy([x], w), want, rtol=1e-10, atol=1e-12)
    assert tried >= 6


def test_keras_glorot_fans_of_the_depthwise_kernel() -> None:
    """Keras' GlorotUniform on (*k, C, M): fan_in C * prod(k), fan_out M * prod(k). PyTorch's
    fans of the grouped weight (C * M, 1, *k) would give a smaller limit."""
    torch.manual_seed(3)
    model = build_module(parse_compact("Input(12,12,16) DepthwiseConv2D(5,depth_multiplier=3)"))
    conv = model.depthwise_conv2d
    limit = math.sqrt(6 / (16 * 25 + 3 * 25))
    w = conv.weight.detach().abs()
    assert limit * 0.97 < float(w.max()) <= limit
    assert abs(float(w.pow(2).mean()) - limit**2 / 3) < 0.1 * limit**2 / 3
    assert not conv.bias.detach().any()


def fast_step_matches_autograd(desc: ModelDescription, names: list[str]) -> None:
    """The fast engine runs ``names`` as PyTorch operations (never a Conv kernel), and its
    training step sees the gradient of the plain loss."""
    for name in names:
        assert where(desc, True)[name] == PYTORCH
        assert [b.kind for b in plan(desc).blocks if name in b.layers] == [PYTORCH]
    torch.manual_seed(0)
    model = build_module(desc)
    x = torch.rand(8, desc.input_shape[-1], *desc.input_shape[:-1])
    y = torch.arange(8) % desc.info[-1].out_shape[-1]
    loss = F.cross_entropy(model(x), y)
    want = torch.autograd.grad(loss, list(model.parameters()))
    seen: list[list[torch.Tensor]] = []
    step = make_step(model, make_optimizer(model, TrainConfig()), seen.append)
    step(x, y, None)
    assert len(seen) == 1 and len(seen[0]) == len(want)
    for got, ref in zip(seen[0], want, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_fast_engine_runs_it_as_pytorch_with_the_plain_gradient() -> None:
    desc = parse_compact(
        "Input(12,12,3) DepthwiseConv2D(3,depth_multiplier=2,activation=relu) MaxPooling2D "
        "Conv2D(4,1,activation=relu) Flatten Dense(3,softmax)"
    )
    fast_step_matches_autograd(desc, ["depthwise_conv2d"])
    fast_step_matches_autograd(graph(1), ["dw", "short"])


def test_arguments_words_and_connections() -> None:
    for line, message in [
        ("Input(8,2) DepthwiseConv1D(3,2,dilation_rate=2)", "strides > 1 together with dilation"),
        ("Input(8,8,1) DepthwiseConv2D(3,depth_multiplier=0)", "depth_multiplier must be at le"),
        ("Input(8,8,1) DepthwiseConv2D(3x3x3)", "kernel_size needs 2 entries"),
        ("Input(8,8,1) DepthwiseConv2D(3,filters=2)", "unknown argument 'filters'"),
        ("Input(8,8,1) DepthwiseConv2D(9)", "input 8x8 is smaller than the kernel 9x9"),
        ("Input(8,8,1) DepthwiseConv1D(3)", "needs a 1-D input with channels"),
        ("Input(4,4,4,1) DepthwiseConv3D(3)", "unknown layer 'DepthwiseConv3D'"),
    ]:
        with pytest.raises(L.DescriptionError, match=message):
            parse_compact(line)
    desc = parse_compact(
        "Input(10,10,3) DepthwiseConv2D(3,2,same,depth_multiplier=2,activation=relu)"
    )
    layer = desc.layers[0]
    assert isinstance(layer, L.Conv) and layer.describe() == (
        "DepthwiseConv2D 3x3 stride 2 x2 per channel, same, relu"
    )
    row = layer_table(desc)[0]  # each unit reads its own channel's 3x3 window
    assert (row.fan_in, row.uses_per_weight, row.params) == (9, 25, 3 * 3 * 3 * 2 + 6)
    assert row.field.size == (3, 3)


# ---------------------------------------------------------------- Keras files


def keras_file(path: Path, layers: list[dict[str, Any]], shape: list[int], arrays: dict) -> Path:
    """A Sequential ``.keras`` file as Keras 3 writes one: config.json and weights by path."""
    inp = {"class_name": "InputLayer", "config": {"batch_shape": [None, *shape], "name": "in"}}
    config = {"module": "keras", "class_name": "Sequential", "config": {"layers": [inp, *layers]}}
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for key, arr in arrays.items():
            f.create_dataset(key, data=arr.astype(np.float32))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", buf.getvalue())
    return path


def klayer(cls: str, name: str, **cfg: Any) -> dict[str, Any]:
    dtype = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}}
    config = {"name": name, "trainable": True, "dtype": dtype, **cfg}
    return {"module": "keras.layers", "class_name": cls, "config": config, "registered_name": None}


GLOROT = {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": None}}
ZEROS = {"module": "keras.initializers", "class_name": "Zeros", "config": {}}
# What Keras 3.15 writes for a DepthwiseConv2D besides the arguments cnnlab reads
DEPTHWISE_REST = {
    "data_format": "channels_last",
    "depthwise_initializer": GLOROT,
    "bias_initializer": ZEROS,
    "depthwise_regularizer": None,
    "bias_regularizer": None,
    "activity_regularizer": None,
    "depthwise_constraint": None,
    "bias_constraint": None,
}
HEAD = [
    klayer("GlobalAveragePooling2D", "gap", data_format="channels_last", keepdims=False),
    klayer("Dense", "out", units=3, activation="linear", use_bias=True),
]


def test_hand_written_keras_config_imports(tmp_path: Path) -> None:
    """Keras' (*k, C, M) kernel read from model.weights.h5: output channel c * M + m is
    channel c correlated with kernel [..., c, m] (single-channel correlations here)."""
    rng = np.random.default_rng(5)
    dw = {"depth_multiplier": 2, "kernel_size": [3, 2], "strides": [1, 1], "padding": "same"}
    dw |= {"dilation_rate": [1, 1], "activation": "tanh", "use_bias": True}
    layers = [klayer("DepthwiseConv2D", "dw", **dw, **DEPTHWISE_REST), *HEAD]
    # float32, as Keras stores them (and cnnlab reads them)
    kernel, bias, dense, dense_bias = (
        rng.normal(size=shape).astype(np.float32).astype(np.float64)
        for shape in [(3, 2, 3, 2), (6,), (6, 3), (3,)]
    )
    arrays = {"layers/depthwise_conv2d/vars/0": kernel, "layers/depthwise_conv2d/vars/1": bias}
    arrays |= {"layers/dense/vars/0": dense, "layers/dense/vars/1": dense_bias}
    km = read_keras(keras_file(tmp_path / "dw.keras", layers, [7, 6, 3], arrays))
    net = Network(km.description).double()
    net.load_state_dict({k: v.double() for k, v in km.state_dict.items()})
    x = rng.normal(size=(2, 7, 6, 3))
    with torch.no_grad():
        got = net(torch.from_numpy(x).movedim(-1, 1)).numpy()
    maps = np.zeros((2, 7, 6, 6))
    padded = np.pad(x, ((0, 0), (1, 1), (0, 1), (0, 0)))  # TensorFlow's same for 3x2
    for n in range(2):
        for c in range(3):
            for m in range(2):
                maps[n, ..., c * 2 + m] = ops.correlate(padded[n, ..., c], kernel[..., c, m])
    want = np.tanh(maps + bias).mean(axis=(1, 2)) @ dense + dense_bias
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)

    refused = [klayer("DepthwiseConv2D", "dw", **(dw | DEPTHWISE_REST | {"data_format": "x"}))]
    with pytest.raises(CnnlabError, match=r"layer 1 \(DepthwiseConv2D 'dw'\): data_format='x'"):
        read_keras(keras_file(tmp_path / "bad.keras", [*refused, *HEAD], [7, 6, 3], arrays))


def reproduces_keras(name: str) -> None:
    """``NAME.keras`` imports and gives Keras' outputs on its inputs, to 1e-5."""
    if not (KERAS_FUNCTIONAL / f"{name}.keras").is_file():
        pytest.skip(f"{KERAS_FUNCTIONAL} has no {name}.keras")
    km = read_keras(KERAS_FUNCTIONAL / f"{name}.keras")
    net = Network(km.description)
    net.load_state_dict(km.state_dict)
    x = np.load(KERAS_FUNCTIONAL / f"{name}.inputs.npy")
    with torch.no_grad():
        got = torch.softmax(net.eval()(torch.from_numpy(x).movedim(-1, 1)), dim=1).numpy()
    np.testing.assert_allclose(got, np.load(KERAS_FUNCTIONAL / f"{name}.outputs.npy"), atol=1e-5)


def test_keras_mobilenet_block_outputs() -> None:
    reproduces_keras("mobilenet_block")

"""SeparableConv1D, SeparableConv2D: the kind against PyTorch's grouped convolution then a
1x1 convolution in float64, Keras' kernel layouts written out, Keras' Glorot fans of each
kernel, Keras' own outputs, a hand-written Keras config, the fast engine, every consumer."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ops.helpers import tf_same_pads, torch_conv

from cnnlab import ops
from cnnlab.analysis.receptive import layer_table
from cnnlab.interop.keras_import import read_keras
from cnnlab.models import ModelDescription, Network, build_module, parse_compact
from cnnlab.models import layers as L
from cnnlab.models.layers.separable import SeparableModule

from .helpers import check_network
from .test_depthwise import (
    DEPTHWISE_REST,
    GLOROT,
    fast_step_matches_autograd,
    keras_file,
    keras_layout,
    klayer,
    reproduces_keras,
)

CHAINS = [
    "Input(17,3) SeparableConv1D(4,5,2,same,depth_multiplier=2,activation=elu) "
    "SeparableConv1D(3,3,dilation_rate=2,use_bias=false) GlobalAveragePooling1D Dense(2,softmax)",
    "Input(10,9,2) SeparableConv2D(5,3,depth_multiplier=3,padding=same,activation=tanh) "
    "SeparableConv2D(4,2x3,2,use_bias=false) Flatten Dense(3,softmax)",
]


def graph(rank: int) -> ModelDescription:
    """Two branches of one input, a separable and a plain convolution, averaged."""
    spatial = {1: [14], 2: [8, 9]}[rank]
    layers: list[dict[str, Any]] = [
        {"class_name": f"SeparableConv{rank}D", "name": "sep", "inputs": ["input"], "filters": 4,
         "kernel_size": 3, "padding": "same", "depth_multiplier": 2, "activation": "tanh"},
        {"class_name": f"Conv{rank}D", "name": "plain", "inputs": ["input"], "filters": 4,
         "kernel_size": 1},
        {"class_name": "Average", "name": "avg", "inputs": ["sep", "plain"]},
        {"class_name": f"SeparableConv{rank}D", "filters": 3, "kernel_size": 2, "strides": 2},
        {"class_name": "Flatten"},
        {"class_name": "Dense", "units": 2, "activation": "softmax"},
    ]  # fmt: skip
    return ModelDescription.from_dict({"name": "g", "input_shape": [*spatial, 3], "layers": layers})


@pytest.mark.parametrize("line", CHAINS)
def test_every_consumer_on_chains(line: str) -> None:
    check_network(parse_compact(line), exact_fields=True)


@pytest.mark.parametrize("rank", [1, 2])
def test_every_consumer_on_a_graph(rank: int, tmp_path: Path) -> None:
    check_network(graph(rank), exact_fields=True, onnx_dir=tmp_path if rank == 2 else None)


@pytest.mark.parametrize("rank", [1, 2])
def test_against_torch_depthwise_then_pointwise(rank: int) -> None:
    rng = np.random.default_rng(10 + rank)
    tried = 0
    for trial in range(10):
        spatial = [int(v) for v in rng.integers(5, 11, rank)]
        c, m, f = int(rng.integers(1, 5)), int(rng.integers(1, 4)), int(rng.integers(1, 6))
        k = [int(v) for v in rng.integers(1, 5, rank)]
        strided = trial % 2 == 0
        s = [int(v) for v in rng.integers(1, 4, rank)] if strided else [1] * rank
        d = [1] * rank if strided else [int(v) for v in rng.integers(1, 3, rank)]
        padding = ["same", "valid"][trial % 3 == 0]
        args = {"filters": f, "kernel_size": k, "strides": s, "dilation_rate": d}
        args |= {"padding": padding, "depth_multiplier": m, "use_bias": trial % 4 != 1}
        try:
            desc = ModelDescription.build("s", (*spatial, c), [(f"SeparableConv{rank}D", args)])
        except L.DescriptionError:
            continue  # a kernel larger than the map
        tried += 1
        info = desc.info[0]
        model = build_module(desc).double()
        sep = model._modules[info.layer.name]
        assert isinstance(sep, SeparableModule) and sep.depthwise.bias is None
        dw = sep.depthwise.weight.detach().numpy()  # (C * M, 1, *k)
        pw = sep.pointwise.weight.detach().numpy()  # (F, C * M, 1[, 1])
        bias = None if sep.pointwise.bias is None else sep.pointwise.bias.detach().numpy()
        x = rng.normal(size=(2, *spatial, c))
        pads = (
            [tf_same_pads(n, kk, ss, dd) for n, kk, ss, dd in zip(spatial, k, s, d, strict=True)]
            if padding == "same"
            else [(0, 0)] * rank
        )
        grouped = dw.transpose(*range(2, 2 + rank), 1, 0)  # (*k, 1, C * M)
        mid = torch_conv(x, grouped, None, pads=pads, stride=s, dilation=d, groups=c)
        ones = [1] * rank
        pointwise = pw.transpose(*range(2, 2 + rank), 1, 0)  # (1[, 1], C * M, F)
        want = torch_conv(mid, pointwise, bias, pads=[(0, 0)] * rank, stride=ones, dilation=ones)
        with torch.no_grad():
            got = model(torch.from_numpy(x).movedim(-1, 1)).movedim(1, -1).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
        # Keras' layouts and order, written out here
        keras = [keras_layout(dw, m), pointwise] + ([bias] if bias is not None else [])
        weights = info.layer.weights(info.in_shapes)
        names = ["depthwise_kernel", "pointwise_kernel", "bias"][: len(keras)]
        assert [(w.keras, w.shape) for w in weights] == [
            (n, a.shape) for n, a in zip(names, keras, strict=True)
        ]
        assert keras[0].shape == (*k, c, m) and keras[1].shape == (*ones, c * m, f)
        for w, a, t in zip(weights, keras, [dw, pw, bias], strict=False):
            np.testing.assert_array_equal(w.from_torch(t), a)
            np.testing.assert_array_equal(w.to_torch(a), t)
        arrays = dict(zip(names, keras, strict=True))
        got = info.layer.forward_numpy([x], arrays)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert tried >= 6


def test_keras_glorot_fans_of_each_kernel() -> None:
    """Depthwise (5, 5, 16, 3): fans 16 * 25 and 3 * 25; pointwise (1, 1, 48, 40): 48, 40."""
    torch.manual_seed(4)
    line = "Input(12,12,16) SeparableConv2D(40,5,depth_multiplier=3)"
    sep = build_module(parse_compact(line)).separable_conv2d
    for weight, limit in [
        (sep.depthwise.weight, math.sqrt(6 / (16 * 25 + 3 * 25))),
        (sep.pointwise.weight, math.sqrt(6 / (48 + 40))),
    ]:
        w = weight.detach().abs()
        assert limit * 0.97 < float(w.max()) <= limit
        assert abs(float(w.pow(2).mean()) - limit**2 / 3) < 0.1 * limit**2 / 3
    assert not sep.pointwise.bias.detach().any()


def test_fast_engine_runs_it_as_pytorch_with_the_plain_gradient() -> None:
    desc = parse_compact(
        "Input(10,10,3) SeparableConv2D(6,3,depth_multiplier=2,activation=relu) MaxPooling2D "
        "Flatten Dense(3,softmax)"
    )
    fast_step_matches_autograd(desc, ["separable_conv2d"])
    fast_step_matches_autograd(graph(1), ["sep", "separable_conv1d"])


def test_arguments_words_and_connections() -> None:
    for line, message in [
        ("Input(8,2) SeparableConv1D(2,3,2,dilation_rate=2)", "strides > 1 together with dila"),
        ("Input(8,8,1) SeparableConv2D(2,3,depth_multiplier=0)", "depth_multiplier must be at "),
        ("Input(8,8,1) SeparableConv2D(0,3)", "filters must be at least 1"),
        ("Input(8,8,1) SeparableConv2D(kernel_size=3)", "missing argument 'filters'"),
        ("Input(8,8,1) SeparableConv2D(2,3,padding=causal)", "padding must be one of valid"),
        ("Input(8,8,1) SeparableConv1D(2,3)", "needs a 1-D input with channels"),
    ]:
        with pytest.raises(L.DescriptionError, match=message):
            parse_compact(line)
    desc = parse_compact(
        "Input(9,9,3) SeparableConv2D(8,3,2,same,depth_multiplier=2,activation=elu)"
    )
    layer = desc.layers[0]
    assert isinstance(layer, L.Conv) and layer.describe() == (
        "SeparableConv2D 3x3 stride 2 x2 per channel then 1x1, same, elu"
    )
    row = layer_table(desc)[0]  # each unit reads the 3x3 window of every channel
    assert (row.fan_in, row.uses_per_weight) == (27, 25)
    assert row.params == 3 * 3 * 3 * 2 + 6 * 8 + 8 and row.field.size == (3, 3)


def test_hand_written_keras_config_imports(tmp_path: Path) -> None:
    """Keras 3.15's SeparableConv1D config, every key; its three arrays from
    model.weights.h5, the network against NumPy written out here."""
    rng = np.random.default_rng(6)
    cfg = {"depth_multiplier": 2, "filters": 5, "kernel_size": [3], "strides": [1]}
    cfg |= {"padding": "valid", "dilation_rate": [2], "activation": "relu", "use_bias": True}
    cfg |= DEPTHWISE_REST | {"pointwise_initializer": GLOROT, "pointwise_regularizer": None}
    cfg |= {"pointwise_constraint": None}
    head = [
        klayer("GlobalAveragePooling1D", "gap", data_format="channels_last", keepdims=False),
        klayer("Dense", "out", units=2, activation="linear", use_bias=True),
    ]
    depthwise, pointwise, bias, dense, dense_bias = (
        rng.normal(size=shape).astype(np.float32).astype(np.float64)  # as Keras stores them
        for shape in [(3, 4, 2), (1, 8, 5), (5,), (5, 2), (2,)]
    )
    group = "layers/separable_conv1d/vars"
    arrays = {f"{group}/0": depthwise, f"{group}/1": pointwise, f"{group}/2": bias}
    arrays |= {"layers/dense/vars/0": dense, "layers/dense/vars/1": dense_bias}
    layers = [klayer("SeparableConv1D", "sep", **cfg), *head]
    km = read_keras(keras_file(tmp_path / "sep.keras", layers, [12, 4], arrays))
    net = Network(km.description).double()
    net.load_state_dict({k: v.double() for k, v in km.state_dict.items()})
    x = rng.normal(size=(3, 12, 4))
    with torch.no_grad():
        got = net(torch.from_numpy(x).movedim(-1, 1)).numpy()
    mid = np.stack(  # channel c * 2 + m: channel c, dilation 2, correlated with [:, c, m]
        [ops.correlate(x[n, :, c], depthwise[:, c, m], dilation=2)
         for n in range(3) for c in range(4) for m in range(2)], axis=-1,
    ).reshape(8, 3, 8).transpose(1, 0, 2)  # fmt: skip
    maps = np.maximum(mid @ pointwise[0] + bias, 0)  # (3, 8, 5)
    want = maps.mean(axis=1) @ dense + dense_bias
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_keras_separable_average_1d_outputs() -> None:
    reproduces_keras("separable_average_1d")


def test_no_bias_or_activation_between_the_two_steps() -> None:
    """Keras adds no bias and applies no activation between the two steps."""
    desc = parse_compact("Input(6,1) SeparableConv1D(1,1,activation=relu)")
    model = build_module(desc).double()
    sep = model.separable_conv1d
    with torch.no_grad():
        sep.depthwise.weight.fill_(-1.0)
        sep.pointwise.weight.fill_(-2.0)
        sep.pointwise.bias.fill_(-0.5)
        x = torch.arange(6, dtype=torch.float64).reshape(1, 1, 6)
        got = model(x).flatten()
    # relu between the steps would zero -x first; a depthwise bias would shift it
    torch.testing.assert_close(got, F.relu(2.0 * x.flatten() - 0.5))

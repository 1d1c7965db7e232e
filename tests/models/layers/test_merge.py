"""Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate: against NumPy in
Keras' order, graphs with them through every consumer, and the errors a graph gets."""

from __future__ import annotations

from functools import reduce
from typing import Any

import numpy as np
import pytest
import torch

from cnnlab.models import ModelDescription, build_module
from cnnlab.models import layers as L

from .helpers import check_network

NUMPY = {
    "Add": lambda xs: reduce(np.add, xs),
    "Subtract": lambda xs: xs[0] - xs[1],
    "Multiply": lambda xs: reduce(np.multiply, xs),
    "Average": lambda xs: reduce(np.add, xs) / len(xs),
    "Maximum": lambda xs: reduce(np.maximum, xs),
    "Minimum": lambda xs: reduce(np.minimum, xs),
}


def branches(op: str, n: int, rank: int = 2, **merge: Any) -> ModelDescription:
    """``n`` convolutions of one input, merged by ``op``, then a head."""
    spatial = {1: [11], 2: [7, 6], 3: [4, 5, 6]}[rank]
    layers: list[dict[str, Any]] = [
        {"class_name": f"Conv{rank}D", "name": f"b{i}", "inputs": ["input"], "filters": 3,
         "kernel_size": i + 1, "padding": "same", "activation": "tanh"}
        for i in range(n)
    ]  # fmt: skip
    layers.append({"class_name": op, "name": "m", "inputs": [f"b{i}" for i in range(n)], **merge})
    layers += [
        {"class_name": "Flatten"},
        {"class_name": "Dense", "units": 2, "activation": "softmax"},
    ]
    return ModelDescription.from_dict({"name": "g", "input_shape": [*spatial, 2], "layers": layers})


@pytest.mark.parametrize("op", [*NUMPY, "Concatenate"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_every_consumer(op: str, rank: int) -> None:
    check_network(branches(op, 2 if op == "Subtract" else 3, rank), exact_fields=op == "Add")


@pytest.mark.parametrize("op", list(NUMPY))
def test_against_numpy(op: str) -> None:
    desc = branches(op, 2 if op == "Subtract" else 3)
    model = build_module(desc).double().eval()
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 2, 7, 6)))
    with torch.no_grad():
        h = {b: model._modules[b](x).movedim(1, -1).numpy() for b in desc.by_name["m"].inputs}
        ins = [h[n] for n in desc.by_name["m"].inputs]
        got = model.m(*[torch.from_numpy(a).movedim(-1, 1) for a in ins]).movedim(1, -1)
    np.testing.assert_allclose(got.numpy(), NUMPY[op](ins), rtol=1e-12)


@pytest.mark.parametrize("axis", [-1, 1, 2, 3, -2])
def test_concatenate_any_axis(axis: int) -> None:
    desc = ModelDescription.from_dict(
        {"name": "c", "input_shape": [4, 5, 2], "layers": [
            {"class_name": "Conv2D", "name": "a", "filters": 2, "kernel_size": 1},
            {"class_name": "Activation", "name": "b", "inputs": ["input"], "activation": "tanh"},
            {"class_name": "Concatenate", "inputs": ["a", "b"], "axis": axis},
        ]}
    )  # fmt: skip
    model = build_module(desc).double().eval()
    x = np.random.default_rng(axis + 5).normal(size=(3, 4, 5, 2))
    with torch.no_grad():
        got = model(torch.from_numpy(x).movedim(-1, 1)).movedim(1, -1).numpy()
        a = model.a(torch.from_numpy(x).movedim(-1, 1)).movedim(1, -1).numpy()
    want = np.concatenate([a, np.tanh(x)], axis=axis if axis > 0 else 4 + axis)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert desc.output_shape == want.shape[1:]


def _graph(*extra: dict[str, Any], outputs: Any = None) -> dict[str, Any]:
    """Two convolutions a (2 maps) and b (3 maps) of a 4x4x1 input, then ``extra``."""
    base = [
        {"class_name": "Conv2D", "name": "a", "filters": 2, "kernel_size": 1},
        {"class_name": "Conv2D", "name": "b", "inputs": ["input"], "filters": 3, "kernel_size": 1},
    ]
    out = {"name": "g", "input_shape": [4, 4, 1], "layers": [*base, *extra]}
    return out | ({"outputs": outputs} if outputs else {})


def _layer(cls: str, *inputs: str, **args: Any) -> dict[str, Any]:
    return {"class_name": cls, "inputs": list(inputs), **args}


BAD_GRAPHS = [
    (
        _graph(_layer("Add", "a", "b")),
        "layer 3 (Add): inputs of different shapes: 4x4x2, 4x4x3",
    ),
    (
        _graph(_layer("Concatenate", "a", "x")),
        "layer 3 (Concatenate 'concatenate'): input 'x' is not a layer",
    ),
    (_graph(_layer("Add", "a")), "merges two or more inputs, given 1"),
    (_graph(_layer("Conv2D", "a", "b", filters=1, kernel_size=1)), "takes one input, given 2"),
    (_graph(_layer("Subtract", "a", "a", "b")), "Subtract takes exactly 2 inputs"),
    (
        _graph(
            _layer("Concatenate", "a", "b", name="c"),
            _layer("Flatten", "c2", name="a2"),
            _layer("Flatten", "a2", name="c2"),
            outputs=["c"],
        ),
        "layers form a cycle: a2 -> c2 -> a2",
    ),
    (
        _graph(
            _layer("Concatenate", "a", "b", name="c"),
            _layer("Flatten", "b", name="f"),
            outputs=["c"],
        ),
        "layer 4 (Flatten 'f'): its output is never used",
    ),
    (_graph(_layer("Concatenate", "a", "b", name="a")), "the name 'a' is used twice"),
    (_graph(_layer("Concatenate", "a", "b"), outputs=["a", "b"]), "only networks with one output"),
    (_graph(_layer("Concatenate", "a", "b", axis=0)), "axis must be at least 1"),
    (_graph(_layer("Concatenate", "a", "b", axis=2)), "must agree on every axis but axis 2"),
]


@pytest.mark.parametrize("case", range(len(BAD_GRAPHS)))
def test_malformed_graphs_name_the_layer(case: int) -> None:
    data, message = BAD_GRAPHS[case]
    with pytest.raises(L.DescriptionError) as info:
        ModelDescription.from_dict(data)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_listed_out_of_order_runs_in_order() -> None:
    data = {"name": "o", "input_shape": [6, 1], "outputs": ["d"], "layers": [
        {"class_name": "Dense", "name": "d", "inputs": ["f"], "units": 2, "activation": "softmax"},
        {"class_name": "Flatten", "name": "f", "inputs": ["c"]},
        {"class_name": "Conv1D", "name": "c", "inputs": ["input"], "filters": 2, "kernel_size": 3},
    ]}  # fmt: skip
    desc = ModelDescription.from_dict(data)
    assert [x.name for x in desc.layers] == ["c", "f", "d"] and desc.is_chain
    assert ModelDescription.from_dict(desc.to_dict()) == desc

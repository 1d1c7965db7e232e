"""LeakyReLU, PReLU, ELU: against Keras' definitions written out in NumPy here and PyTorch's
functional ops in float64, their Keras configs (Keras 3.15's and Keras 2's names), and
through every consumer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.models import DescriptionError, ModelDescription, parse_compact
from cnnlab.models import layers as L
from cnnlab.models.layers.activation_layers import ELU, LeakyReLU, PReLU

from .helpers import (
    check_fields,
    check_network,
    check_numpy,
    check_weights,
    keras_entry,
    keras_import,
    randomised,
)

CASES = [
    "Input(10) Dense(6) LeakyReLU PReLU ELU(0.5) Dense(3,softmax)",
    "Input(9,3) Conv1D(4,3) PReLU LeakyReLU(0.1) Conv1D(2,3) ELU Flatten Dense(2,softmax)",
    "Input(7,6,2) Conv2D(3,3) PReLU(shared_axes=1x2) ELU(2) MaxPooling2D LeakyReLU(1.5) "
    "Flatten Dense(2,softmax)",
    "Input(4,5,3,2) Conv3D(3,2) PReLU(shared_axes=3) LeakyReLU GlobalMaxPooling3D Dense(2)",
]
SHAPES = [(5, 7), (4, 9, 3), (3, 6, 5, 2), (2, 4, 3, 5, 3)]  # (N, *spatial, C), 0-3 spatial axes


def _residual() -> ModelDescription:
    return ModelDescription.from_dict(
        {
            "name": "prelu_residual",
            "input_shape": [8, 8, 3],
            "layers": [
                {"class_name": "Conv2D", "name": "c1", "filters": 4, "kernel_size": 3,
                 "padding": "same"},
                {"class_name": "PReLU", "name": "p1"},
                {"class_name": "Conv2D", "name": "c2", "filters": 4, "kernel_size": 3,
                 "padding": "same"},
                {"class_name": "Add", "name": "sum", "inputs": ["c2", "p1"]},
                {"class_name": "PReLU", "name": "p2", "shared_axes": [1, 2]},
                {"class_name": "GlobalAveragePooling2D", "name": "gap"},
                {"class_name": "Dense", "name": "out", "units": 2, "activation": "softmax"},
            ],
        }
    )  # fmt: skip


def _last(t: torch.Tensor) -> np.ndarray:
    return (t.movedim(1, -1) if t.ndim > 2 else t).detach().numpy()


def _first(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x)
    return t.movedim(-1, 1) if x.ndim > 2 else t


def _layer(line: str, shape: tuple[int, ...]) -> tuple[L.Layer, ModelDescription]:
    desc = parse_compact(f"Input({','.join(map(str, shape))}) {line}")
    return desc.layers[0], desc


@pytest.mark.parametrize("line", CASES)
def test_every_consumer(line: str) -> None:
    # alpha is Keras' zeros here: a PReLU is a ReLU, whose zeros hide part of a field
    check_network(parse_compact(line), exact_fields=False)


def test_a_graph_through_every_consumer() -> None:
    check_network(_residual(), exact_fields=False)


@pytest.mark.parametrize("line", [*CASES, "graph"])
def test_every_consumer_with_random_alpha(line: str) -> None:
    """Keras initialises alpha to zeros (PReLU = ReLU then): the engines with it random,
    and every unit's gradient then reaches its whole field."""
    desc = _residual() if line == "graph" else parse_compact(line)
    model = randomised(desc)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if key.endswith(".alpha"):
                t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype))
    check_numpy(desc, model)
    check_weights(desc, model)
    check_fields(desc, model, exact="MaxPooling" not in line)  # max pooling: one input


@pytest.mark.parametrize("slope", [0.3, 0.0, 0.01, 1.0, 2.5])
@pytest.mark.parametrize("shape", SHAPES)
def test_leaky_relu_against_keras_and_torch(slope: float, shape: tuple[int, ...]) -> None:
    layer, desc = _layer(f"LeakyReLU({slope})", shape[1:])
    x = np.random.default_rng(0).normal(0, 2, shape)
    x.flat[:3] = [0.0, -0.0, 1.0]
    want = np.where(x > 0, x, slope * x)  # tf.nn.leaky_relu's kernel
    np.testing.assert_array_equal(layer.forward_numpy([x], {}), want)
    got = _last(layer.module(desc.info[0])(_first(x)))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(_last(F.leaky_relu(_first(x), slope)), want)


@pytest.mark.parametrize("alpha", [1.0, 0.5, 3.0, -0.7])
@pytest.mark.parametrize("shape", SHAPES)
def test_elu_against_keras_and_torch(alpha: float, shape: tuple[int, ...]) -> None:
    layer, desc = _layer(f"ELU({alpha})", shape[1:])
    x = np.random.default_rng(1).normal(0, 2, shape)
    want = np.where(x > 0, x, alpha * (np.exp(x) - 1))  # Keras' ops.elu
    np.testing.assert_allclose(layer.forward_numpy([x], {}), want, rtol=1e-13, atol=1e-15)
    got = _last(layer.module(desc.info[0])(_first(x)))
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize(
    ("shape", "shared", "alpha_shape"),
    [
        ((5, 7), None, (7,)),
        ((5, 7), [1], (1,)),
        ((4, 9, 3), None, (9, 3)),
        ((4, 9, 3), 1, (1, 3)),
        ((3, 6, 5, 2), [1, 2], (1, 1, 2)),  # Keras' docstring: shared over the map
        ((3, 6, 5, 2), [3], (6, 5, 1)),
        ((3, 6, 5, 2), [2, 3], (6, 1, 1)),
        ((2, 4, 3, 5, 3), [1, 2, 3], (1, 1, 1, 3)),
    ],
)
def test_prelu_alpha_as_keras_builds_it(
    shape: tuple[int, ...], shared: int | list[int] | None, alpha_shape: tuple[int, ...]
) -> None:
    desc = ModelDescription.from_dict(
        {"name": "p", "input_shape": list(shape[1:]),
         "layers": [{"class_name": "PReLU", "shared_axes": shared}]}
    )  # fmt: skip
    info = desc.info[0]
    (w,) = info.layer.weights(info.in_shapes)
    assert (w.keras, w.shape, w.trainable) == ("alpha", alpha_shape, True)
    rng = np.random.default_rng(2)
    alpha = rng.normal(0, 1, alpha_shape)
    x = rng.normal(0, 2, shape)
    want = np.where(x < 0, alpha * x, x)  # Keras' formula: alpha * x for x < 0
    np.testing.assert_allclose(info.layer.forward_numpy([x], {"alpha": alpha}), want, rtol=1e-14)
    module = info.layer.module(info).double()
    with torch.no_grad():
        module.alpha.copy_(torch.from_numpy(w.to_torch(alpha)))
    np.testing.assert_allclose(_last(module(_first(x))), want, rtol=1e-14)
    if alpha_shape[:-1] == (1,) * (len(alpha_shape) - 1) and len(shape) > 2:
        per_channel = torch.from_numpy(alpha.reshape(-1))  # PyTorch's own per-channel PReLU
        np.testing.assert_allclose(_last(F.prelu(_first(x), per_channel)), want, rtol=1e-14)


def test_prelu_starts_as_keras_does_and_learns_alpha() -> None:
    desc = parse_compact("Input(6,2) PReLU Flatten Dense(2,softmax)")
    model = randomised(desc).train()
    assert torch.equal(model.p_re_lu.alpha, torch.zeros(2, 6, dtype=torch.float64))
    x = torch.randn(3, 2, 6, dtype=torch.float64)
    model(x).sum().backward()
    grad = model.p_re_lu.alpha.grad
    assert grad is not None and grad.abs().sum() > 0
    assert desc.info[0].trainable == 12


def test_keras_configs_import() -> None:
    zeros = {"module": "keras.initializers", "class_name": "Zeros", "config": {}}
    entries = [  # as Keras 3.15 writes them; then Keras 2's names
        keras_entry("LeakyReLU", "leaky_re_lu", negative_slope=0.1),
        keras_entry("PReLU", "p_re_lu", alpha_initializer=zeros, alpha_regularizer=None,
                    alpha_constraint=None, shared_axes=[1, 2]),
        keras_entry("ELU", "elu"),  # Keras 3 writes no alpha (ELU has no get_config)
        keras_entry("LeakyReLU", "leaky_re_lu_1", alpha=0.25),
        keras_entry("ELU", "elu_1", alpha=0.5),
    ]  # fmt: skip
    desc = keras_import((6, 5, 3), *entries)
    assert desc.layers == (
        LeakyReLU(name="leaky_re_lu", negative_slope=0.1),
        PReLU(name="p_re_lu", shared_axes=(1, 2)),
        ELU(name="elu", alpha=1.0),
        LeakyReLU(name="leaky_re_lu_1", negative_slope=0.25),
        ELU(name="elu_1", alpha=0.5),
    )
    assert desc.info[1].trainable == 3


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("LeakyReLU(negative_slope=-0.1)", "negative_slope"),
        ("LeakyReLU(alpha=0.2)", "alpha"),  # Keras 2's name: Keras import only
        ("PReLU(shared_axes=0)", "shared_axes"),
        ("PReLU(shared_axes=-1)", "shared_axes"),
        ("PReLU(shared_axes=4)", "shared_axes 4"),
        ("ELU(alpha=x)", "alpha"),
    ],
)
def test_bad_arguments_are_one_line_naming_the_layer(line: str, key: str) -> None:
    with pytest.raises(DescriptionError, match=r"^layer 1 \((LeakyReLU|PReLU|ELU)\): ") as e:
        parse_compact(f"Input(5,4,3) {line}")
    assert "\n" not in str(e.value) and key in str(e.value)


def test_labels() -> None:
    layers = parse_compact("Input(4) LeakyReLU LeakyReLU(0.02) PReLU ELU ELU(0.5)").layers
    assert [x.label() for x in layers] == [
        "leaky_relu(0.3)", "leaky_relu(0.02)", "prelu", "elu", "elu(0.5)",
    ]  # fmt: skip

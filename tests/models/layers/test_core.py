"""Dense, Dropout, Activation, ReLU, Softmax, Rescaling: against NumPy written out here
(ReLU's arguments as Keras 3's ``ops.relu`` computes them, step by step) and PyTorch's
functional ops, and through every consumer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import erf

from cnnlab.engine.plan import plan
from cnnlab.models import DescriptionError, build_module, parse_compact
from cnnlab.models import layers as L

from .helpers import check_network, keras_entry, keras_import

CASES = [
    "Input(12) Rescaling(0.5,-1) Dense(6,tanh) Dropout(0.3) Dense(4,use_bias=false) "
    "Activation(softplus) Dense(3) Softmax",
    "Input(7,3) ReLU Activation(hard_sigmoid) Flatten Dense(5,mish) Dense(2,softmax)",
    "Input(9,2) Conv1D(3,3) ReLU(max_value=6) ReLU(negative_slope=0.3,threshold=0.2) "
    "GlobalMaxPooling1D Dense(2,softmax)",
    "Input(6,5,2) ReLU(1.5,0.25,0.5) Conv2D(3,3) ReLU(0,0.1) Flatten Dense(2,softmax)",
    "Input(4,4,3,2) Conv3D(2,2) ReLU(max_value=0.5,threshold=0.7) GlobalAveragePooling3D "
    "Dense(2,softmax)",
]

# Keras 3's definitions (keras.activations), written out independently
REFERENCE = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.minimum(np.maximum(x, 0), 6),
    "elu": lambda x: np.where(x > 0, x, np.exp(x) - 1),
    "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * (np.exp(x) - 1)),
    "gelu": lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2))),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "swish": lambda x: x / (1 + np.exp(-x)),
    "mish": lambda x: x * np.tanh(np.log1p(np.exp(x))),
    "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "hard_sigmoid": lambda x: np.clip(x / 6 + 0.5, 0, 1),
    "hard_silu": lambda x: x * np.clip(x / 6 + 0.5, 0, 1),
    "hard_swish": lambda x: x * np.clip(x / 6 + 0.5, 0, 1),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "exponential": np.exp,
    "softmax": lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True),
}


@pytest.mark.parametrize("line", CASES)
def test_every_consumer(line: str) -> None:
    check_network(parse_compact(line), exact_fields=False)


def test_every_activation_is_defined_here_too() -> None:
    assert set(REFERENCE) == set(L.ACTIVATIONS)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_activation_in_both_engines(name: str) -> None:
    x = np.random.default_rng(0).normal(0, 3, (5, 4, 3))  # (N, L, C): softmax over C
    want = REFERENCE[name](x)
    np.testing.assert_allclose(L.activate_numpy(x, name), want, rtol=1e-12, atol=1e-14)
    got = L.activate(torch.from_numpy(x).movedim(-1, 1), name).movedim(1, -1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_dense_and_rescaling_against_numpy() -> None:
    desc = parse_compact("Input(6) Rescaling(2.5,-0.5) Dense(4,elu)")
    model = build_module(desc).double()
    x = np.random.default_rng(1).normal(size=(3, 6))
    w, b = model.dense.weight.detach().numpy(), model.dense.bias.detach().numpy()
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, REFERENCE["elu"]((x * 2.5 - 0.5) @ w.T + b), rtol=1e-12)


def test_dropout_in_training_and_inference() -> None:
    model = build_module(parse_compact("Input(4000) Dropout(0.25)"))
    x = torch.ones(2, 4000)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), x)
        y = model.train()(x)
    kept = y != 0
    assert 0.72 < kept.float().mean() < 0.78
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.75))


def keras_relu(
    x: np.ndarray,
    negative_slope: float = 0.0,
    max_value: float | None = None,
    threshold: float = 0.0,
) -> np.ndarray:
    """keras/src/activations/activations.py ``ReLU.static_call``, step by step."""
    if negative_slope != 0 and max_value is None and threshold == 0:
        return np.where(x > 0, x, negative_slope * x)  # tf.nn.leaky_relu
    negative_part = np.maximum(threshold - x, 0)
    clip_max = max_value is not None
    if threshold != 0:
        y = x * (x > threshold)
    elif max_value == 6:
        y, clip_max = np.clip(x, 0, 6), False  # relu6
    else:
        y = np.maximum(x, 0)
    if clip_max:
        y = np.clip(y, 0, max_value)
    return y - negative_slope * negative_part if negative_slope != 0 else y


RELU_ARGS = [  # (max_value, negative_slope, threshold)
    (None, 0.0, 0.0),
    (6.0, 0.0, 0.0),
    (10.0, 0.5, 0.0),
    (None, 0.3, 0.0),
    (None, 0.0, 1.5),
    (2.0, 0.2, 0.5),
    (0.5, 0.1, 1.0),  # max_value below the threshold: max_value above it
    (0.0, 0.0, 0.0),
    (None, 2.0, 0.75),
]


@pytest.mark.parametrize(("top", "slope", "threshold"), RELU_ARGS)
def test_relu_arguments_as_keras_computes_them(
    top: float | None, slope: float, threshold: float
) -> None:
    args = {"max_value": top, "negative_slope": slope, "threshold": threshold}
    layer = L.parse_layer("ReLU", args, "r", "here")
    rng = np.random.default_rng(3)
    # quarter steps hit 0, the threshold and max_value exactly; normal values elsewhere
    grid = np.arange(-40, 41) / 4
    for shape in [(81,), (3, 81), (2, 81, 4)]:
        x = np.resize(np.concatenate([grid, rng.normal(0, 4, 81)]), shape)
        want = keras_relu(x, slope, top, threshold)
        np.testing.assert_array_equal(layer.forward_numpy([x], {}), want)
        t = torch.from_numpy(x)
        t = t.movedim(-1, 1) if x.ndim > 2 else t
        got = layer.module(None).double()(t)  # type: ignore[arg-type]
        got = got.movedim(1, -1) if x.ndim > 2 else got
        np.testing.assert_array_equal(got.numpy(), want)


def test_relu_matches_keras_docstring_examples() -> None:
    x = np.array([-10, -5, 0.0, 5, 10])
    examples = [  # keras.layers.ReLU's and keras.activations.relu's examples
        ({"max_value": 10, "negative_slope": 0.5}, [-5, -2.5, 0, 5, 10]),
        ({}, [0, 0, 0, 5, 10]),
        ({"negative_slope": 0.5}, [-5, -2.5, 0, 5, 10]),
        ({"max_value": 5.0}, [0, 0, 0, 5, 5]),
        ({"threshold": 5.0}, [0, 0, 0, 0, 10]),
    ]
    for args, want in examples:
        layer = L.parse_layer("ReLU", args, "r", "here")
        np.testing.assert_array_equal(layer.forward_numpy([x], {}), want)


def test_relu_bad_arguments_are_one_line_naming_the_layer() -> None:
    for bad in ["max_value=-1", "negative_slope=-0.1", "threshold=-2", "max_value=x"]:
        with pytest.raises(DescriptionError, match=r"^layer 1 \(ReLU\): ") as e:
            parse_compact(f"Input(4) ReLU({bad})")
        assert "\n" not in str(e.value) and bad.split("=")[0] in str(e.value)


def test_relu_labels_and_activation_names() -> None:
    def relu(line: str) -> L.ReLU:
        layer = parse_compact(f"Input(4) {line}").layers[0]
        assert isinstance(layer, L.ReLU)
        return layer

    assert (relu("ReLU").label(), relu("ReLU").activation_name) == ("relu", "relu")
    assert (relu("ReLU(6)").label(), relu("ReLU(6)").activation_name) == ("relu6", "relu6")
    odd = relu("ReLU(max_value=0,threshold=0.5)")
    assert (odd.label(), odd.activation_name) == ("relu(max_value=0, threshold=0.5)", None)


def test_only_a_plain_relu_goes_to_the_relu_kernel() -> None:
    def block(relu: str) -> str:
        desc = parse_compact(f"Input(8,8,2) Conv2D(4,3) {relu} Flatten Dense(2,softmax)")
        return plan(desc).blocks[1].kind

    assert block("ReLU") == "activation"
    assert block("ReLU(max_value=6)") == "pytorch"
    assert block("ReLU(negative_slope=0.1)") == "pytorch"
    assert block("ReLU(threshold=1)") == "pytorch"


def test_relu_keras_config_imports() -> None:
    # as Keras 3.15 writes ReLU(max_value=6) (mobilenet_block.keras)
    relu6 = keras_entry("ReLU", "re_lu", max_value=6.0, negative_slope=0.0, threshold=0.0)
    odd = keras_entry("ReLU", "re_lu_1", max_value=None, negative_slope=0.2, threshold=1.0)
    desc = keras_import((5, 3), relu6, odd)
    assert desc.layers == (
        L.ReLU(name="re_lu", max_value=6.0, negative_slope=0.0, threshold=0.0),
        L.ReLU(name="re_lu_1", max_value=None, negative_slope=0.2, threshold=1.0),
    )

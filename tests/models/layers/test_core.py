"""Dense, Dropout, Activation, ReLU, Softmax, Rescaling: against NumPy written out here
and PyTorch's functional ops, and through every consumer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import erf

from cnnlab.models import build_module, parse_compact
from cnnlab.models import layers as L

from .helpers import check_network

CASES = [
    "Input(12) Rescaling(0.5,-1) Dense(6,tanh) Dropout(0.3) Dense(4,use_bias=false) "
    "Activation(softplus) Dense(3) Softmax",
    "Input(7,3) ReLU Activation(hard_sigmoid) Flatten Dense(5,mish) Dense(2,softmax)",
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

"""BatchNormalization: Keras' formulas (biased variance, moving statistics with Keras'
momentum) written out in NumPy here, and through every consumer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.models import build_module, parse_compact
from cnnlab.models import layers as L

from .helpers import check_network

CASES = [
    "Input(9,3) BatchNormalization(epsilon=0.01) Conv1D(2,3) BatchNormalization(center=false) "
    "Flatten Dense(2,softmax)",
    "Input(5,6,2) BatchNormalization(scale=false,momentum=0.5) GlobalAveragePooling2D "
    "Dense(2,softmax)",
]


@pytest.mark.parametrize("line", CASES)
def test_every_consumer(line: str) -> None:
    check_network(parse_compact(line), exact_fields=True)


def test_training_step_as_keras_defines_it() -> None:
    model = build_module(parse_compact("Input(4,5,3) BatchNormalization(momentum=0.9)")).double()
    bn = model.batch_normalization
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64))
        bn.bias.copy_(torch.tensor([0.0, -1.0, 0.3], dtype=torch.float64))
    x = np.random.default_rng(2).normal(1, 2, (6, 4, 5, 3))
    y = model.train()(torch.from_numpy(x).movedim(-1, 1)).detach().movedim(1, -1).numpy()
    mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))  # the biased variance, as Keras
    want = (x - mean) / np.sqrt(var + 1e-3) * [1.0, 2.0, 0.5] + [0.0, -1.0, 0.3]
    np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * var, rtol=1e-12)


def test_keras_axis_must_be_the_channels() -> None:
    layer = L.parse_layer("BatchNormalization", {}, "bn", "here")
    desc = parse_compact("Input(4,4,2) BatchNormalization")
    assert layer.check_keras({"axis": -1}, desc.info[0]) is None
    assert layer.check_keras({"axis": 3}, desc.info[0]) is None
    assert "axis=1 is not supported" in str(layer.check_keras({"axis": 1}, desc.info[0]))

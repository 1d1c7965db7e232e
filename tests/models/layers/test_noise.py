"""SpatialDropout1D/2D/3D and GaussianNoise: the identity at inference; in training, the
distribution Keras defines (whole channels dropped per example and the rest scaled; added
normal noise of the given deviation) within binomial and normal tolerances, reproducible
under ``torch.manual_seed``; Keras 3.15's configs; through every consumer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cnnlab.errors import CnnlabError
from cnnlab.models import DescriptionError, build_module, parse_compact
from cnnlab.models.layers.noise import GaussianNoise, SpatialDropout

from .helpers import check_network, keras_entry, keras_import

CASES = [
    "Input(9,3) Conv1D(4,3) SpatialDropout1D(0.3) GaussianNoise(0.1) Flatten Dense(2,softmax)",
    "Input(7,6,2) GaussianNoise(0.5) Conv2D(3,3) SpatialDropout2D(0.5) AveragePooling2D "
    "Flatten Dense(2,softmax)",
    "Input(4,5,3,2) SpatialDropout3D(0.2) Conv3D(3,2) GaussianNoise(1) GlobalAveragePooling3D "
    "Dense(2)",
    "Input(6) GaussianNoise(0.2) Dense(4,tanh) GaussianNoise(0) Dense(2,softmax)",
]
SPATIAL = {1: (7,), 2: (5, 4), 3: (3, 4, 2)}


@pytest.mark.parametrize("line", CASES)
def test_every_consumer(line: str) -> None:
    check_network(parse_compact(line), exact_fields=True)


def _module(line: str) -> torch.nn.Module:
    return build_module(parse_compact(line)).double()


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_spatial_dropout_is_the_identity_at_inference(rank: int) -> None:
    spatial = SPATIAL[rank]
    model = _module(f"Input({','.join(map(str, (*spatial, 6)))}) SpatialDropout{rank}D(0.6)")
    x = torch.randn(4, 6, *spatial, dtype=torch.float64)
    assert torch.equal(model.eval()(x), x)
    layer = model.description.layers[0]
    a = np.random.default_rng(0).normal(size=(4, *spatial, 6))
    assert layer.forward_numpy([a], {}) is a


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_spatial_dropout_drops_whole_channels_per_example(rate: float, rank: int) -> None:
    spatial = SPATIAL[rank]
    n, c = 40, 50  # 2,000 feature maps
    model = _module(f"Input({','.join(map(str, (*spatial, c)))}) SpatialDropout{rank}D({rate})")
    torch.manual_seed(0)
    x = torch.rand(n, c, *spatial, dtype=torch.float64) + 0.5  # never 0
    with torch.no_grad():
        ratio = (model.train()(x) / x).reshape(n, c, -1)
    # every map is dropped (0) or kept and scaled by 1 / (1 - rate) as a whole
    first = ratio[:, :, :1]
    assert torch.allclose(ratio, first.expand_as(ratio), rtol=0, atol=1e-12)
    kept = first[:, :, 0] != 0
    assert torch.allclose(first[kept], torch.tensor(1 / (1 - rate), dtype=torch.float64))
    dropped = 1 - kept.double().mean().item()
    sd = math.sqrt(rate * (1 - rate) / (n * c))
    assert abs(dropped - rate) < 5 * sd, (dropped, rate)
    # per example: the examples' masks differ
    assert len({tuple(row.tolist()) for row in kept}) > n // 2


def test_spatial_dropout_is_reproducible_under_the_seed() -> None:
    model = _module("Input(6,5,8) SpatialDropout2D(0.5)").train()
    x = torch.ones(10, 8, 6, 5, dtype=torch.float64)
    torch.manual_seed(3)
    a = model(x)
    torch.manual_seed(3)
    b = model(x)
    torch.manual_seed(4)
    c = model(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_rate_and_stddev_zero_are_the_identity_in_training() -> None:
    model = _module("Input(5,3) SpatialDropout1D(0) GaussianNoise(0)").train()
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    assert torch.equal(model(x), x)


@pytest.mark.parametrize("stddev", [0.05, 0.3, 1.0])
def test_gaussian_noise_in_training_only(stddev: float) -> None:
    model = _module(f"Input(50,20,4) GaussianNoise({stddev})")
    x = torch.randn(50, 4, 50, 20, dtype=torch.float64)
    assert torch.equal(model.eval()(x), x)
    a = np.random.default_rng(1).normal(size=(2, 50, 20, 4))
    assert model.description.layers[0].forward_numpy([a], {}) is a
    torch.manual_seed(0)
    with torch.no_grad():
        noise = (model.train()(x) - x).numpy().ravel()  # 200,000 draws
    n = noise.size
    assert abs(noise.mean()) < 5 * stddev / math.sqrt(n)
    # the sample deviation's own deviation is about stddev / sqrt(2n)
    assert abs(noise.std() - stddev) < 5 * stddev / math.sqrt(2 * n)
    # a fresh draw per value: neighbours uncorrelated
    assert abs(np.corrcoef(noise[:-1], noise[1:])[0, 1]) < 5 / math.sqrt(n)
    torch.manual_seed(0)
    with torch.no_grad():
        again = (model(x) - x).numpy().ravel()
    np.testing.assert_array_equal(again, noise)


def test_keras_configs_import() -> None:
    entries = [  # as Keras 3.15 writes them
        keras_entry("SpatialDropout2D", "spatial_dropout2d", rate=0.25, seed=None,
                    data_format="channels_last"),
        keras_entry("GaussianNoise", "gaussian_noise", stddev=0.1, seed=42),
    ]  # fmt: skip
    desc = keras_import((6, 5, 3), *entries)
    assert desc.layers == (
        SpatialDropout(name="spatial_dropout2d", rank=2, rate=0.25),
        GaussianNoise(name="gaussian_noise", stddev=0.1),
    )
    first = keras_entry("SpatialDropout2D", "s", rate=0.25, data_format="channels_first")
    with pytest.raises(CnnlabError, match="data_format='channels_first' is not supported"):
        keras_import((6, 5, 3), first)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("Input(5,4,3) SpatialDropout2D(1.5)", "rate must be in"),
        ("Input(5,4,3) SpatialDropout2D", "missing argument 'rate'"),
        ("Input(5,3) SpatialDropout2D(0.5)", "needs a 2-D input"),
        ("Input(5,4,3) SpatialDropout1D(0.5)", "needs a 1-D input"),
        ("Input(5,4,3) GaussianNoise(2)", "stddev must be in [0, 1]"),
        ("Input(5,4,3) GaussianNoise(x)", "stddev must be a number"),
    ],
)
def test_bad_arguments_are_one_line_naming_the_layer(line: str, words: str) -> None:
    named = r"^layer 1 \((SpatialDropout\dD|GaussianNoise)\): "
    with pytest.raises(DescriptionError, match=named) as e:
        parse_compact(line)
    assert "\n" not in str(e.value) and words in str(e.value)

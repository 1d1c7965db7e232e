"""The layer walk: feature-map layers and their labels, derived from any description."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from model_zoo import ZOO  # the description zoo (chapter, keras-zoo, random)

from cnnlab.analysis.layer_walk import describe, feature_map_layers, map_outputs
from cnnlab.analysis.receptive import receptive_fields
from cnnlab.engine.numpy_engine import from_torch
from cnnlab.models import build_module, get, parse_compact
from cnnlab.models import layers as L


def _labels(name: str) -> list[str]:
    return [m.label for m in feature_map_layers(ZOO[name])]


def test_chapter_cases() -> None:
    assert _labels("case1") == [
        "conv1 (Conv2D 3x3, relu): 16 feature maps of 26x26",
        "pool1 (MaxPooling2D 2x2): 16 feature maps of 13x13",
        "conv2 (Conv2D 3x3, relu): 64 feature maps of 11x11",
        "pool2 (MaxPooling2D 2x2): 64 feature maps of 5x5",
    ]
    walk = feature_map_layers(get("case2"))
    assert [(m.name, m.kind, m.output, m.jump) for m in walk] == [
        ("conv1", "conv", "conv1", (1, 1)),
        ("pool1", "pool", "pool1", (2, 2)),
        ("conv2", "conv", "conv2", (2, 2)),
        ("pool2", "pool", "pool2", (4, 4)),
    ]


def test_separate_activations_and_batch_norm_are_folded_in() -> None:
    assert _labels("speedrun") == [
        "conv1 (Conv2D 5x5 stride 2): 32 feature maps of 14x14",
        "pool1 (MaxPooling2D 2x2, relu): 32 feature maps of 7x7",
        "conv2 (Conv2D 3x3, same): 64 feature maps of 7x7",
        "pool2 (MaxPooling2D 2x2, BatchNormalization, relu): 64 feature maps of 3x3",
    ]
    walk = feature_map_layers(get("speedrun"))
    assert [m.output for m in walk] == ["conv1", "relu1", "conv2", "relu2"]
    assert [ly.name for ly in walk[3].followers] == ["bn2", "relu2"]
    assert _labels("conv2d_bn_dilated") == [
        "conv2d (Conv2D 3x3 dilation 2, relu, BatchNormalization): 8 feature maps of 24x24",
        "max_pooling2d (MaxPooling2D 3x3 stride 2, same): 8 feature maps of 12x12",
        "conv2d_1 (Conv2D 3x3, relu): 12 feature maps of 10x10",
    ]


def test_labels_in_every_rank() -> None:
    assert _labels("conv2d_same_strides")[0] == (
        "conv2d (Conv2D 5x5 stride 2, same, relu): 8 feature maps of 14x14"
    )
    assert _labels("conv1d_timeseries") == [
        "conv1d (Conv1D 7, same, relu): 16 feature maps of length 100",
        "max_pooling1d (MaxPooling1D 2): 16 feature maps of length 50",
        "conv1d_1 (Conv1D 5 stride 2, relu): 32 feature maps of length 23",
    ]
    assert (
        _labels("conv3d_video")[2] == "conv3d_1 (Conv3D 1x3x3, same, relu): 8 feature maps of 3x7x7"
    )
    desc = parse_compact("Input(20,20,3) Conv2D(1,4x2,strides=2x1,padding=same) Activation(linear)")
    assert [m.label for m in feature_map_layers(desc)] == [
        "conv2d (Conv2D 4x2 stride 2x1, same): 1 feature map of 10x20"
    ]
    pool = L.Pool(
        name="p", rank=2, kind="average", pool_size=(3, 3), strides=(1, 1), padding="valid"
    )
    assert describe(pool, [L.Activation(name="a", activation="tanh")]) == (
        "AveragePooling2D 3x3 stride 1, tanh"
    )


@pytest.mark.parametrize("name", list(ZOO))
def test_walk_matches_the_engine_and_the_fields(name: str, global_random_seed: int) -> None:
    desc = ZOO[name]
    walk = feature_map_layers(desc)
    fields = receptive_fields(desc)
    assert [m.layer for m in walk] == [ly for ly in desc.layers if isinstance(ly, L.Conv | L.Pool)]
    engine = from_torch(build_module(desc))
    x = np.random.default_rng(0).random((2, *desc.input_shape), dtype=np.float32)
    outputs = dict(engine.activations(x))
    pairs = list(map_outputs(walk, engine.activations(x)))
    assert [m for m, _ in pairs] == walk
    for m, maps in pairs:
        assert maps.shape == (2, *m.shape)
        np.testing.assert_array_equal(maps, outputs[m.output])
        assert m.field == fields[m.index] and m.jump == fields[m.index].jump
        assert m.output == (m.followers[-1].name if m.followers else m.name)
        chain = [m.name, *(f.name for f in m.followers)]
        for before, after in itertools.pairwise(chain):  # each the only reader
            assert desc.consumers[before] == (after,) and desc.by_name[after].inputs == (before,)
    json.dumps([m.as_dict() for m in walk])  # plain JSON for the web page


def test_networks_without_maps() -> None:
    assert feature_map_layers(parse_compact("Input(12) Dense(4) Dense(2,softmax)")) == []

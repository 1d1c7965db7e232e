"""Cropping1D/2D/3D: Keras' forms of ``cropping``, against NumPy slicing written out, Keras 3
configs, and through every consumer (receptive fields exact against autograd)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cnnlab.errors import CnnlabError
from cnnlab.interop.keras_config import translate
from cnnlab.models import ModelDescription, build_module, parse_compact
from cnnlab.models import layers as L
from cnnlab.models.layers.cropping import Cropping

from .helpers import check_network, keras_sequential, one_line_error

CHAINS = [
    "Input(11,2) Conv1D(3,3) Cropping1D(cropping=2x1) Conv1D(2,2) Flatten Dense(2,softmax)",
    "Input(9,8,2) Conv2D(3,2,2) Cropping2D Cropping2D(1) Conv2D(2,2) Flatten Dense(3,softmax)",
    "Input(6,7,5,1) Cropping3D Conv3D(2,2) Flatten Dense(2,softmax)",
]


@pytest.mark.parametrize("line", CHAINS)
def test_chains_through_every_consumer(line: str) -> None:
    check_network(parse_compact(line), exact_fields=True)


def test_asymmetric_crops_through_every_consumer() -> None:
    crops = {1: [0, 3], 2: [[2, 0], [1, 3]], 3: [[0, 1], 2, [1, 0]]}
    for rank, cropping in crops.items():
        spatial = [9, 8, 7][:rank]
        layers = [
            (f"Conv{rank}D", {"filters": 2, "kernel_size": 2}),
            (f"Cropping{rank}D", {"cropping": cropping}),
            (f"Conv{rank}D", {"filters": 2, "kernel_size": 3, "strides": 2}),
            ("Flatten", {}),
            ("Dense", {"units": 2, "activation": "softmax"}),
        ]
        check_network(ModelDescription.build("c", (*spatial, 2), layers), exact_fields=True)


def test_a_graph_through_every_consumer(tmp_path: Path) -> None:
    # a U-Net-like skip: the wide branch cropped to the narrow branch's size, then added
    desc = ModelDescription.from_dict(
        {"name": "skip", "input_shape": [10, 9, 2], "layers": [
            {"class_name": "Conv2D", "name": "wide", "filters": 3, "kernel_size": 1},
            {"class_name": "Cropping2D", "name": "crop", "cropping": [[1, 1], [2, 0]]},
            {"class_name": "Conv2D", "name": "narrow", "inputs": ["input"], "filters": 3,
             "kernel_size": [3, 3], "activation": "tanh"},
            {"class_name": "Add", "inputs": ["crop", "narrow"]},
            {"class_name": "Flatten"},
            {"class_name": "Dense", "units": 2, "activation": "softmax"},
        ]}
    )  # fmt: skip
    check_network(desc, exact_fields=True, onnx_dir=tmp_path)


def test_against_numpy_slicing() -> None:
    rng = np.random.default_rng(0)
    for rank in (1, 2, 3):
        for _ in range(4):
            spatial = [int(v) for v in rng.integers(3, 8, rank)]
            pairs = [
                [int(rng.integers(0, n // 2 + 1)), int(rng.integers(0, n // 2))] for n in spatial
            ]
            cropping = {"cropping": pairs if rank > 1 else pairs[0]}
            desc = ModelDescription.build("c", (*spatial, 3), [(f"Cropping{rank}D", cropping)])
            x = rng.normal(size=(2, *spatial, 3))
            kept = (slice(a, n - b) for (a, b), n in zip(pairs, spatial, strict=True))
            want = x[(slice(None), *kept)]
            with torch.no_grad():
                got = build_module(desc).double()(torch.from_numpy(x).movedim(-1, 1))
            np.testing.assert_array_equal(got.movedim(1, -1).numpy(), want)
            assert desc.output_shape == want.shape[1:]


# Keras' forms (cropping{1,2,3}d.py) and what each resolves to: (before, after) per axis
FORMS: list[tuple[str, Any, tuple[tuple[int, int], ...]]] = [
    ("Cropping1D", None, ((1, 1),)),  # Keras' default
    ("Cropping1D", 2, ((2, 2),)),
    ("Cropping1D", [0, 3], ((0, 3),)),
    ("Cropping2D", None, ((0, 0), (0, 0))),
    ("Cropping2D", 1, ((1, 1), (1, 1))),
    ("Cropping2D", [1, 2], ((1, 1), (2, 2))),  # symmetric per axis
    ("Cropping2D", [[1, 2], [0, 3]], ((1, 2), (0, 3))),
    ("Cropping2D", [1, [0, 2]], ((1, 1), (0, 2))),
    ("Cropping3D", None, ((1, 1), (1, 1), (1, 1))),
    ("Cropping3D", 0, ((0, 0), (0, 0), (0, 0))),
    ("Cropping3D", [1, 0, 2], ((1, 1), (0, 0), (2, 2))),
    ("Cropping3D", [[0, 1], 2, [3, 0]], ((0, 1), (2, 2), (3, 0))),
]


@pytest.mark.parametrize("case", range(len(FORMS)))
def test_keras_forms_of_cropping(case: int) -> None:
    cls, value, pairs = FORMS[case]
    args = {} if value is None else {"cropping": value}
    layer = L.parse_layer(cls, args, "c", "layer 1")
    assert isinstance(layer, Cropping) and layer.cropping == pairs and layer.class_name == cls
    again = L.parse_layer(cls, layer.config(), "c", "layer 1")  # the JSON form reads back
    assert again == layer


BAD = [
    ("Input(8,2) Cropping1D(cropping=1x2x3)", "cropping needs one int or (before, after)"),
    ("Input(8,2) Cropping1D(cropping=-1)", "cropping must be at least 0, got -1"),
    ("Input(8,8,2) Cropping2D(cropping=1x2x3)", "cropping needs 2 entries"),
    ("Input(8,8,2) Cropping2D(cropping=a)", "cropping must be a whole number, got 'a'"),
    ("Input(8,8,2) Cropping2D(cropping=1.5)", "cropping must be a whole number"),
    ("Input(8,8,2) Cropping2D(crop=1)", "unknown argument 'crop' (did you mean 'cropping'?)"),
    ("Input(4,8,2) Cropping2D(cropping=2x1)", "cropping (2, 2) leaves nothing of spatial axis 1"),
    ("Input(4,4,4,1) Cropping3D(2)", "cropping (2, 2) leaves nothing of spatial axis 1"),
    ("Input(3,2) Cropping1D(cropping=3)", "cropping (3, 3) leaves nothing of spatial axis 1"),
    ("Input(8,2) Cropping2D", "needs a 2-D input with channels (3 axes), got 8x2"),
    ("Input(8,8,2) Flatten Cropping1D", "needs a 1-D input with channels (2 axes), got 128"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_arguments_in_one_line_naming_the_layer(case: int) -> None:
    one_line_error(*BAD[case], ("Cropping",))


def test_the_1d_pair_given_as_a_nested_list_is_refused() -> None:
    with pytest.raises(L.DescriptionError, match=r"^layer 1 \(Cropping1D\): cropping needs one"):
        L.parse_layer("Cropping1D", {"cropping": [[1, 2]]}, "c", "layer 1 (Cropping1D)")


# ---------------------------------------------------------------- Keras 3 configs


KERAS = [  # input shape, class, Keras 3's own arguments, the crops, the output shape
    ([12, 2], "Cropping1D", {"cropping": [2, 1]}, ((2, 1),), (9, 2)),
    (
        [12, 10, 2],
        "Cropping2D",
        {"cropping": [[1, 2], [0, 3]], "data_format": "channels_last"},
        ((1, 2), (0, 3)),
        (9, 7, 2),
    ),
    (
        [5, 4, 3, 1],
        "Cropping3D",
        {"cropping": [[1, 1], [0, 1], [0, 0]], "data_format": "channels_last"},
        ((1, 1), (0, 1), (0, 0)),
        (3, 3, 3, 1),
    ),
]


@pytest.mark.parametrize("case", range(len(KERAS)))
def test_keras_configs_import(case: int) -> None:
    shape, cls, cfg, pairs, out = KERAS[case]
    config = keras_sequential(shape, (cls, cfg), ("Flatten", {"data_format": "channels_last"}))
    desc = translate(config, Path("crop.keras"), "crop").description
    layer = desc.layers[0]
    assert isinstance(layer, Cropping) and layer.class_name == cls and layer.cropping == pairs
    assert desc.info[0].out_shape == out


def test_a_channels_first_keras_config_is_refused() -> None:
    config = keras_sequential(
        [6, 6, 2], ("Cropping2D", {"cropping": 1, "data_format": "channels_first"})
    )
    with pytest.raises(CnnlabError) as info:
        translate(config, Path("cf.keras"), "cf")
    assert "layer 1 (Cropping2D 'layer_0'): data_format='channels_first'" in str(info.value)

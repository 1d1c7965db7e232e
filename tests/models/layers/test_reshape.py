"""Reshape and Permute: Keras' semantics on channels-last arrays (NumPy's reshape and
transpose in float64) although PyTorch holds channels first, Keras 3 configs, the receptive
field only where the result is flat or nothing moves, and through every consumer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cnnlab.analysis.receptive import field_states, receptive_fields
from cnnlab.interop.keras_config import translate
from cnnlab.models import ModelDescription, build_module, parse_compact
from cnnlab.models import layers as L
from cnnlab.models.layers.reshape import Permute, Reshape

from .helpers import check_network, keras_sequential, one_line_error


def _module_channels_last(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """A network's PyTorch module on channels-last ``x``, its output channels last."""
    t = torch.from_numpy(x)
    with torch.no_grad():
        y = model(t.movedim(-1, 1) if t.ndim > 2 else t)
    return (y.movedim(1, -1) if y.ndim > 2 else y).numpy()


RESHAPES: list[tuple[tuple[int, ...], list[int]]] = [
    ((6, 4, 2), [4, -1, 3]),  # a map into a map of another shape
    ((6, 4, 2), [-1]),  # a map made flat: Flatten's order
    ((5, 3), [3, 5]),  # channels and steps mixed
    ((24,), [2, 3, 4]),  # a flat vector into a map
    ((24,), [2, -1, 2, 3]),  # ... into a 3-D map
    ((2, 3, 4, 2), [6, 8]),
]


@pytest.mark.parametrize("case", range(len(RESHAPES)))
def test_reshape_against_numpy_channels_last(case: int) -> None:
    shape, target = RESHAPES[case]
    desc = ModelDescription.build("r", shape, [("Reshape", {"target_shape": target})])
    x = np.random.default_rng(case).normal(size=(3, *shape))
    want = np.reshape(x, (3, *target))  # Keras: row-major over (spatial..., channels)
    np.testing.assert_array_equal(_module_channels_last(build_module(desc).double(), x), want)
    np.testing.assert_array_equal(desc.layers[0].forward_numpy([x], {}), want)
    assert desc.output_shape == want.shape[1:]


PERMUTES: list[tuple[tuple[int, ...], list[int]]] = [
    ((6, 4, 2), [2, 1, 3]),  # the spatial axes swapped
    ((6, 4, 2), [3, 1, 2]),  # the channels first
    ((6, 4, 2), [2, 3, 1]),
    ((7, 3), [2, 1]),
    ((2, 3, 4, 5), [3, 1, 4, 2]),
    ((5,), [1]),
]


@pytest.mark.parametrize("case", range(len(PERMUTES)))
def test_permute_against_numpy_channels_last(case: int) -> None:
    shape, dims = PERMUTES[case]
    desc = ModelDescription.build("p", shape, [("Permute", {"dims": dims})])
    x = np.random.default_rng(case).normal(size=(3, *shape))
    want = np.transpose(x, (0, *dims))  # Keras' dims count the batch axis as 0
    np.testing.assert_array_equal(_module_channels_last(build_module(desc).double(), x), want)
    np.testing.assert_array_equal(desc.layers[0].forward_numpy([x], {}), want)
    assert desc.output_shape == want.shape[1:]


def test_a_flat_vector_reshaped_into_a_map_then_convolved() -> None:
    desc = parse_compact("Input(48) Reshape(4x4x3) Conv2D(2,3)")
    model = build_module(desc).double()
    x = np.random.default_rng(0).normal(size=(2, 48))
    kernel = model.conv2d.weight.detach().numpy().transpose(2, 3, 1, 0)  # Keras (kh, kw, in, out)
    bias = model.conv2d.bias.detach().numpy()
    maps = x.reshape(2, 4, 4, 3)  # Keras: the vector read as (H, W, C), channels fastest
    want = np.zeros((2, 2, 2, 2))
    for i in range(2):
        for j in range(2):
            want[:, i, j] = np.einsum("nabc,abco->no", maps[:, i : i + 3, j : j + 3], kernel)
    got = _module_channels_last(model, x)
    np.testing.assert_allclose(got, want + bias, rtol=1e-12, atol=1e-12)


def test_swapped_spatial_axes_then_convolved() -> None:
    desc = parse_compact("Input(5,3,2) Permute(2x1x3) Conv2D(1,kernel_size=1x3)")
    model = build_module(desc).double()
    x = np.random.default_rng(1).normal(size=(2, 5, 3, 2))
    kernel = model.conv2d.weight.detach().numpy().transpose(2, 3, 1, 0)[0]  # (3, in, out)
    swapped = x.transpose(0, 2, 1, 3)  # (N, 3, 5, 2): the 1x3 kernel runs along the old rows
    want = np.stack(
        [np.einsum("nibc,bco->nio", swapped[:, :, j : j + 3], kernel) for j in range(3)], axis=2
    )
    got = _module_channels_last(model, x)
    np.testing.assert_allclose(got, want + model.conv2d.bias.detach().numpy(), rtol=1e-12)


CHAINS = [
    "Input(6,4,2) Conv2D(3,1) Permute(2x1x3) Conv2D(2,2) Reshape(-1) Dense(2,softmax)",
    "Input(8,3) Conv1D(4,3) Permute(2x1) Conv1D(2,2) Flatten Dense(2,softmax)",
    "Input(12) Dense(18,tanh) Reshape(3x3x2) Conv2D(2,2) Flatten Dense(2,softmax)",
    "Input(3,4,5,2) Conv3D(2,2) Permute(3x1x2x4) Reshape(4x12) Conv1D(2,2) Flatten "
    "Dense(2,softmax)",
    "Input(7,5,2) Conv2D(3,2) Reshape(6x4x3) Conv2D(2,3) Reshape(-1) Dense(2,softmax)",
    "Input(7,5,2) Conv2D(3,2) Reshape(6x4x3) Permute(1x2x3) Conv2D(2,3) Flatten Dense(2,softmax)",
]


@pytest.mark.parametrize("line", CHAINS)
def test_chains_through_every_consumer(line: str) -> None:
    check_network(parse_compact(line), exact_fields=True)


def test_a_graph_through_every_consumer(tmp_path: Path) -> None:
    # a map branch turned around by Permute and added back; a flat branch made by Reshape
    desc = ModelDescription.from_dict(
        {"name": "g", "input_shape": [5, 5, 2], "layers": [
            {"class_name": "Conv2D", "name": "a", "filters": 3, "kernel_size": 1},
            {"class_name": "Conv2D", "name": "b", "inputs": ["input"], "filters": 3,
             "kernel_size": 3, "padding": "same", "activation": "tanh"},
            {"class_name": "Permute", "name": "turn", "dims": [2, 1, 3]},
            {"class_name": "Add", "name": "sum", "inputs": ["a", "turn"]},
            {"class_name": "Reshape", "name": "flat", "target_shape": [-1]},
            {"class_name": "Reshape", "name": "pixels", "inputs": ["input"], "target_shape": [50]},
            {"class_name": "Concatenate", "inputs": ["flat", "pixels"]},
            {"class_name": "Reshape", "target_shape": [5, 5, 5]},
            {"class_name": "Conv2D", "filters": 2, "kernel_size": 2},
            {"class_name": "Flatten"},
            {"class_name": "Dense", "units": 2, "activation": "softmax"},
        ]}
    )  # fmt: skip
    check_network(desc, exact_fields=True, onnx_dir=tmp_path)


def test_a_flat_result_has_flattens_field_and_a_moved_one_none() -> None:
    reshaped = parse_compact("Input(9,8,1) Conv2D(2,3,2) Reshape(-1) Dense(2,softmax)")
    flattened = parse_compact("Input(9,8,1) Conv2D(2,3,2) Flatten Dense(2,softmax)")
    assert receptive_fields(reshaped) == receptive_fields(flattened)
    same = parse_compact("Input(9,8,1) Conv2D(2,3) Permute(1x2x3) Reshape(7x6x2) Conv2D(2,3)")
    assert receptive_fields(same)[-1].size == (5, 5)  # nothing moved: the fields go on
    for line, why in [
        ("Input(9,8,1) Conv2D(2,3) Reshape(6x7x2) Conv2D(2,3)", "(7x6x2 to 6x7x2)"),
        ("Input(9,8,1) Conv2D(2,3) Permute(2x1x3) Conv2D(2,3)", "(dims 2, 1, 3)"),
        ("Input(18) Reshape(3x3x2) Conv2D(2,3)", "(18 to 3x3x2)"),
    ]:
        desc = parse_compact(line)
        kind = desc.layers[-2].class_name
        with pytest.raises(L.CapabilityError) as info:
            receptive_fields(desc)
        assert str(info.value) == (
            f"layer '{desc.layers[-2].name}' ({kind}) has no receptive-field rule: "
            f"it moves values to other positions {why}"
        )
        assert field_states(desc, strict=False)[desc.layers[-1].name] is None


BAD = [
    ("Input(4,4,2) Reshape(target_shape=3x3)", "cannot reshape 4x4x2 (32 values) into 3x3"),
    ("Input(4,4,2) Reshape(target_shape=a)", "target_shape must be a whole number, got 'a'"),
    ("Input(4,4,2) Reshape(target_shape=0)", "target_shape must be at least 1, got 0"),
    ("Input(4,4,2) Reshape(target_shape=2x2x2x2x2)", "target_shape needs 1 to 4 sizes"),
    ("Input(4,4,2) Reshape", "missing argument 'target_shape'"),
    ("Input(4,4,2) Permute(dims=1x1x2)", "dims must be a permutation of 1..3, got [1, 1, 2]"),
    ("Input(4,4,2) Permute(dims=2)", "dims needs 1 to 4 axes (1-based), got 2"),
    ("Input(4,4,2) Permute(dims=2x1)", "dims [2, 1] permute 2 axes; the input 4x4x2 has 3"),
    ("Input(4,4,2) Permute(dims=1x2x3x4x5)", "dims needs 1 to 4 axes (1-based)"),
    ("Input(4,4,2) Permute(axes=2x1x3)", "unknown argument 'axes'"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_arguments_in_one_line_naming_the_layer(case: int) -> None:
    one_line_error(*BAD[case], ("Reshape", "Permute"))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ([2, -1, -1], "target_shape may hold one -1 only, got [2, -1, -1]"),
        ([5, -1], "cannot reshape 4x4x2 (32 values) into 5x-1"),
        ([-2, 16], "target_shape must be at least 1, got -2"),
        ([True, 32], "target_shape must be a whole number, got True"),
    ],
)
def test_bad_target_shapes(target: list[Any], message: str) -> None:
    with pytest.raises(L.DescriptionError) as info:
        ModelDescription.build("r", (4, 4, 2), [("Reshape", {"target_shape": target})])
    assert str(info.value) == f"layer 1 (Reshape): {message}"


def test_the_json_form_keeps_the_target_as_given() -> None:
    desc = ModelDescription.build("r", (4, 4, 2), [("Reshape", {"target_shape": [8, -1]})])
    assert desc.to_dict()["layers"][0]["target_shape"] == [8, -1]
    assert desc.output_shape == (8, 4) and ModelDescription.from_dict(desc.to_dict()) == desc


# ---------------------------------------------------------------- Keras 3 configs


def test_keras_configs_import() -> None:
    config = keras_sequential(
        [6, 4, 2],
        ("Permute", {"dims": [2, 1, 3]}),
        ("Reshape", {"target_shape": [8, -1]}),
        ("Permute", {"dims": [2, 1]}),
        ("Reshape", {"target_shape": [-1]}),
    )
    desc = translate(config, Path("rp.keras"), "rp").description
    first, second, third, fourth = desc.layers
    assert isinstance(first, Permute) and first.dims == (2, 1, 3)
    assert isinstance(second, Reshape) and second.target_shape == (8, -1)
    assert isinstance(third, Permute) and third.dims == (2, 1)
    assert isinstance(fourth, Reshape) and fourth.target_shape == (-1,)
    assert [i.out_shape for i in desc.info] == [(4, 6, 2), (8, 6), (6, 8), (48,)]

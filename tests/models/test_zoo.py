"""The registry's templates build for the data's shape and classes, and every consumer agrees
on them (the NumPy engine, receptive fields, the summary), chains and graphs alike."""

from __future__ import annotations

import pytest

from cnnlab.analysis.explain_series import has_cam
from cnnlab.engine.numpy_engine import from_torch
from cnnlab.errors import CnnlabError
from cnnlab.models import REGISTRY, get, summary
from cnnlab.models.registry import TEMPLATES, resolve_for

from .layers.helpers import check_network, randomised

SHAPES = {
    "fcn1d": [(40, 1), (23, 3)],
    "fcn1d_small": [(40, 2)],
    "resnet1d": [(40, 1), (17, 3)],
    "inception1d": [(48, 1), (30, 2)],
    "smallcnn": [(28, 28, 1), (20, 36, 3), (64, 64, 3)],
    "resnet_small": [(28, 28, 1), (16, 16, 3)],
    "moving3d": [(6, 12, 12, 1)],
    "perframe2d": [(4, 10, 10, 2)],
}


def test_every_template_is_registered_and_sized_here() -> None:
    assert set(TEMPLATES) <= set(REGISTRY) and set(SHAPES) == set(TEMPLATES)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_templates_build_for_the_data(name: str) -> None:
    for shape in SHAPES[name]:
        for classes in (2, 7):
            desc = resolve_for(name, shape, classes)
            assert desc.input_shape == shape and desc.classes == classes and desc.name == name
    small = resolve_for(name, SHAPES[name][0], 3)
    check_network(small)  # every consumer against the PyTorch module
    assert f'Model: "{name}"' in summary(small)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_templates_refuse_other_data_in_one_line(name: str) -> None:
    wrong = (5, 5, 5, 5, 5) if len(SHAPES[name][0]) != 5 else (5,)
    with pytest.raises(CnnlabError, match=f"{name} takes inputs of") as info:
        resolve_for(name, wrong, 3)
    assert "\n" not in str(info.value)
    with pytest.raises(CnnlabError, match="at least 2 classes"):
        resolve_for(name, SHAPES[name][0], 1)


def test_residual_networks_are_graphs_with_shortcuts() -> None:
    res = resolve_for("resnet1d", (40, 3), 4)
    assert not res.is_chain
    adds = [i for i in res.info if i.layer.class_name == "Add"]
    assert len(adds) == 3
    # a 1x1 convolution where the width changes (3 -> 64, 64 -> 128), BatchNormalization alone
    shortcut = [res.by_name[a.inputs[1]] for a in adds]
    assert [s.inputs[0] for s in shortcut] == [
        "block1_shortcut_conv",
        "block2_shortcut_conv",
        "block2_out",
    ]
    assert res.by_name["block1_shortcut_conv"].layer.kernel_size == (1,)  # type: ignore[attr-defined]
    inc = resolve_for("inception1d", (48, 2), 3)
    concat = [i for i in inc.info if i.layer.class_name == "Concatenate"]
    assert len(concat) == 3 and all(len(c.inputs) == 4 for c in concat)
    assert concat[0].out_shape == (48, 128)


@pytest.mark.parametrize("name", ["fcn1d", "resnet1d", "inception1d"])
def test_series_templates_have_an_exact_class_activation_map(name: str) -> None:
    assert has_cam(from_torch(randomised(resolve_for(name, (30, 2), 3))))


def test_smallcnn_grows_with_the_image() -> None:
    def pools(shape: tuple[int, ...]) -> int:
        return sum(
            i.layer.class_name == "MaxPooling2D" for i in resolve_for("smallcnn", shape, 2).info
        )

    blocks = {
        s: pools(s) for s in [(8, 8, 1), (28, 28, 1), (32, 32, 3), (64, 64, 3), (256, 256, 3)]
    }
    assert blocks == {
        (8, 8, 1): 1,
        (28, 28, 1): 2,
        (32, 32, 3): 3,
        (64, 64, 3): 4,
        (256, 256, 3): 4,
    }


def test_fixed_networks_are_returned_as_they_are() -> None:
    assert resolve_for("case1", (5, 5, 1), 3) == get("case1")

"""The registry of layer kinds: filled from the classes, every kind tested and documented,
and a kind that lacks a capability stops every consumer with a named error."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from cnnlab.analysis.layer_walk import feature_map_layers
from cnnlab.analysis.receptive import layer_table, receptive_fields
from cnnlab.engine.numpy_engine import NumpyModel
from cnnlab.engine.plan import PYTORCH, plan, where
from cnnlab.models import ModelDescription, build_module, parse_compact, summary
from cnnlab.models import layers as L
from cnnlab.models.layers.base import Array, Shape

TESTS = Path(__file__).parent
DOCS = Path(__file__).resolve().parents[3] / "docs" / "layers.md"


def test_registry_is_filled_from_the_classes() -> None:
    for keras_name, kind in L.LAYERS.items():
        assert keras_name in kind.KERAS_NAMES
        assert issubclass(kind, L.Layer)
    assert L.CLASS_NAMES == tuple(L.LAYERS)


def test_every_kind_has_its_own_tests() -> None:
    for kind in set(L.LAYERS.values()):
        module = kind.__module__.rsplit(".", 1)[-1]
        tests = TESTS / f"test_{module}.py"
        assert tests.is_file(), f"{kind.__name__}: no {tests.name}"
        assert "check_network(" in tests.read_text(), f"{tests.name} checks no network"


def test_every_kind_is_documented() -> None:
    text = DOCS.read_text()
    missing = [name for name in L.LAYERS if f"`{name}`" not in text]
    assert not missing, f"docs/layers.md does not list {missing}"


@dataclass(frozen=True, kw_only=True)
class Bare(L.Layer):
    """A kind that knows its shape and nothing else (not registered)."""

    KERAS_NAMES: ClassVar[Mapping[str, Mapping[str, object]]] = {"Bare": {}}

    def output_shape(self, shapes: Sequence[Shape], where: str) -> Shape:
        return shapes[0]


def _with_bare() -> ModelDescription:
    base = parse_compact("Input(8,8,1) Conv2D(2,3) Flatten Dense(2,softmax)")
    layers = (base.layers[0], Bare(name="bare"), *base.layers[1:])
    return ModelDescription("bare_net", base.input_shape, layers)


def test_a_missing_capability_is_a_named_error_everywhere() -> None:
    desc = _with_bare()
    assert "bare (Bare)" in summary(desc)  # the shape rule is enough for these
    named = re.escape("layer 'bare' (Bare) has no")
    with pytest.raises(L.CapabilityError, match=f"{named} PyTorch module"):
        build_module(desc)
    with pytest.raises(L.CapabilityError, match=f"{named} NumPy forward pass"):
        list(NumpyModel(desc, _weights(desc)).activations(np.zeros((1, 8, 8, 1))))
    with pytest.raises(L.CapabilityError, match=f"{named} receptive-field rule"):
        receptive_fields(desc)
    with pytest.raises(L.CapabilityError, match=f"{named} receptive-field rule"):
        layer_table(desc)
    walk = feature_map_layers(desc)  # maps are still shown; their fields are unknown
    assert [m.name for m in walk] == ["conv2d"] and walk[0].field is not None
    assert plan(desc).blocks[1].kind == PYTORCH and where(desc, True)["bare"] == "pytorch"


def _weights(desc: ModelDescription) -> Mapping[str, Mapping[str, Array]]:
    out: dict[str, dict[str, Array]] = {}
    for info in desc.info:
        for w in info.layer.weights(info.in_shapes):
            out.setdefault(info.layer.name, {})[w.keras] = np.zeros(w.shape)
    return out


def test_a_subclass_is_not_lowered_to_its_parents_kernel() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Odd(L.Conv):
        pass

    base = parse_compact("Input(8,8,2) Conv2D(4,3,relu) MaxPooling2D Flatten Dense(2,softmax)")
    conv = base.layers[0]
    assert isinstance(conv, L.Conv)
    odd = Odd(**{f.name: getattr(conv, f.name) for f in fields(conv)})
    desc = ModelDescription("odd", base.input_shape, (odd, *base.layers[1:]))
    assert plan(base).blocks[0].kind == "conv_pool_relu"
    assert plan(desc).blocks[0].kind == PYTORCH

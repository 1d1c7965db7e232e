"""Model descriptions: the forms agree, shape inference matches the built network, and bad
descriptions are refused with one line that names the layer and the problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from model_zoo import ZOO

from cnnlab.errors import CnnlabError
from cnnlab.models import (
    DescriptionError,
    ModelDescription,
    build_module,
    get,
    load_description,
    parse_compact,
    resolve,
    save_description,
    summary,
)
from cnnlab.models import layers as L


@pytest.mark.parametrize("name", list(ZOO))
def test_inference_matches_the_built_network(name: str) -> None:
    """Each layer's output shape and parameter counts, against the PyTorch module itself."""
    desc = ZOO[name]
    model = build_module(desc).double().eval()
    outs = {L.INPUT: torch.zeros((2, desc.input_shape[-1], *desc.input_shape[:-1]))}
    with torch.no_grad():
        for info, child in zip(desc.info, model, strict=True):  # over the graph, in order
            h = child(*[outs[n].double() for n in info.inputs])
            outs[info.layer.name] = h
            shape = tuple(h.shape[2:]) + (h.shape[1],) if h.ndim > 2 else tuple(h.shape[1:])
            assert shape == info.out_shape, info.where
            trainable = sum(p.numel() for p in child.parameters() if p.requires_grad)
            fixed = sum(b.numel() for n, b in child.named_buffers() if n.startswith("running_"))
            assert (trainable, fixed) == (info.trainable, info.non_trainable), info.where
    assert desc.params == sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for n, b in model.named_buffers() if n.rsplit(".", 1)[-1].startswith("running_")
    )


@pytest.mark.parametrize("name", ["case1", "case2", "case3", "conv2d_bn_dilated", "random1"])
def test_summary_rows_are_the_inferred_shapes(name: str) -> None:
    desc = ZOO[name]
    text = summary(desc)
    for info in desc.info:
        row = next(r for r in text.splitlines() if r.startswith(f"{info.layer.name} ("))
        assert str((None, *info.out_shape)) in row
        assert row.rstrip().endswith(f"{info.trainable + info.non_trainable:,}")
    assert f"Total params: {desc.params:,}" in text
    assert f"Non-trainable params: {desc.params - desc.trainable_params:,}" in text


@pytest.mark.parametrize("name", list(ZOO))
def test_dict_json_and_yaml_round_trip(name: str, tmp_path: Path) -> None:
    desc = ZOO[name]
    assert ModelDescription.from_dict(json.loads(json.dumps(desc.to_dict()))) == desc
    save_description(desc, tmp_path / "net.json")
    assert load_description(tmp_path / "net.json") == desc
    yaml = pytest.importorskip("yaml")
    (tmp_path / "net.yaml").write_text(yaml.safe_dump(desc.to_dict()))
    assert load_description(tmp_path / "net.yaml") == desc


def test_the_forms_describe_the_same_network() -> None:
    line = (
        "Input(28,28,1) Conv2D(16,3,relu,name=conv1) MaxPooling2D(name=pool1) "
        "Conv2D(64,3,relu,name=conv2) MaxPooling2D(name=pool2) Flatten(name=flatten) "
        "Dropout(0.25,name=drop1) Dense(32,relu,name=dense1) Dropout(0.25,name=drop2) "
        "Dense(10,softmax,name=dense2)"
    )
    compact = parse_compact(line, "case1")
    built = ModelDescription.build(
        "case1",
        (28, 28, 1),
        [
            ("Conv2D", {"filters": 16, "kernel_size": 3, "activation": "relu", "name": "conv1"}),
            ("MaxPooling2D", {"name": "pool1"}),
            (
                "Conv2D",
                {"filters": 64, "kernel_size": [3, 3], "activation": "relu", "name": "conv2"},
            ),
            ("MaxPooling2D", {"pool_size": 2, "name": "pool2"}),
            ("Flatten", {"name": "flatten"}),
            ("Dropout", {"rate": 0.25, "name": "drop1"}),
            ("Dense", {"units": 32, "activation": "relu", "name": "dense1"}),
            ("Dropout", {"rate": 0.25, "name": "drop2"}),
            ("Dense", {"units": 10, "activation": "softmax", "name": "dense2"}),
        ],
    )
    keras_style = {  # the one-key form that YAML files use
        "input_shape": [28, 28, 1],
        "layers": [
            {c: dict(a)} for c, a in [(x["class_name"], x) for x in built.to_dict()["layers"]]
        ],
    }
    for layer in keras_style["layers"]:
        (args,) = layer.values()
        del args["class_name"]
    from_one_key = ModelDescription.from_dict(keras_style, default_name="case1")
    assert compact == built == from_one_key
    assert built.params == 61_002 and [i.out_shape for i in built.info][4] == (1600,)
    assert (
        resolve(line) == compact.renamed("model") and resolve("case1").params == get("case1").params
    )


@pytest.mark.parametrize(
    ("n", "k", "s", "padding"),
    [
        (7, 3, 1, "valid"),
        (7, 3, 2, "same"),
        (8, 4, 2, "same"),
        (8, 2, 3, "same"),
        (9, 4, 3, "valid"),
    ],
)
def test_shapes_follow_keras(n: int, k: int, s: int, padding: str) -> None:
    """Output sizes: ceil(n / s) for same (TensorFlow's rule), floor((n - k) / s) + 1 valid."""
    desc = parse_compact(f"Input({n},{n},2) Conv2D(3,{k},{s},{padding}) Flatten Dense(2)")
    want = -(-n // s) if padding == "same" else (n - k) // s + 1
    assert desc.info[0].out_shape == (want, want, 3)
    x = torch.randn(1, 2, n, n, dtype=torch.float64)
    assert build_module(desc).double()[0](x).shape == (1, 3, want, want)


BAD: list[tuple[str, str]] = [
    (
        "Input(6,6,1) Conv2D(1,3) MaxPooling2D(2) Conv2D(1,2) MaxPooling2D(2) Flatten Dense(2)",
        "layer 4 (MaxPooling2D): input 1x1 is smaller than pool_size 2",
    ),
    ("Input(5,5,1) Conv2D(1,3,dilation_rate=3) Flatten Dense(2)", "layer 1 (Conv2D): input 5x5"),
    ("Input(28,28,1) Conv2D(8,3) Dense(10)", "layer 2 (Dense): needs a flat input, got 26x26x8"),
    ("Input(28,28,1) Conv3D(8,3) Flatten Dense(2)", "layer 1 (Conv3D): needs a 3-D input"),
    ("Input(28,28,1) Conv2D(8,3,activation=swishy) Flatten Dense(2)", "layer 1 (Conv2D)"),
    ("Input(28,28,1) Conv2D(0,3) Flatten Dense(2)", "filters must be at least 1, got 0"),
    ("Input(28,28,1) Conv2D(8,3,padding=causal) Flatten Dense(2)", "padding must be one of"),
    ("Input(28,28,1) Conv2d(8,3) Flatten Dense(2)", "did you mean Conv2D?"),
    ("Input(28,28,1) LSTM(8) Dense(2)", "unknown layer 'LSTM'"),
    ("Input(28,28,1) Conv2D(8,3,groups=2) Flatten Dense(2)", "layer 1 (Conv2D)"),
    ("Input(28,28,1) Dropout(1.5) Flatten Dense(2)", "rate must be in"),
    ("Input(28,28,1) Flatten(name=a) Dense(2,name=a)", "the name 'a' is used twice"),
    ("Input(28,28,1) Flatten(name=forward) Dense(2)", "reserved"),
    ("Input(28,28,0) Flatten Dense(2)", "input_shape must hold positive whole numbers"),
    ("Input(28,28,1) Conv2D(8,3,2,dilation_rate=2) Flatten Dense(2)", "strides > 1 together"),
]


@pytest.mark.parametrize(("line", "message"), BAD)
def test_bad_descriptions_name_the_layer(line: str, message: str) -> None:
    with pytest.raises(DescriptionError) as info:
        parse_compact(line)
    text = str(info.value)
    assert message in text and "\n" not in text, text


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "a model description is a mapping"),
        ({"input_shape": [28, 28, 1]}, "non-empty list of layers"),
        ({"input_shape": [28, 28, 1], "layers": [], "extra": 1}, "unknown key 'extra'"),
        ({"input_shape": "28x28", "layers": [{"Flatten": None}]}, "input_shape must list"),
        ({"input_shape": [4, 4, 1], "layers": [["Flatten"]]}, "a layer is a mapping"),
        ({"input_shape": [4, 4, 1], "layers": [{"Dense": [3]}]}, "arguments must be a mapping"),
        ({"input_shape": [4, 4, 1], "layers": [{"Flatten": None}], "name": "a b"}, "identifier"),
        ({"input_shape": [4, 4, 1], "layers": [{"class_name": 3}]}, "needs a class name"),
        (
            {"input_shape": [4, 4, 1], "layers": [{"Conv2D": {"filters": "8", "kernel_size": 3}}]},
            "filters must be a whole number, got '8'",
        ),
    ],
)
def test_malformed_dicts_are_refused(data: Any, message: str) -> None:
    with pytest.raises(DescriptionError, match=None) as info:
        ModelDescription.from_dict(data)
    assert message in str(info.value), str(info.value)


def test_files_are_data_only(tmp_path: Path) -> None:
    alias = tmp_path / "alias.yaml"
    alias.write_text("a: &x [1, 2]\ninput_shape: *x\nlayers: [{Flatten: null}]\n")
    bomb = tmp_path / "bomb.json"
    bomb.write_text("[" * 100_000 + "]" * 100_000)
    python = tmp_path / "code.yaml"
    python.write_text("input_shape: !!python/object/apply:os.system ['true']\nlayers: []\n")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (2 << 20))
    cases = {
        alias: "anchors and aliases are not accepted",
        bomb: "nested too deeply",
        python: "is not valid YAML",
        big: "a model description is at most 1 MiB",
        tmp_path / "missing.json": "not found",
        tmp_path: "not a regular file",
    }
    for path, message in cases.items():
        with pytest.raises(CnnlabError) as info:
            load_description(path)
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_build_is_deterministic_under_the_seed() -> None:
    desc = get("case2")
    torch.manual_seed(0)
    a = build_module(desc).state_dict()
    torch.manual_seed(0)
    b = build_module(desc).state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)

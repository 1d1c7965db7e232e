"""Importing Keras' functional models: graphs, a chain written with keras.Input, nested blocks,
Keras' own files, and what cnnlab refuses (shared layers, several inputs or outputs).

Functional configs are written here by hand in Keras 3's layout (layers with their inbound
nodes, ``input_layers``, ``output_layers``); the weights in Keras' layouts by the helpers of
``test_keras_import.py``. The shared files of ``keras-functional/`` were saved by Keras 3.15.1
itself, with Keras' outputs beside them.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from model_zoo import ZOO

from cnnlab import cli
from cnnlab.errors import CnnlabError
from cnnlab.interop.keras_import import read_keras
from cnnlab.models import ModelDescription, get, parse_compact
from cnnlab.train.schemas import read_run_data

from .test_keras_import import (
    _extra,
    import_cli,
    keras_weights,
    klayer,
    members,
    proba,
    randomised,
    write_keras,
)

REPO = Path(__file__).resolve().parents[2]


def _tensor(source: str, shape: tuple[int, ...]) -> dict[str, Any]:
    config = {"shape": [None, *shape], "dtype": "float32", "keras_history": [source, 0, 0]}
    return {"class_name": "__keras_tensor__", "config": config}


def _input_layer(name: str, shape: tuple[int, ...]) -> dict[str, Any]:
    """An InputLayer entry as Keras 3.15 writes it."""
    config = {"batch_shape": [None, *shape], "dtype": "float32", "sparse": False}
    config |= {"ragged": False, "name": name, "optional": False}
    return {"module": "keras.layers", "class_name": "InputLayer", "config": config,
            "registered_name": None, "name": name, "inbound_nodes": []}  # fmt: skip


def functional_config(desc: ModelDescription) -> dict[str, Any]:
    """``desc`` as Keras 3 writes a functional model's config.json."""
    shapes = {"input": desc.input_shape} | {i.layer.name: i.out_shape for i in desc.info}
    inp = _input_layer("input_layer", desc.input_shape)
    layers = [inp]
    for info in desc.info:
        x = info.layer
        entry = klayer(x.class_name, x.name, **(_extra(x.class_name) | x.config()))
        tensors = [_tensor("input_layer" if n == "input" else n, shapes[n]) for n in info.inputs]
        args = [tensors] if len(tensors) > 1 else tensors
        entry["inbound_nodes"] = [{"args": args, "kwargs": {}}]
        layers.append(entry)
    body = {"name": desc.name, "trainable": True, "layers": layers}
    body |= {"input_layers": ["input_layer", 0, 0], "output_layers": [desc.output, 0, 0]}
    return {"module": "keras.src.models.functional", "class_name": "Functional", "config": body}


def save_functional(path: Path, desc: ModelDescription, seed: int = 0) -> torch.nn.Module:
    model = randomised(desc, seed)
    write_keras(path, members(functional_config(desc), keras_weights(model)))
    return model


GRAPHS = [name for name in ZOO if name.startswith("graph")]


@pytest.mark.parametrize("name", GRAPHS)
def test_graphs_import_and_compute_the_same(name: str, tmp_path: Path) -> None:
    desc = ZOO[name]
    model = save_functional(tmp_path / "m.keras", desc, seed=len(name))
    km = read_keras(tmp_path / "m.keras")
    assert km.description.layers == desc.layers and km.description.inputs == desc.inputs
    assert km.description.output == desc.output and not km.description.is_chain
    x = np.random.default_rng(0).normal(size=(4, *desc.input_shape)).astype(np.float32)
    assert import_cli(tmp_path / "m.keras", tmp_path / "run") == 0
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(x).movedim(-1, 1)), dim=1).numpy()
    np.testing.assert_allclose(proba(tmp_path / "run", x), want, atol=1e-6)


def test_a_chain_written_with_keras_input_is_a_chain(tmp_path: Path) -> None:
    desc = get("case3")
    save_functional(tmp_path / "c.keras", desc)
    km = read_keras(tmp_path / "c.keras", case=3)  # and it is the chapter's Case 3
    assert km.description.is_chain and km.description.layers == desc.layers


def _nested(inner_class: str) -> tuple[dict[str, Any], ModelDescription]:
    """conv -> [a nested block: conv, relu] -> flatten -> dense, and what it flattens to."""
    outer = parse_compact(
        "Input(8,8,1) Conv2D(3,3,name=c1) Conv2D(4,3,name=c2) ReLU(name=r) "
        "Flatten(name=flat) Dense(2,softmax,name=out)",
        "nested",
    )
    config = functional_config(outer)
    layers = config["config"]["layers"]
    c2, relu = layers[2], layers[3]
    block: dict[str, Any] = {"module": "keras", "class_name": inner_class, "name": "block"}
    inner_input = _input_layer("inner_input", (6, 6, 3))
    if inner_class == "Sequential":
        block["config"] = {"name": "block", "layers": [inner_input, c2 | {}, relu | {}]}
        for entry in block["config"]["layers"]:
            entry.pop("inbound_nodes", None)
    else:
        inner_input["inbound_nodes"] = []
        c2 = copy.deepcopy(c2)
        c2["inbound_nodes"] = [{"args": [_tensor("inner_input", (6, 6, 3))], "kwargs": {}}]
        body = {"name": "block", "layers": [inner_input, c2, relu]}
        block["config"] = body | {
            "input_layers": [["inner_input", 0, 0]],
            "output_layers": [["r", 0, 0]],
        }
    block["inbound_nodes"] = (
        c2["inbound_nodes"] if inner_class == "Sequential" else layers[2]["inbound_nodes"]
    )
    flat = layers[4]
    flat["inbound_nodes"] = [{"args": [_tensor("block", (4, 4, 4))], "kwargs": {}}]
    config["config"]["layers"] = [layers[0], layers[1], block, flat, layers[5]]
    return config, outer


@pytest.mark.parametrize("inner", ["Sequential", "Functional"])
def test_nested_blocks_are_flattened(inner: str, tmp_path: Path) -> None:
    config, flat = _nested(inner)
    model = randomised(flat)
    arrays = keras_weights(model)
    # Keras keeps a nested block's weights under its own group: layers/<block class>/layers/...
    group = f"layers/{'sequential' if inner == 'Sequential' else 'functional'}/layers/conv2d"
    arrays = {k.replace("layers/conv2d_1/", f"{group}/"): v for k, v in arrays.items()}
    write_keras(tmp_path / "n.keras", members(config, arrays))
    km = read_keras(tmp_path / "n.keras")
    assert [x.name for x in km.description.layers] == ["c1", "c2", "r", "flat", "out"]
    assert km.description.is_chain
    x = np.random.default_rng(1).normal(size=(3, 8, 8, 1)).astype(np.float32)
    assert import_cli(tmp_path / "n.keras", tmp_path / "run") == 0
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(x).movedim(-1, 1)), dim=1).numpy()
    np.testing.assert_allclose(proba(tmp_path / "run", x), want, atol=1e-6)


def _history(config: dict[str, Any], layer: int, history: list[Any]) -> None:
    """Point layer ``layer``'s (first) input at ``history`` (Keras' [name, node, tensor])."""
    args = config["layers"][layer]["inbound_nodes"][0]["args"]
    tensor = args[0][0] if isinstance(args[0], list) else args[0]
    tensor["config"]["keras_history"] = history


def _edited(edit: Any) -> dict[str, Any]:
    config = functional_config(ZOO["graph1"])
    edit(config["config"])
    return config


REFUSED = {
    "shared layer": (
        lambda c: c["layers"][3]["inbound_nodes"].append(c["layers"][3]["inbound_nodes"][0]),
        "is called 2 times (shared weights); shared layers are not supported",
    ),
    "second output": (
        lambda c: _history(c, 2, ["conv2d_0", 0, 1]),
        "layers called twice or with several outputs are not supported",
    ),
    "two inputs": (
        lambda c: c.update(input_layers=[["input_layer", 0, 0], ["other", 0, 0]]),
        "a model with 2 inputs is not supported",
    ),
    "two outputs": (
        lambda c: c.update(output_layers=[["dense_15", 0, 0], ["conv2d_3", 0, 0]]),
        "a model with 2 outputs is not supported",
    ),
    "unknown source": (
        lambda c: _history(c, 2, ["ghost", 0, 0]),
        "it reads 'ghost', which no layer before it is",
    ),
    "training call": (
        lambda c: c["layers"][2]["inbound_nodes"][0].update(kwargs={"training": True}),
        "the call argument 'training'=True is not supported",
    ),
    "no inbound": (
        lambda c: c["layers"][2].update(inbound_nodes=[]),
        "it is called on nothing",
    ),
}  # fmt: skip


@pytest.mark.parametrize("label", sorted(REFUSED))
def test_refused_in_one_line(
    label: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit, message = REFUSED[label]
    model = randomised(ZOO["graph1"])
    write_keras(tmp_path / "m.keras", members(_edited(edit), keras_weights(model)))
    assert import_cli(tmp_path / "m.keras", tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()
    with pytest.raises(CnnlabError):
        read_keras(tmp_path / "m.keras")


# --- Keras' own files --------------------------------------------------------------------


def _functional_dir() -> Path | None:
    env = os.environ.get("CNNLAB_DATA")
    for root in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (root / "keras-functional" / "index.json").is_file():
            return root / "keras-functional"
    return None


FUNCTIONAL = _functional_dir()
INDEX = json.loads((FUNCTIONAL / "index.json").read_text()) if FUNCTIONAL else {}


@pytest.mark.parametrize("name", sorted(INDEX) or ["(keras-functional absent)"])
def test_keras_functional_files_give_keras_outputs(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if FUNCTIONAL is None:
        pytest.skip("keras-functional not found: set CNNLAB_DATA to a folder holding it")
    path = FUNCTIONAL / f"{name}.keras"
    run = tmp_path / name
    assert cli.main(["import-keras", str(path), "--out", str(run)]) == 0, capsys.readouterr().err
    km = read_keras(path)
    assert list(km.description.input_shape) == INDEX[name]["input_shape"]
    assert [km.description.classes] == INDEX[name]["output_shape"]
    kinds = {x.class_name for x in km.description.layers}
    assert kinds == set(INDEX[name]["layers"]) - {"Sequential"}  # nested blocks flattened
    capsys.readouterr()
    x, want = (
        np.load(FUNCTIONAL / f"{name}.inputs.npy"),
        np.load(FUNCTIONAL / f"{name}.outputs.npy"),
    )
    assert (
        cli.main(["predict", str(run), "--array", str(FUNCTIONAL / f"{name}.inputs.npy"), "--json"])
        == 0
    )
    got = np.array([row["probabilities"] for row in json.loads(capsys.readouterr().out)])
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5
    assert np.abs(proba(run, x) - want).max() <= 1e-5
    # a network that begins with Rescaling takes raw 0-255 pixels, as in Keras; others / 255
    raw = km.description.layers[0].class_name == "Rescaling"
    assert read_run_data(run).scale.divisor == (1.0 if raw else 255.0)


@pytest.mark.parametrize("name", sorted(INDEX) or ["(keras-functional absent)"])
def test_keras_functional_graphs_give_keras_outputs_in_the_kernels(name: str) -> None:
    """A functional Keras network whose every layer has a kernel (Add, Concatenate: the
    residual and Inception files) gives Keras' outputs through the kernels' one-call
    forward pass (``csrc/net.cpp``'s program, its graph's maps kept in slots)."""
    from cnnlab.engine import native
    from cnnlab.engine.blocks import native_logits
    from cnnlab.engine.plan import plan
    from cnnlab.models import build_module

    if FUNCTIONAL is None:
        pytest.skip("keras-functional not found: set CNNLAB_DATA to a folder holding it")
    km = read_keras(FUNCTIONAL / f"{name}.keras")
    p = plan(km.description)
    if not p.native or not native.load():
        pytest.skip(f"{name}: a layer without a kernel, or no kernels here")
    model = build_module(km.description)
    model.load_state_dict(km.state_dict)
    x = torch.from_numpy(np.load(FUNCTIONAL / f"{name}.inputs.npy")).movedim(-1, 1)
    want = np.load(FUNCTIONAL / f"{name}.outputs.npy")
    got = torch.softmax(native_logits(model.eval(), p, x.float().contiguous()), 1).numpy()
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5

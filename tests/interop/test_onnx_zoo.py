"""ONNX export of any description: onnxruntime's probabilities match PyTorch's to 1e-5.

The zoo: the chapter's three cases and the speedrun network, the four Keras CNNs of
``keras-zoo`` (written here as descriptions, checked against the configs in the .keras
files when they are present), seeded random 1-D/2-D/3-D descriptions that together
cover strides, TensorFlow's asymmetric ``same`` padding (even kernels, strides, dilation,
pooling), BatchNormalization with random moving statistics, zero padding, rescaling and
global pooling, the shared zoo's random graphs (every merge) and its chain through every
activation. Each network gets random biases and statistics,
so nothing is trivially zero or one.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from model_zoo import ZOO as SHARED  # its random graphs and every activation

from cnnlab import cli
from cnnlab.errors import CnnlabError
from cnnlab.interop.onnx_export import export_model
from cnnlab.models import ModelDescription, build_module, get, parse_compact
from cnnlab.models import layers as L
from cnnlab.models.layers import DescriptionError
from cnnlab.ops import padding_amounts
from cnnlab.train import checkpoint, runs

ATOL = 1e-5  # the issue's tolerance on probabilities
REPO = Path(__file__).resolve().parents[2]

# The keras-zoo networks, layer for layer and name for name as their config.json.
KERAS_ZOO = {
    "conv2d_same_strides": "Input(28,28,1) Conv2D(8,5,2,same,relu,name=conv2d) "
    "Conv2D(16,3,same,tanh,name=conv2d_1) AveragePooling2D(2,name=average_pooling2d) "
    "Flatten(name=flatten) Dense(10,softmax,name=dense)",
    "conv1d_timeseries": "Input(100,6) Conv1D(16,7,same,relu,name=conv1d) "
    "MaxPooling1D(2,name=max_pooling1d) Conv1D(32,5,2,relu,name=conv1d_1) "
    "GlobalAveragePooling1D(name=global_average_pooling1d) Dense(4,softmax,name=dense_1)",
    "conv3d_video": "Input(8,16,16,1) Conv3D(4,3,relu,name=conv3d) "
    "MaxPooling3D(2,name=max_pooling3d) Conv3D(8,1x3x3,same,relu,name=conv3d_1) "
    "Flatten(name=flatten_1) Dense(5,softmax,name=dense_2)",
    "conv2d_bn_dilated": "Input(28,28,1) Conv2D(8,3,relu,dilation_rate=2,name=conv2d_2) "
    "BatchNormalization(name=batch_normalization) MaxPooling2D(3,2,same,name=max_pooling2d) "
    "Conv2D(12,3,use_bias=false,name=conv2d_3) Activation(relu,name=activation) "
    "GlobalMaxPooling2D(name=global_max_pooling2d) Dropout(0.3,name=dropout) "
    "Dense(10,softmax,name=dense_3)",
}
RANDOM_SEEDS = tuple(range(9))  # ranks 1, 2, 3 in turn
# the random chains draw these; the shared zoo's "activations" network has every one
CHAIN_ACTIVATIONS = ("relu", "elu", "tanh", "sigmoid", "softmax", "linear")


def keras_zoo_dir() -> Path | None:
    env = os.environ.get("CNNLAB_DATA")
    for root in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (root / "keras-zoo" / "index.json").is_file():
            return root / "keras-zoo"
    return None


# ---------------------------------------------------------------- random descriptions


def _sizes(rng: np.random.Generator, rank: int, low: int, high: int) -> list[int]:
    return [int(rng.integers(low, high + 1)) for _ in range(rank)]


def _block(rng: np.random.Generator, rank: int) -> list[tuple[str, dict[str, Any]]]:
    """A conv layer, perhaps with BatchNormalization, an activation, pooling, dropout."""
    strided = rng.random() < 0.4
    conv = {
        "filters": int(rng.integers(2, 7)),
        "kernel_size": _sizes(rng, rank, 1, 4),
        "strides": _sizes(rng, rank, 1, 2) if strided else 1,
        "dilation_rate": 1 if strided else int(rng.integers(1, 3)),
        "padding": str(rng.choice(["same", "valid"], p=[0.7, 0.3])),
        "activation": str(rng.choice(CHAIN_ACTIVATIONS)),
        "use_bias": bool(rng.random() < 0.8),
    }
    out: list[tuple[str, dict[str, Any]]] = [(f"Conv{rank}D", conv)]
    if rng.random() < 0.4:
        bn = {"epsilon": float(rng.choice([1e-3, 1e-5])), "center": bool(rng.random() < 0.8)}
        out.append(("BatchNormalization", {**bn, "scale": bool(rng.random() < 0.8)}))
    if rng.random() < 0.3:
        out.append(("Activation", {"activation": str(rng.choice(CHAIN_ACTIVATIONS))}))
    elif rng.random() < 0.2:
        out.append(("ReLU", {}))
    if rng.random() < 0.6:
        kind = str(rng.choice(["MaxPooling", "AveragePooling"]))
        pool = {"pool_size": _sizes(rng, rank, 2, 3), "padding": str(rng.choice(["same", "valid"]))}
        if rng.random() < 0.5:
            pool["strides"] = _sizes(rng, rank, 1, 2)
        out.append((f"{kind}{rank}D", pool))
    if rng.random() < 0.2:
        out.append(("Dropout", {"rate": 0.25}))
    return out


def _draw(rng: np.random.Generator, rank: int, name: str) -> ModelDescription:
    low, high = {1: (20, 48), 2: (9, 20), 3: (5, 10)}[rank]
    input_shape = [*_sizes(rng, rank, low, high), int(rng.integers(1, 4))]
    layers: list[tuple[str, dict[str, Any]]] = []
    if rng.random() < 0.3:
        layers.append(("Rescaling", {"scale": float(rng.uniform(0.5, 2)), "offset": -0.25}))
    if rng.random() < 0.3:
        pads = [[int(rng.integers(0, 3)), int(rng.integers(0, 3))] for _ in range(rank)]
        layers.append((f"ZeroPadding{rank}D", {"padding": pads}))
    for _ in range(int(rng.integers(1, 4))):
        layers += _block(rng, rank)
    classes = int(rng.integers(2, 8))
    head = int(rng.integers(0, 4))
    pool = str(rng.choice(["Average", "Max"]))
    if head == 0:
        layers += [(f"Global{pool}Pooling{rank}D", {}), ("Dense", {"units": classes})]
        layers.append(("Activation", {"activation": "softmax"}))
    elif head == 1:
        act = str(rng.choice(CHAIN_ACTIVATIONS))
        layers += [("Flatten", {}), ("Dense", {"units": 6, "activation": act})]
        layers.append(("Dense", {"units": classes, "activation": "softmax"}))
    else:
        layers += [(f"Conv{rank}D", {"filters": classes, "kernel_size": 1})]
        layers += [(f"Global{pool}Pooling{rank}D", {}), ("Softmax", {})]
    return ModelDescription.build(name, input_shape, layers)


def random_description(seed: int) -> ModelDescription:
    """A valid random description of rank 1 + seed % 3 (drawn again while it is not)."""
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        try:
            return _draw(rng, 1 + seed % 3, f"random{seed}")
        except DescriptionError:
            continue
    raise AssertionError(f"no valid description drawn for seed {seed}")


def features(desc: ModelDescription) -> set[str]:
    """What a description exercises, for the coverage check of the random zoo."""
    out = {f"rank{desc.rank}"}
    for info in desc.info:
        layer = info.layer
        out.add(
            layer.class_name.rstrip("123D") if layer.class_name[-1] == "D" else layer.class_name
        )
        act = getattr(layer, "activation", None)
        if act is not None:
            out.add(f"activation:{act}")
        if isinstance(layer, L.Conv | L.Pool) and layer.padding == "same":
            kernel = layer.kernel_size if isinstance(layer, L.Conv) else layer.pool_size
            dil = layer.dilation_rate if isinstance(layer, L.Conv) else (1,) * layer.rank
            for n, k, s, d in zip(info.in_shape[:-1], kernel, layer.strides, dil, strict=True):
                before, after = padding_amounts(n, k, stride=s, padding="same", dilation=d)
                if before != after:
                    out.add(f"asymmetric same {layer.class_name.rstrip('123D')}")
        if isinstance(layer, L.Conv) and max(layer.strides) > 1:
            out.add("strides")
        if isinstance(layer, L.Conv) and max(layer.dilation_rate) > 1:
            out.add("dilation")
    return out


def test_random_zoo_covers_what_the_issue_lists() -> None:
    seen = set().union(*(features(random_description(s)) for s in RANDOM_SEEDS))
    wanted = {"rank1", "rank2", "rank3", "strides", "dilation", "BatchNormalization"}
    wanted |= {f"activation:{a}" for a in ("relu", "elu", "tanh", "sigmoid", "softmax", "linear")}
    wanted |= {f"asymmetric same {k}" for k in ("Conv", "MaxPooling", "AveragePooling")}
    wanted |= {"ZeroPadding", "Rescaling", "ReLU"}
    wanted |= {"GlobalAveragePooling", "GlobalMaxPooling", "MaxPooling", "AveragePooling"}
    wanted |= {"Activation", "Softmax", "Flatten", "Dropout"}
    assert wanted <= seen, sorted(wanted - seen)


# ---------------------------------------------------------------- parity


def randomised(desc: ModelDescription, seed: int) -> torch.nn.Module:
    """Keras' initialisation, then random biases, BatchNormalization scales and statistics."""
    torch.manual_seed(seed)
    model = build_module(desc)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith(("bias", "running_mean")):
                t.uniform_(-0.5, 0.5)
            elif name.endswith(("running_var", "weight")) and t.ndim == 1:
                t.uniform_(0.5, 2.0)
    return model.eval()


def zoo() -> dict[str, ModelDescription]:
    out = {name: get(name) for name in ("case1", "case2", "case3", "speedrun")}
    out |= {name: parse_compact(line, name) for name, line in KERAS_ZOO.items()}
    out |= {f"random{s}": random_description(s) for s in RANDOM_SEEDS}
    out |= {n: d for n, d in SHARED.items() if n.startswith("graph") or n == "activations"}
    return out


ZOO = zoo()


@pytest.mark.parametrize("name", list(ZOO))
def test_onnxruntime_matches_pytorch(name: str, tmp_path: Path) -> None:
    desc = ZOO[name]
    model = randomised(desc, seed=len(name))
    path = export_model(model, tmp_path / "m.onnx").path
    c_first = (desc.input_shape[-1], *desc.input_shape[:-1])
    x = np.random.default_rng(1).normal(0.5, 0.5, size=(16, *c_first)).astype(np.float32)
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": x})
    assert got.shape == (16, desc.classes)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(got - want).max() <= ATOL
    assert np.abs(session.run(None, {"image": x[:1]})[0] - want[:1]).max() <= ATOL
    assert (want.max(axis=1) < 0.999).mean() >= 0.5, "probabilities saturated: a weak check"
    proto = onnx.load(str(path))
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]]
    assert dims == list(c_first)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["cnnlab_model"] == desc.name and meta["cnnlab_classes"] == str(desc.classes)
    assert ModelDescription.from_dict(json.loads(meta["cnnlab_description"])) == desc


def test_keras_zoo_descriptions_match_the_keras_files() -> None:
    folder = keras_zoo_dir()
    if folder is None:
        pytest.skip("keras-zoo not found: set CNNLAB_DATA to a folder holding keras-zoo/")
    index = json.loads((folder / "index.json").read_text())
    assert set(index) == set(KERAS_ZOO)
    for name, line in KERAS_ZOO.items():
        desc = parse_compact(line, name)
        with zipfile.ZipFile(folder / f"{name}.keras") as z:
            config = json.loads(z.read("config.json"))["config"]["layers"]
        assert config[0]["class_name"] == "InputLayer"
        assert (
            list(desc.input_shape)
            == config[0]["config"]["batch_shape"][1:]
            == index[name]["input_shape"]
        )
        assert [c["class_name"] for c in config[1:]] == [x.class_name for x in desc.layers]
        for keras, layer in zip(config[1:], desc.layers, strict=True):
            ours = {"name": layer.name, **layer.config()}
            shared = {k: v for k, v in keras["config"].items() if k in ours}
            assert shared == {k: ours[k] for k in shared}, (name, layer.name)
        assert desc.params == index[name]["params"] and desc.classes == index[name]["classes"]


def test_non_classifier_is_refused_and_nothing_written(tmp_path: Path) -> None:
    desc = parse_compact("Input(10,2) Conv1D(3,3) Flatten Dense(4)", "regressor")
    with pytest.raises(CnnlabError, match="not a classifier"):
        export_model(build_module(desc), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_cli_exports_a_run_of_any_description(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    desc = ZOO["conv3d_video"]
    run = tmp_path / "run"
    run.mkdir()
    runs.save_torch(run / "best.pt", checkpoint.make_checkpoint(desc, randomised(desc, 0), 4))
    assert cli.main(["export", str(run), "--onnx", str(tmp_path / "v.onnx")]) == 0
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "v.onnx")).metadata_props}
    assert meta["cnnlab_model"] == "conv3d_video" and meta["cnnlab_epoch"] == "4"
    assert meta["cnnlab_checkpoint"] == "run/best.pt"


def test_keras_zoo_through_import_and_export_matches_keras(tmp_path: Path) -> None:
    """End to end: each .keras file imported, exported, run in onnxruntime: Keras' outputs."""
    folder = keras_zoo_dir()
    if folder is None:
        pytest.skip("keras-zoo not found: set CNNLAB_DATA to a folder holding keras-zoo/")
    for name in KERAS_ZOO:
        run, path = tmp_path / name, tmp_path / f"{name}.onnx"
        assert cli.main(["import-keras", str(folder / f"{name}.keras"), "--out", str(run)]) == 0
        assert cli.main(["export", str(run), "--onnx", str(path)]) == 0
        x = np.load(folder / f"{name}.inputs.npy")  # channels last, as Keras takes it
        want = np.load(folder / f"{name}.outputs.npy")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {"image": np.ascontiguousarray(np.moveaxis(x, -1, 1))})
        assert np.abs(got - want).max() <= ATOL, name

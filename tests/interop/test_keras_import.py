"""Importing Keras 3 .keras files: any Sequential CNN, Keras' own outputs, hostile files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from cnnlab import cli, fileio, ops
from cnnlab.data import MNIST
from cnnlab.errors import CnnlabError
from cnnlab.interop.keras_config import snake_case
from cnnlab.interop.keras_import import import_keras, read_keras
from cnnlab.models import ModelDescription, Network, build_module, get, parse_compact
from cnnlab.models import layers as L
from cnnlab.train import checkpoint
from cnnlab.train.records import read_run_config

REPO = Path(__file__).resolve().parents[2]

# --- a .keras writer for tests: Keras 3's layout, written by hand ---------------------------

_F32 = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}}
_GLOROT = {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {}}
# What Keras 3.15 writes besides each class's own arguments (none changes the computation).
_EXTRA: dict[str, dict[str, Any]] = {
    "Conv": {"groups": 1, "data_format": "channels_last", "kernel_initializer": _GLOROT}
    | {"bias_initializer": None, "kernel_regularizer": None, "activity_regularizer": None}
    | {"kernel_constraint": None, "bias_constraint": None},
    "Pooling": {"data_format": "channels_last"},
    "Global": {"data_format": "channels_last", "keepdims": False},
    "ZeroPadding": {"data_format": "channels_last"},
    "Flatten": {"data_format": "channels_last"},
    "Dense": {"kernel_initializer": _GLOROT, "quantization_config": None, "lora_rank": None},
    "Dropout": {"seed": None, "noise_shape": None},
    "BatchNormalization": {"axis": -1, "renorm": False, "synchronized": False},
    "ReLU": {"max_value": None, "negative_slope": 0.0, "threshold": 0.0},
    "Softmax": {"axis": -1},
}


def klayer(cls: str, name: str, **cfg: Any) -> dict[str, Any]:
    config = {"name": name, "trainable": True, "dtype": _F32, **cfg}
    return {"module": "keras.layers", "class_name": cls, "config": config, "registered_name": None}


def _extra(cls: str) -> dict[str, Any]:
    for stem, extra in _EXTRA.items():
        if cls.startswith(stem) or (stem == "Pooling" and "Pooling" in cls and "Global" not in cls):
            return extra
    return {}


def keras_config(desc: ModelDescription) -> dict[str, Any]:
    """``desc`` as Keras 3 writes a Sequential's config.json."""
    inp = {"class_name": "InputLayer", "config": {"batch_shape": [None, *desc.input_shape]}}
    inp["config"] |= {"dtype": "float32", "sparse": False, "ragged": False, "name": "input_layer"}
    layers = [inp] + [
        klayer(x.class_name, x.name, **(_extra(x.class_name) | x.config())) for x in desc.layers
    ]
    return {"module": "keras", "class_name": "Sequential", "config": {"layers": layers}}


def keras_weights(model: Network) -> dict[str, np.ndarray]:
    """A network's weights in Keras' layouts, keyed by their path in model.weights.h5."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    out: dict[str, np.ndarray] = {}
    used: dict[str, int] = {}
    for layer in model.description.layers:
        stem = snake_case(layer.class_name)  # Keras 3 numbers the groups by class, in order
        used[stem] = used.get(stem, -1) + 1
        group = f"layers/{stem}" + (f"_{used[stem]}" if used[stem] else "")
        n, arrays = layer.name, []
        if isinstance(layer, L.Conv):  # torch (out, in, *k) -> Keras (*k, in, out)
            arrays.append(sd[f"{n}.weight"].transpose(*range(2, 2 + layer.rank), 1, 0))
        elif isinstance(layer, L.Dense):  # (out, in) -> (in, out)
            arrays.append(sd[f"{n}.weight"].T)
        if isinstance(layer, L.Conv | L.Dense) and layer.use_bias:
            arrays.append(sd[f"{n}.bias"])
        if isinstance(layer, L.BatchNormalization):  # gamma, beta, moving mean, variance
            names = ["weight"] * layer.scale + ["bias"] * layer.center
            arrays += [sd[f"{n}.{k}"] for k in (*names, "running_mean", "running_var")]
        out |= {f"{group}/vars/{i}": a for i, a in enumerate(arrays)}
    return out


def h5_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for key, arr in arrays.items():
            f.create_dataset(key, data=arr)
    return buf.getvalue()


def write_keras(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def members(config: Any, arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    return {
        "metadata.json": json.dumps({"keras_version": "3.15.1"}).encode(),
        "config.json": json.dumps(config).encode(),
        "model.weights.h5": h5_bytes(arrays),
    }


def randomised(desc: ModelDescription, seed: int = 0) -> Network:
    """The network with every weight random: biases, betas, moving statistics too."""
    torch.manual_seed(seed)
    model = build_module(desc).eval()
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if key.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            elif t.ndim == 1:
                t.uniform_(-0.5, 0.5)
    return model


def save_keras(path: Path, model: Network) -> Path:
    return write_keras(path, members(keras_config(model.description), keras_weights(model)))


def import_cli(keras_file: Path, out: Path, *extra: str) -> int:
    return cli.main(["import-keras", str(keras_file), "--out", str(out), *extra])


def proba(run_dir: Path, x: np.ndarray) -> np.ndarray:
    """Probabilities of a run folder's network for channels-last inputs ``x``."""
    model, _ = checkpoint.load_model(run_dir)
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x).movedim(-1, 1)), dim=1).numpy()


# --- Keras' own outputs: the zoo of Sequential CNNs saved by Keras 3.15.1 --------------------


def _shared_data() -> Path:
    env = os.environ.get("CNNLAB_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


ZOO = _shared_data() / "keras-zoo"
ZOO_INDEX = json.loads((ZOO / "index.json").read_text()) if (ZOO / "index.json").is_file() else {}


@pytest.mark.parametrize("name", sorted(ZOO_INDEX) or ["(keras-zoo absent)"])
def test_zoo_models_reproduce_keras_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    if not ZOO_INDEX:
        pytest.skip(f"the Keras zoo is not in {ZOO}")
    entry = ZOO_INDEX[name]
    out = tmp_path / "run"
    assert import_cli(ZOO / f"{name}.keras", out) == 0
    said = capsys.readouterr().out
    assert f"{entry['params']:,} parameters" in said and f"{len(entry['layers'])} layers" in said
    x = np.load(ZOO / f"{name}.inputs.npy")
    want = np.load(ZOO / f"{name}.outputs.npy")
    got = proba(out, x)
    assert got.shape == want.shape == (len(x), entry["classes"])
    diff = float(np.abs(got - want).max())
    assert diff <= 1e-5, f"{name}: max |cnnlab - keras| = {diff:.3g}"
    # and through `cnnlab predict RUN_DIR --array X.npy --json`
    assert (
        cli.main(["predict", str(out), "--array", str(ZOO / f"{name}.inputs.npy"), "--json"]) == 0
    )
    rows = json.loads(capsys.readouterr().out)
    via_cli = np.array([row["probabilities"] for row in rows])
    assert float(np.abs(via_cli - want).max()) <= 1e-5
    assert [row["class"] for row in rows] == want.argmax(1).tolist()
    desc = ModelDescription.from_dict(fileio.read_json(out / "model.json"))
    assert list(desc.input_shape) == entry["input_shape"]
    assert [x.class_name for x in desc.layers] == entry["layers"]
    assert desc.params == entry["params"]
    assert fileio.read_json(out / "metrics.json")["params"] == entry["params"]


# --- round trips and an independent NumPy reference ------------------------------------------

ROUND_TRIPS = {
    "series": "Input(20,3) Conv1D(4,5,2,same,tanh) AveragePooling1D(2,same) ZeroPadding1D(1) "
    "Conv1D(3,3,dilation_rate=2,use_bias=false) GlobalMaxPooling1D Dense(3,sigmoid)",
    "video": "Input(4,6,6,2) Conv3D(3,2x3x3,same,elu,use_bias=false) MaxPooling3D(1x2x2) "
    "BatchNormalization(center=false) ZeroPadding3D(1) AveragePooling3D(2) Flatten "
    "Dropout(0.5) Dense(2,softmax)",
    "image": "Input(9,9,2) Rescaling(0.5,0.25) Conv2D(4,2,2,same,relu) "
    "BatchNormalization(scale=false,epsilon=0.01) GlobalAveragePooling2D Dense(3) ReLU "
    "Dense(4,use_bias=false) Softmax",
}


@pytest.mark.parametrize("spec", ["case1", "case2", "case3", "speedrun", *ROUND_TRIPS])
def test_round_trip_keeps_every_weight(tmp_path: Path, spec: str) -> None:
    desc = get(spec) if spec in ("case1", "case2", "case3", "speedrun") else None
    desc = desc or parse_compact(ROUND_TRIPS[spec], spec)
    model = randomised(desc)
    km = read_keras(save_keras(tmp_path / "m.keras", model))
    assert km.description.layers == desc.layers and km.description.name == "m"
    want = model.state_dict()
    assert set(km.state_dict) == set(want)
    for key, value in want.items():
        assert torch.equal(km.state_dict[key], value), key


def test_imported_model_matches_a_channels_last_numpy_forward(tmp_path: Path) -> None:
    """Keras' semantics computed independently (cnnlab.ops, channels-last NumPy)."""
    desc = parse_compact(
        "Input(10,10,2) Rescaling(0.5,0.1) ZeroPadding2D(1) Conv2D(4,3,use_bias=false) "
        "BatchNormalization(center=false) ReLU MaxPooling2D(2) "
        "BatchNormalization(scale=false,epsilon=0.01) Flatten Dense(5,use_bias=false) Softmax",
        "ref",
    )
    model = randomised(desc, seed=3)
    w = {k: v.astype(np.float64) for k, v in keras_weights(model).items()}
    x = np.random.default_rng(0).random((6, 10, 10, 2), dtype=np.float32)
    a = np.pad(x.astype(np.float64) * 0.5 + 0.1, ((0, 0), (1, 1), (1, 1), (0, 0)))
    a = ops.conv(a, w["layers/conv2d/vars/0"])
    g, m, v = (w[f"layers/batch_normalization/vars/{i}"] for i in range(3))
    a = ops.max_pool(np.maximum((a - m) / np.sqrt(v + 1e-3) * g, 0))
    b, m, v = (w[f"layers/batch_normalization_1/vars/{i}"] for i in range(3))
    z = ((a - m) / np.sqrt(v + 0.01) + b).reshape(len(a), -1) @ w["layers/dense/vars/0"]
    want = np.exp(z - z.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    out = tmp_path / "run"
    assert import_cli(save_keras(tmp_path / "m.keras", model), out) == 0
    np.testing.assert_allclose(proba(out, x), want, atol=1e-6)


# --- the run folder ---------------------------------------------------------------------------


def test_run_folder_is_like_a_trained_one_marked_imported(
    tmp_path: Path, tiny_mnist: MNIST, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cnnlab.analysis.evaluation import evaluate_run
    from cnnlab.interop import keras_import

    path = save_keras(tmp_path / "m.keras", randomised(get("case3")))
    written: list[str] = []
    for mod, fn in ((keras_import.fileio, "write_json"), (keras_import.runs, "save_torch")):
        real = getattr(mod, fn)
        monkeypatch.setattr(
            mod, fn, lambda p, obj, real=real: (written.append(p.name), real(p, obj))
        )
    out = tmp_path / "run"
    metrics = import_keras(path, None, out)
    assert written == ["best.pt", "model.json", "metrics.json", "config.json"]  # config last
    source = {"format": "keras", "file": "m.keras", "keras_version": "3.15.1", "renamed": {}}
    source["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    counts = {"params": 10090, "trainable_params": 10090}
    assert metrics == {"model": "m", "case": "m", **counts, "imported_from": source}
    saved = fileio.read_json(out / "config.json")
    assert saved["imported_from"] == source
    assert saved["model"] == fileio.read_json(out / "model.json")
    config, desc = read_run_config(out)
    assert config.model == "m" and desc.layers == get("case3").layers
    _, ckpt = checkpoint.load_model(out)
    assert ckpt["format"] == "cnnlab-checkpoint-2" and ckpt["epoch"] == 0
    assert 0.0 <= evaluate_run(out, tiny_mnist)["test_accuracy"] <= 1.0
    with pytest.raises(CnnlabError, match="already holds a run"):
        import_keras(path, None, out)


def test_case_check_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_data: MNIST
) -> None:
    path = save_keras(tmp_path / "m.keras", randomised(get("case2")))
    out = tmp_path / "run"
    assert import_cli(path, out, "--case", "3") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not the chapter's case3" in err and "use --case 2" in err
    assert not out.exists()
    assert import_cli(path, out, "--case", "2", "--evaluate") == 0
    said = capsys.readouterr().out
    assert "as case2: 6 layers, 3,210 parameters, input 28x28x1 -> 10" in said
    assert "checked to be the chapter's case2" in said and "test_accuracy" in said
    assert checkpoint.load_model(out)[1]["name"] == "case2"
    # one argument off: the line names the layer and both values
    cfg = keras_config(get("case1"))
    cfg["config"]["layers"][3]["config"]["filters"] = 32
    bad = write_keras(tmp_path / "bad.keras", members(cfg, {}))
    assert import_cli(bad, tmp_path / "bad", "--case", "1") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "layer 3 (Conv2D 'conv2'): filters=32, case1 has 64" in err
    assert not (tmp_path / "bad").exists()


def test_evaluate_needs_an_mnist_shaped_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = save_keras(tmp_path / "s.keras", randomised(parse_compact(ROUND_TRIPS["series"], "s")))
    assert import_cli(path, tmp_path / "run", "--evaluate") == 2
    assert "maps 20x3 to 3" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_keras_names_are_sanitised_into_module_names(tmp_path: Path) -> None:
    desc = parse_compact("Input(6,6,1) Conv2D(2,3) Flatten Dense(3) Dense(2)", "n")
    model = randomised(desc)
    cfg = keras_config(desc)
    keras_names = ["conv.1", "forward", "1 x", "forward"]
    for entry, name in zip(cfg["config"]["layers"][1:], keras_names, strict=True):
        entry["config"]["name"] = name
    path = write_keras(tmp_path / "n.keras", members(cfg, keras_weights(model)))
    km = read_keras(path)
    names = [x.name for x in km.description.layers]
    assert names == ["conv_1", "forward_", "dense_1_x", "forward__1"]
    assert km.source["renamed"] == dict(zip(names, keras_names, strict=True))
    net = build_module(km.description)
    net.load_state_dict(km.state_dict)  # the keys fit the module
    assert torch.equal(net(torch.ones(1, 1, 6, 6)), model(torch.ones(1, 1, 6, 6)))


def test_input_shape_from_the_first_layer_without_an_input_layer(tmp_path: Path) -> None:
    model = randomised(parse_compact("Input(5,2) Conv1D(2,3) Flatten Dense(2)", "x"))
    cfg = keras_config(model.description)
    del cfg["config"]["layers"][0]
    cfg["config"]["layers"][0]["build_config"] = {"input_shape": [None, 5, 2]}
    km = read_keras(write_keras(tmp_path / "x.keras", members(cfg, keras_weights(model))))
    assert km.description.input_shape == (5, 2)


# --- unsupported and hostile files: one line, exit 2, nothing written -----------------------

BASE = "Input(8,8,1) Conv2D(2,3,relu) BatchNormalization Conv2D(3,3) Flatten Dense(4,softmax)"
Edit = Callable[[dict[str, Any], dict[str, np.ndarray], Path], "dict[str, bytes] | bytes"]


def _arg(i: int, **changes: Any) -> Edit:
    """Layer ``i`` (0 is the InputLayer) with changed config values."""

    def edit(cfg: dict[str, Any], arrays: dict[str, np.ndarray], tmp: Path) -> dict[str, bytes]:
        cfg["config"]["layers"][i]["config"].update(changes)
        return members(cfg, arrays)

    return edit


def _layers(change: Callable[[list[Any]], object]) -> Edit:
    def edit(cfg: dict[str, Any], arrays: dict[str, np.ndarray], tmp: Path) -> dict[str, bytes]:
        change(cfg["config"]["layers"])
        return members(cfg, arrays)

    return edit


def _weights(key: str, value: Any) -> Edit:
    """``value`` (None: nothing, h5py link: that link) at ``key`` in model.weights.h5."""

    def edit(cfg: dict[str, Any], arrays: dict[str, np.ndarray], tmp: Path) -> dict[str, bytes]:
        out = members(cfg, {k: v for k, v in arrays.items() if k != key})
        if value is None:
            return out
        buf = io.BytesIO(out["model.weights.h5"])
        with h5py.File(buf, "a") as f:
            if isinstance(value, h5py.ExternalLink):
                with h5py.File(tmp / "outside.h5", "w") as outside:
                    outside.create_dataset("k", data=arrays[key])
            f[key] = value
        out["model.weights.h5"] = buf.getvalue()
        return out

    return edit


def _member(name: str, data: bytes | None) -> Edit:
    def edit(cfg: dict[str, Any], arrays: dict[str, np.ndarray], tmp: Path) -> dict[str, bytes]:
        out = members(cfg, arrays)
        return {k: v for k, v in out.items() if k != name} | ({name: data} if data else {})

    return edit


def _corrupt(cfg: dict[str, Any], arrays: dict[str, np.ndarray], tmp: Path) -> bytes:
    raw = bytearray(write_keras(tmp / "tmp.keras", members(cfg, arrays)).read_bytes())
    start = raw.find(b"model.weights.h5") + 60  # inside that member's compressed data
    raw[start : start + 64] = bytes(64)
    return bytes(raw)


def _twice(cfg: dict[str, Any], arrays: dict[str, np.ndarray], tmp: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, pytest.warns(UserWarning, match="Duplicate"):
        for name, data in members(cfg, arrays).items():
            zf.writestr(name, data)
        zf.writestr("config.json", b"{}")
    return buf.getvalue()


_LSTM = klayer("LSTM", "lstm", units=4)
_KERAS = {"module": "keras"}  # where Keras writes a nested model's class
HOSTILE: dict[str, tuple[Edit, str]] = {
    "lstm": (_layers(lambda ls: ls.insert(4, _LSTM)), "layer 4 (LSTM 'lstm'): layer class LSTM"),
    "transpose": (
        _layers(lambda ls: ls[3].update(class_name="Conv2DTranspose")),
        "layer 3 (Conv2DTranspose 'conv2d_1'): layer class Conv2DTranspose is not supported",
    ),
    "groups": (_arg(3, groups=2), "layer 3 (Conv2D 'conv2d_1'): groups=2 is not supported"),
    "channels first": (
        _arg(1, data_format="channels_first"),
        "layer 1 (Conv2D 'conv2d'): data_format='channels_first' is not supported",
    ),
    "causal": (
        _arg(1, padding="causal"),
        "layer 1 (Conv2D 'conv2d'): padding must be one of valid, same, got 'causal'",
    ),
    "celu": (_arg(5, activation="celu"), "layer 5 (Dense 'dense'): activation must be one of"),
    "bn axis": (_arg(2, axis=1), "(BatchNormalization 'batch_normalization'): axis=1 is not"),
    "renorm": (_arg(2, renorm=True), "renorm=True is not supported"),
    "mixed precision": (
        _arg(3, dtype=_F32 | {"config": {"name": "mixed_float16"}}),
        "layer 3 (Conv2D 'conv2d_1'): dtype policy 'mixed_float16' is not supported",
    ),
    "int8 input": (_arg(0, dtype="int8"), "the InputLayer: dtype 'int8' is not supported"),
    "dense on maps": (
        _layers(lambda ls: ls.pop(4)),
        "layer 4 (Dense 'dense'): needs a flat input, got 4x4x3",
    ),
    "unknown argument": (_arg(1, foo=1), "layer 1 (Conv2D 'conv2d'): argument 'foo' is not"),
    "bool for int": (_arg(1, groups=True), "groups=True is not supported"),
    "long list": (_arg(1, kernel_size=[3] * 1000), "kernel_size=[3, 3, 3"),
    "custom module": (
        _layers(lambda ls: ls[1].update(module="evil.layers")),
        "module 'evil.layers' is not Keras' own",
    ),
    "empty nested model": (
        _layers(lambda ls: ls.insert(2, klayer("Sequential", "inner", layers=[]) | _KERAS)),
        "layer 2 (Sequential 'inner') has no layers",
    ),
    "nested model elsewhere": (
        _layers(lambda ls: ls.insert(2, klayer("Sequential", "inner", layers=[]))),
        "layer 2 (Sequential 'inner'): module 'keras.layers' is not Keras' own",
    ),
    "empty functional": (
        _member("config.json", json.dumps({"class_name": "Functional", "config": {}}).encode()),
        "the model has no list of layers in config.json",
    ),
    "not a model": (
        _member("config.json", json.dumps({"class_name": "Dense", "config": {}}).encode()),
        "holds a 'Dense' model; a Keras Sequential or functional model imports",
    ),
    "variable input": (_arg(0, batch_shape=[None, None, 8, 1]), "must be fixed"),
    "deep json": (_member("config.json", b"[" * 200_000 + b"]" * 200_000), "nested too deep"),
    "nan in json": (_member("config.json", b'{"a": NaN}'), "config.json is not valid JSON"),
    "bad json": (_member("config.json", b"{nope"), "config.json is not valid JSON"),
    "missing variable": (
        _weights("layers/conv2d_1/vars/1", None),
        "layer 3 (Conv2D 'conv2d_1'): model.weights.h5 has no array at layers/conv2d_1/vars/1",
    ),
    "wrong shape": (
        _weights("layers/dense/vars/0", np.zeros((48, 5), np.float32)),
        "layers/dense/vars/0 in model.weights.h5 has shape (48, 5), expected (48, 4)",
    ),
    "transposed kernel": (
        _weights("layers/conv2d/vars/0", np.zeros((2, 1, 3, 3), np.float32)),
        "has shape (2, 1, 3, 3), expected (3, 3, 1, 2)",
    ),
    "nan weight": (_weights("layers/dense/vars/1", np.full(4, np.nan, np.float32)), "NaN"),
    "int weight": (_weights("layers/dense/vars/1", np.zeros(4, np.int32)), "int32, not floats"),
    "extra weight": (
        _weights("layers/conv2d_1/vars/2", np.zeros(3, np.float32)),
        "model.weights.h5 holds more weights for it (layers/conv2d_1/vars/2)",
    ),
    "negative variance": (
        _weights("layers/batch_normalization/vars/3", -np.ones(2, np.float32)),
        "its moving variance has negative values",
    ),
    "external link": (
        _weights("layers/conv2d/vars/0", h5py.ExternalLink("outside.h5", "k")),
        "layers/conv2d/vars/0 in model.weights.h5 is an external link; links are not followed",
    ),
    "soft link": (
        _weights("layers/dense/vars/1", h5py.SoftLink("/layers/conv2d_1/vars/1")),
        "layers/dense/vars/1 in model.weights.h5 is a soft link; links are not followed",
    ),
    "h5 garbage": (_member("model.weights.h5", b"\x89HDF not really"), "not a readable HDF5"),
    "no weights": (_member("model.weights.h5", None), "lacks model.weights.h5"),
    "not a zip": (lambda cfg, arrays, tmp: b"just some text", "not a zip archive"),
    # 2 MB of spaces deflate to a few kB: the declared size stops it before inflating.
    "zip bomb": (_member("config.json", b" " * (2 << 20)), "would unpack to 2,097,152 bytes"),
    "member twice": (_twice, "the zip holds config.json twice"),
    "corrupt member": (_corrupt, "damaged"),
}


@pytest.mark.parametrize("label", sorted(HOSTILE))
def test_unsupported_or_hostile_file_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], label: str
) -> None:
    edit, message = HOSTILE[label]
    model = randomised(parse_compact(BASE, "base"))
    content = edit(keras_config(model.description), keras_weights(model), tmp_path)
    path = tmp_path / "m.keras"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        write_keras(path, content)
    out = tmp_path / "run"
    assert import_cli(path, out) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cnnlab: error: {path}") and err.count("\n") == 1, err
    assert message in err
    assert not out.exists()


def test_the_unedited_base_model_imports(tmp_path: Path) -> None:
    """(So that each refusal above is the edit's doing.)"""
    model = randomised(parse_compact(BASE, "base"))
    path = save_keras(tmp_path / "m.keras", model)
    assert import_cli(path, tmp_path / "run") == 0


# --- the real files saved by the chapter's code (Keras 3.15.1, TensorFlow 2.21) -------------


@pytest.fixture(scope="module")
def keras_dir(mnist_data_dir: Path) -> Path:
    d = mnist_data_dir / "keras"
    if not (d / "expected.json").is_file():
        pytest.skip(f"the chapter's .keras files are not in {d}")
    return d


@pytest.mark.mnist
@pytest.mark.parametrize("case", [1, 2, 3])
def test_real_keras_model_matches_keras_figures(
    tmp_path: Path, keras_dir: Path, mnist: MNIST, case: int
) -> None:
    from cnnlab.analysis.evaluation import evaluate_run

    name = f"case{case}_best_model.keras"
    expected = json.loads((keras_dir / "expected.json").read_text())[name]
    assert import_cli(keras_dir / name, tmp_path / "checked", "--case", str(case)) == 0
    assert import_cli(keras_dir / name, tmp_path / "plain") == 0
    metrics = fileio.read_json(tmp_path / "checked" / "metrics.json")
    assert metrics["params"] == expected["params"] and metrics["model"] == f"case{case}"
    result = evaluate_run(tmp_path / "checked", mnist)  # what `cnnlab evaluate RUN_DIR` computes
    # 0.01 percentage points = 1e-4 as a fraction; Keras' figures are float32.
    assert abs(result["test_accuracy"] - expected["test_accuracy"]) <= 1e-4
    assert abs(result["test_loss"] - expected["test_loss"]) <= 1e-4
    # without --case: the same network and weights, under the Keras file's names
    checked, plain = (checkpoint.load_model(tmp_path / d)[0] for d in ("checked", "plain"))
    assert plain.description.name == f"case{case}_best_model"
    assert plain.description.layers == checked.description.layers
    for (k1, v1), (k2, v2) in zip(
        checked.state_dict().items(), plain.state_dict().items(), strict=True
    ):
        assert k1 == k2 and torch.equal(v1, v2)


@pytest.mark.mnist
def test_real_case1_file_is_not_case2(
    tmp_path: Path, keras_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert import_cli(keras_dir / "case1_best_model.keras", tmp_path / "run", "--case", "2") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not the chapter's case2: it has 9 layers" in err
    assert "it is case1's architecture (use --case 1)" in err
    assert not (tmp_path / "run").exists()

"""Importing the chapter's .keras files: layout conversion, validation, the real Keras figures."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from cnnlab import cli, fileio
from cnnlab.data import MNIST
from cnnlab.errors import CnnlabError
from cnnlab.interop.keras_import import import_keras, read_keras
from cnnlab.models import create_model
from cnnlab.train import checkpoint

# --- a .keras writer for tests: Keras 3's layout, written by hand ---------------------------

_F32 = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}}


def _layer(cls: str, **cfg: Any) -> dict[str, Any]:
    return {"module": "keras.layers", "class_name": cls, "config": {"dtype": _F32, **cfg}}


def _conv(filters: int) -> dict[str, Any]:
    return _layer(
        "Conv2D",
        filters=filters,
        kernel_size=[3, 3],
        strides=[1, 1],
        padding="valid",
        data_format="channels_last",
        dilation_rate=[1, 1],
        groups=1,
        activation="relu",
        use_bias=True,
    )


def _pool() -> dict[str, Any]:
    return _layer(
        "MaxPooling2D",
        pool_size=[2, 2],
        strides=[2, 2],
        padding="valid",
        data_format="channels_last",
    )


def _dense(units: int, activation: str) -> dict[str, Any]:
    return _layer("Dense", units=units, activation=activation, use_bias=True)


def keras_config(case: int) -> dict[str, Any]:
    """The chapter's Sequential for ``case`` as Keras 3 writes config.json."""
    gap = _layer("GlobalAveragePooling2D", data_format="channels_last", keepdims=False)
    body = {
        1: [_conv(16), _pool(), _conv(64), _pool(), _layer("Flatten", data_format="channels_last")]
        + [_layer("Dropout", rate=0.25), _dense(32, "relu"), _layer("Dropout", rate=0.25)]
        + [_dense(10, "softmax")],
        2: [_conv(32), _pool(), _conv(10), _pool(), gap, _layer("Softmax", axis=-1)],
        3: [_conv(16), _pool(), _conv(64), _pool(), gap, _dense(10, "softmax")],
    }[case]
    inp = _layer("InputLayer", batch_shape=[None, 28, 28, 1], dtype="float32")
    return {"module": "keras", "class_name": "Sequential", "config": {"layers": [inp, *body]}}


# Keras 3's h5 names (class name, numbered in order) for the torch layers of each case.
H5_NAMES = {
    1: {"conv1": "conv2d", "conv2": "conv2d_1", "dense1": "dense", "dense2": "dense_1"},
    2: {"conv1": "conv2d", "conv2": "conv2d_1"},
    3: {"conv1": "conv2d", "conv2": "conv2d_1", "dense": "dense"},
}


def keras_weights(model: torch.nn.Module, case: int) -> dict[str, np.ndarray]:
    """A torch model's weights in Keras' layout, keyed by their path in model.weights.h5."""
    sd = model.state_dict()
    out = {}
    for torch_name, h5_name in H5_NAMES[case].items():
        w = sd[f"{torch_name}.weight"].numpy()
        # torch conv (out, in, kh, kw) -> Keras (kh, kw, in, out); Linear (out, in) -> (in, out)
        out[f"layers/{h5_name}/vars/0"] = w.transpose(2, 3, 1, 0) if w.ndim == 4 else w.T
        out[f"layers/{h5_name}/vars/1"] = sd[f"{torch_name}.bias"].numpy()
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


def members_for(model: torch.nn.Module, case: int) -> dict[str, bytes]:
    return {
        "metadata.json": json.dumps({"keras_version": "3.15.1"}).encode(),
        "config.json": json.dumps(keras_config(case)).encode(),
        "model.weights.h5": h5_bytes(keras_weights(model, case)),
    }


# --- an independent reference: the Keras model's forward pass, channels-last in NumPy -------


def keras_forward(x: np.ndarray, w: dict[str, np.ndarray], case: int) -> np.ndarray:
    """Softmax outputs of the chapter's Keras model: (N, 28, 28, 1) -> (N, 10), float64."""

    def conv_relu(a: np.ndarray, k: np.ndarray, b: np.ndarray) -> np.ndarray:
        kh, kw = k.shape[:2]
        h, wd = a.shape[1] - kh + 1, a.shape[2] - kw + 1
        patches = np.stack(
            [a[:, i : i + h, j : j + wd, :] for i in range(kh) for j in range(kw)], axis=3
        )  # (N, H, W, kh*kw, C)
        return np.maximum(
            np.einsum("nhwpc,pco->nhwo", patches, k.reshape(kh * kw, *k.shape[2:])) + b, 0
        )

    def pool(a: np.ndarray) -> np.ndarray:
        n, h, wd, c = a.shape
        a = a[:, : h // 2 * 2, : wd // 2 * 2]
        return a.reshape(n, h // 2, 2, wd // 2, 2, c).max(axis=(2, 4))

    names = H5_NAMES[case]
    a = x.astype(np.float64)
    for conv in ("conv1", "conv2"):
        key = f"layers/{names[conv]}/vars/"
        a = pool(conv_relu(a, w[key + "0"], w[key + "1"]))
    if case == 1:
        flat = a.reshape(len(a), -1)  # Keras' Flatten: (H, W, C) order
        hidden = np.maximum(flat @ w["layers/dense/vars/0"] + w["layers/dense/vars/1"], 0)
        z = hidden @ w["layers/dense_1/vars/0"] + w["layers/dense_1/vars/1"]
    else:
        z = a.mean(axis=(1, 2))
        if case == 3:
            z = z @ w["layers/dense/vars/0"] + w["layers/dense/vars/1"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("case", [1, 2, 3])
def test_converted_model_matches_keras_forward(
    tmp_path: Path, global_random_seed: int, case: int
) -> None:
    model = create_model(case)
    with torch.no_grad():  # non-zero biases, so a lost bias would show
        for p in model.parameters():
            if p.ndim == 1:
                p.uniform_(-0.1, 0.1)
    path = write_keras(tmp_path / "m.keras", members_for(model, case))
    km = read_keras(path, case)
    for key, value in model.state_dict().items():
        assert torch.equal(km.state_dict[key], value), key
    rng = np.random.default_rng(global_random_seed)
    x = rng.random((8, 28, 28, 1), dtype=np.float32)  # (N, H, W, C)
    expected = keras_forward(x, keras_weights(model, case), case)
    imported = create_model(case)
    imported.load_state_dict(km.state_dict)
    imported.eval()
    with torch.no_grad():
        got = torch.softmax(imported(torch.from_numpy(x).permute(0, 3, 1, 2)), dim=1).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_import_writes_an_evaluable_run(tmp_path: Path, tiny_mnist: MNIST) -> None:
    from cnnlab.analysis.evaluation import evaluate_run

    torch.manual_seed(1)
    model = create_model(3)
    path = write_keras(tmp_path / "m.keras", members_for(model, 3))
    out = tmp_path / "run"
    metrics = import_keras(path, 3, out)
    assert metrics["params"] == 10090
    assert {p.name for p in out.iterdir()} == {"best.pt", "config.json", "metrics.json"}
    saved = fileio.read_json(out / "config.json")
    assert saved["config"]["case"] == "case3"
    assert saved["imported_from"]["file"] == "m.keras"
    assert len(saved["imported_from"]["sha256"]) == 64
    _, ckpt = checkpoint.load_model(out)
    assert ckpt["case"] == "case3"
    result = evaluate_run(out, tiny_mnist)
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert fileio.read_json(out / "metrics.json")["params"] == 10090
    with pytest.raises(CnnlabError, match="already holds a run"):
        import_keras(path, 3, out)


def _replace_member(members: dict[str, bytes], name: str, data: bytes | None) -> dict[str, bytes]:
    out = dict(members)
    if data is None:
        del out[name]
    else:
        out[name] = data
    return out


def _config_with(case: int, index: int, **changes: Any) -> bytes:
    cfg = keras_config(case)
    cfg["config"]["layers"][index]["config"].update(changes)
    return json.dumps(cfg).encode()


def _weights_with(model: torch.nn.Module, case: int, key: str, value: np.ndarray | None) -> bytes:
    arrays = keras_weights(model, case)
    if value is None:
        del arrays[key]
    else:
        arrays[key] = value
    return h5_bytes(arrays)


def test_bad_files_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(1)
    good = members_for(model, 1)
    bad: dict[str, tuple[dict[str, bytes] | bytes, str]] = {
        "not a zip": (b"just some text", "not a zip archive"),
        "truncated": (b"", "not a zip archive"),
        "no config": (_replace_member(good, "config.json", None), "lacks config.json"),
        "no weights": (_replace_member(good, "model.weights.h5", None), "lacks model.weights.h5"),
        "bad json": (_replace_member(good, "config.json", b"{nope"), "not valid JSON"),
        "filters": (
            _replace_member(good, "config.json", _config_with(1, 3, filters=32)),
            "filters=32, expected 64",
        ),
        "activation": (
            _replace_member(good, "config.json", _config_with(1, 7, activation="tanh")),
            "activation='tanh'",
        ),
        "dropout": (
            _replace_member(good, "config.json", _config_with(1, 6, rate=0.5)),
            "rate=0.5",
        ),
        "channels first": (
            _replace_member(good, "config.json", _config_with(1, 1, data_format="channels_first")),
            "data_format",
        ),
        "input shape": (
            _replace_member(good, "config.json", _config_with(1, 0, batch_shape=[None, 32, 32, 1])),
            "takes input",
        ),
        "weight shape": (
            _replace_member(
                good,
                "model.weights.h5",
                _weights_with(model, 1, "layers/dense/vars/0", np.zeros((1600, 33), np.float32)),
            ),
            r"shape \(1600, 33\), expected \(1600, 32\)",
        ),
        "missing weight": (
            _replace_member(
                good, "model.weights.h5", _weights_with(model, 1, "layers/conv2d_1/vars/1", None)
            ),
            "no array at layers/conv2d_1/vars/1",
        ),
        "nan weight": (
            _replace_member(
                good,
                "model.weights.h5",
                _weights_with(model, 1, "layers/dense_1/vars/1", np.full(10, np.nan, np.float32)),
            ),
            "NaN",
        ),
        "h5 garbage": (
            _replace_member(good, "model.weights.h5", b"\x89HDF not really"),
            "not a readable HDF5",
        ),
        # 2 MB of spaces deflate to a few KB: the declared size must stop it before inflating.
        "zip bomb": (
            _replace_member(good, "config.json", b" " * (2 << 20)),
            "would unpack to 2,097,152 bytes",
        ),
    }
    for label, (content, message) in bad.items():
        path = tmp_path / f"{label.replace(' ', '_')}.keras"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            write_keras(path, content)
        out = tmp_path / f"out_{label.replace(' ', '_')}"
        with pytest.raises(CnnlabError, match=message):
            import_keras(path, 1, out)
        assert not out.exists(), label


def test_corrupt_zip_member_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = write_keras(tmp_path / "m.keras", members_for(create_model(2), 2))
    raw = bytearray(path.read_bytes())
    start = raw.find(b"model.weights.h5") + 40  # inside that member's compressed data
    raw[start : start + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    with pytest.raises(CnnlabError, match=r"damaged|not a readable"):
        read_keras(path, 2)


def test_external_link_in_weights_is_not_followed(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(2)
    members = members_for(model, 2)
    outside = tmp_path / "outside.h5"
    with h5py.File(outside, "w") as f:
        f.create_dataset("k", data=keras_weights(model, 2)["layers/conv2d/vars/0"])
    buf = io.BytesIO(members["model.weights.h5"])
    with h5py.File(buf, "a") as f:
        del f["layers/conv2d/vars/0"]
        f["layers/conv2d/vars/0"] = h5py.ExternalLink(str(outside), "k")
    members["model.weights.h5"] = buf.getvalue()
    path = write_keras(tmp_path / "m.keras", members)
    with pytest.raises(CnnlabError, match="no array at layers/conv2d/vars/0"):
        read_keras(path, 2)


def test_wrong_case_names_the_right_one_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    path = write_keras(tmp_path / "m.keras", members_for(create_model(2), 2))
    out = tmp_path / "run"
    code = cli.main(["import-keras", str(path), "--case", "3", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "not the chapter's case3" in err and "use --case 2" in err
    assert not out.exists()
    assert cli.main(["import-keras", str(path), "--case", "2", "--out", str(out)]) == 0
    assert (out / "best.pt").is_file()


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
    out = tmp_path / "run"
    metrics = import_keras(keras_dir / name, case, out)
    assert metrics["params"] == expected["params"]
    result = evaluate_run(out, mnist)  # what `cnnlab evaluate RUN_DIR` computes
    # 0.01 percentage points = 1e-4 as a fraction; Keras' figures are float32.
    assert abs(result["test_accuracy"] - expected["test_accuracy"]) <= 1e-4
    assert abs(result["test_loss"] - expected["test_loss"]) <= 1e-4

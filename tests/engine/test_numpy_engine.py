"""The NumPy engine re-computes the PyTorch Network of any description.

A zoo of descriptions (the chapter's cases, speedrun, the four keras-zoo architectures and a
dozen drawn at random over the whole vocabulary) with random weights: in float64 both sides
agree to 1e-10, layer by layer. The keras-zoo files, where present, check the engine
against Keras' own outputs. The zoo lives in ``model_zoo.py``, shared with the
receptive-field, layer-walk and shift tests.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from model_zoo import ACTIVATIONS, KERAS_ZOO, KERAS_ZOO_DIR, ZOO, randomize, torch_outputs

from cnnlab import fileio
from cnnlab.analysis.numpy_check import TOLERANCE, from_run, verify_run
from cnnlab.cli import main
from cnnlab.data import MNIST, scale
from cnnlab.engine.numpy_engine import (
    NumpyModel,
    compare_with_torch,
    from_torch,
    load_npz,
    save_npz,
    to_torch_state,
    weight_shapes,
)
from cnnlab.errors import CnnlabError
from cnnlab.models import ModelDescription, Network, build_module, get
from cnnlab.models import layers as L
from cnnlab.train import checkpoint


def _torch_layers(model: Network, x: np.ndarray) -> list[np.ndarray]:
    """Each layer's output, channels-last, from the float64 torch module, in layer order."""
    outs = torch_outputs(model, x)
    return [outs[info.layer.name] for info in model.description.info]


# the kinds the zoo covers; the others are checked in tests/models/layers/ (one file each)
CORE = ("conv", "core", "merge", "normalization", "pooling", "shaping")
BEYOND = ("LayerNormalization",)  # in normalization.py, checked in its own tests only


def test_zoo_covers_the_vocabulary() -> None:
    layers = [ly for d in ZOO.values() for ly in d.layers]
    convs = [ly for ly in layers if isinstance(ly, L.Conv)]
    assert {d.rank for d in ZOO.values()} == {1, 2, 3}
    core = [
        n
        for n, k in L.LAYERS.items()
        if k.__module__.rsplit(".", 1)[-1] in CORE and n not in BEYOND
    ]
    stems = {re.sub("[123]D$", "", name) for name in core}
    assert {re.sub("[123]D$", "", ly.class_name) for ly in layers} >= stems
    assert {ly.activation for ly in layers if isinstance(ly, L.Activation)} == set(L.ACTIVATIONS)
    assert {c.rank for c in layers if isinstance(c, L.Conv | L.Pool | L.ZeroPadding)} == {1, 2, 3}
    assert any(max(c.strides) > 1 and c.padding == "same" for c in convs)
    assert any(max(c.dilation_rate) > 1 and c.padding == "same" for c in convs)
    assert any(c.padding == "same" and min(c.kernel_size) % 2 == 0 for c in convs)
    assert any(len(set(c.kernel_size)) > 1 for c in convs)
    assert {c.activation for c in convs} == set(L.ACTIVATIONS)
    assert {
        c.activation
        for d in ZOO.values()
        if d.name.startswith("random")
        for c in d.layers
        if isinstance(c, L.Conv)
    } == set(ACTIVATIONS)
    pools = [ly for ly in layers if isinstance(ly, L.Pool)]
    assert {(p.kind, p.padding) for p in pools} == {
        (k, p) for k in ("max", "average") for p in ("same", "valid")
    }
    bns = [ly for ly in layers if isinstance(ly, L.BatchNormalization)]
    assert {(b.center, b.scale) for b in bns} >= {(True, True), (False, True), (True, False)}


def test_keras_zoo_descriptions_have_keras_parameter_counts() -> None:
    index = {"conv2d_same_strides": 9226, "conv1d_timeseries": 3412}
    index |= {"conv3d_video": 6293, "conv2d_bn_dilated": 1106}
    for name, params in index.items():
        assert ZOO[name].params == params, name


@pytest.mark.parametrize("name", list(ZOO))
def test_float64_agrees_with_torch_layer_by_layer(name: str) -> None:
    desc = ZOO[name]
    torch.manual_seed(1)
    model = randomize(build_module(desc), seed=2).double().eval()
    engine = from_torch(model)
    assert engine.dtype == "float64"
    x = np.random.default_rng(3).random((16, *desc.input_shape))  # (N, *spatial, C)
    ours = [h for _, h in engine.activations(x)]
    ref = _torch_layers(model, x)
    for info, a, b in zip(desc.info[:-1], ours, ref, strict=False):
        assert a.shape == (16, *info.out_shape) and b.shape == a.shape, info.where
        scale_ = max(1.0, float(np.abs(b).max()))
        assert np.abs(a - b).max() <= 1e-10 * scale_, info.where
    with torch.no_grad():
        logits = model(torch.from_numpy(x).movedim(-1, 1)).numpy()
    assert np.abs(engine.logits(x) - logits).max() <= 1e-10 * max(1.0, np.abs(logits).max())
    p = engine.predict_proba(x, batch_size=5)  # batches that do not divide 16
    assert np.abs(p - torch.softmax(torch.from_numpy(logits), 1).numpy()).max() <= 1e-10
    last = desc.layers[-1]  # Keras' view of it: the probabilities, when it is a softmax
    if isinstance(last, L.Softmax) or getattr(last, "activation", "") == "softmax":
        np.testing.assert_allclose(ours[-1], p, rtol=0, atol=1e-12)


def _keras_weights(path: Path, desc: ModelDescription) -> dict[str, dict[str, np.ndarray]]:
    """A .keras file's weights (``layers/<name>/vars/<i>``) named as the engine names them."""
    import h5py

    with zipfile.ZipFile(path) as z, h5py.File(io.BytesIO(z.read("model.weights.h5"))) as h5:
        out = {}
        for info in desc.info:
            names = list(weight_shapes(info))
            if names:
                group = h5[f"layers/{info.layer.name}/vars"]
                out[info.layer.name] = {n: group[str(i)][()] for i, n in enumerate(names)}
        return out


@pytest.mark.parametrize("name", list(KERAS_ZOO))
def test_keras_zoo_outputs(name: str) -> None:
    path = KERAS_ZOO_DIR / f"{name}.keras"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    config = json.loads(zipfile.ZipFile(path).read("config.json"))["config"]["layers"]
    assert [c["class_name"] for c in config[1:]] == [ly.class_name for ly in ZOO[name].layers]
    engine = NumpyModel(ZOO[name], _keras_weights(path, ZOO[name]))
    x = np.load(KERAS_ZOO_DIR / f"{name}.inputs.npy")
    expected = np.load(KERAS_ZOO_DIR / f"{name}.outputs.npy")
    assert np.abs(engine.predict_proba(x) - expected).max() < 1e-5
    # The same weights through PyTorch: to_torch_state inverts from_torch's layouts.
    model = build_module(ZOO[name]).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch_state(engine).items()})
    with torch.no_grad():
        p = torch.softmax(model(torch.from_numpy(x).movedim(-1, 1)), 1).numpy()
    assert np.abs(p - expected).max() < 1e-5


def test_weights_are_channels_last(global_random_seed: int) -> None:
    model = build_module(get("case1"))
    engine = from_torch(model)
    conv2 = engine.weights["conv2"]["kernel"]
    assert conv2.shape == (3, 3, 16, 64)  # (kh, kw, C_in, C_out)
    w = model.get_parameter("conv2.weight").detach().numpy()  # (C_out, C_in, kh, kw)
    assert conv2[1, 2, 5, 7] == w[7, 5, 1, 2]
    dense1 = engine.weights["dense1"]["kernel"]
    assert dense1.shape == (1600, 32) and dense1[3, 4] == model.dense1.weight[4, 3]
    assert set(engine.weights) == {"conv1", "conv2", "dense1", "dense2"}
    roundtrip = to_torch_state(engine)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(roundtrip[key], value.numpy())


def test_float32_is_within_tolerance(global_random_seed: int) -> None:
    model = randomize(build_module(ZOO["conv2d_bn_dilated"]), 0).eval()
    x = np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32)
    engine = from_torch(model)
    assert engine.dtype == "float32"
    p = engine.predict_proba(x, batch_size=25)
    assert p.dtype == np.float32 and p.shape == (64, 10)
    r = compare_with_torch(model, x, batch_size=16)
    assert r.max_abs_diff <= TOLERANCE and r.same_predictions == 64
    assert r.as_dict()["numpy_images_per_s"] > 0


def test_activations_are_named_and_shaped(global_random_seed: int) -> None:
    engine = from_torch(build_module(ZOO["conv1d_timeseries"]))
    shapes = {name: h.shape for name, h in engine.activations(np.zeros((3, 100, 6)))}
    assert shapes == {
        "conv1d": (3, 100, 16),
        "max_pooling1d": (3, 50, 16),
        "conv1d_1": (3, 23, 32),
        "global_average_pooling1d": (3, 32),
        "dense": (3, 4),
    }
    with pytest.raises(CnnlabError, match="takes inputs of 100x6"):
        engine.logits(np.zeros((1, 28, 28, 1)))


@pytest.mark.parametrize("name", ["speedrun", "conv3d_video", "random4"])
def test_npz_roundtrip(name: str, tmp_path: Path, global_random_seed: int) -> None:
    model = randomize(build_module(ZOO[name]), 1).eval()
    engine = from_torch(model)
    save_npz(engine, tmp_path / "m.npz")
    loaded = load_npz(tmp_path / "m.npz")
    assert loaded.description == ZOO[name] and loaded.name == name
    x = np.random.default_rng(1).random((4, *ZOO[name].input_shape), dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict_proba(x), engine.predict_proba(x))
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def _npz(path: Path, meta: Any, **arrays: np.ndarray) -> Path:
    raw = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, __meta__=raw, **arrays)
    return path


def test_bad_npz_is_one_clear_error(tmp_path: Path, global_random_seed: int) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CnnlabError, match="not a cnnlab NumPy model"):
        load_npz(bad)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(CnnlabError, match="not a cnnlab NumPy model"):
        load_npz(tmp_path / "other.npz")
    with pytest.raises(CnnlabError, match="not found"):
        load_npz(tmp_path / "missing.npz")
    with pytest.raises(CnnlabError, match="export-numpy again"):
        load_npz(_npz(tmp_path / "old.npz", {"format": "cnnlab-numpy-1", "layers": []}))
    desc = get("case2").to_dict()
    desc["layers"][0]["kernel_size"] = [0, 3]
    with pytest.raises(CnnlabError, match=r"bad description: layer 1 \(Conv2D\): kernel_size"):
        load_npz(_npz(tmp_path / "d.npz", {"format": "cnnlab-numpy-2", "description": desc}))
    engine = from_torch(build_module(get("case2")))
    save_npz(engine, tmp_path / "ok.npz")
    with np.load(tmp_path / "ok.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["conv2/kernel"] = arrays["conv2/kernel"][:2]
    meta = json.loads(arrays.pop("__meta__").tobytes())
    with pytest.raises(CnnlabError, match=r"conv2: kernel must be a float array of shape"):
        load_npz(_npz(tmp_path / "w.npz", meta, **arrays))
    del arrays["conv2/kernel"]
    with pytest.raises(CnnlabError, match="conv2: lacks weight 'kernel'"):
        load_npz(_npz(tmp_path / "w.npz", meta, **arrays))


def test_not_a_network_is_refused() -> None:
    with pytest.raises(CnnlabError, match="not a cnnlab Network"):
        from_torch(torch.nn.Sequential(torch.nn.Tanh()))


def test_trained_run_agrees(tiny_run: dict[str, Path], tiny_mnist: MNIST) -> None:
    engine = from_run(tiny_run["case2"])
    model, _ = checkpoint.load_model(tiny_run["case2"], "best")
    r = compare_with_torch(model, scale(tiny_mnist.x_test))
    assert engine.name == "case2" and r.max_abs_diff <= TOLERANCE


def test_verify_run_writes_json(
    tiny_run: dict[str, Path], tiny_mnist: MNIST, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run["case1"], run)
    r = verify_run(run, scale(tiny_mnist.x_test), batch_size=7)
    assert r["passed"] and r["n_images"] == len(tiny_mnist.x_test) and r["model"] == "case1"
    assert r["inputs"] == "test images"
    assert fileio.read_json(run / "numpy_check.json")["max_abs_diff"] == r["max_abs_diff"]


def test_cli_verify_and_export(
    tiny_run: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    synthetic_data: MNIST,
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run["case3"], run)
    assert main(["verify-numpy", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["max_abs_diff"] <= TOLERANCE
    assert {"max_abs_diff", "numpy_images_per_s", "torch_images_per_s"} <= set(out)
    assert main(["export-numpy", str(run)]) == 0
    assert load_npz(run / "model.npz").name == "case3"
    from analysis.test_explain import SERIES, write_untrained_run

    series = write_untrained_run(tmp_path / "series", SERIES, "series")  # 1-D: random inputs
    capsys.readouterr()
    assert main(["verify-numpy", str(series), "--dtype", "float64"]) == 0
    assert (
        "series: 1,000 random inputs (uniform [0, 1), seed 0), float64" in capsys.readouterr().out
    )
    assert fileio.read_json(series / "numpy_check_float64.json")["max_abs_diff"] < 1e-12
    assert main(["export-numpy", str(series), "--out", str(tmp_path / "s.npz")]) == 0
    assert load_npz(tmp_path / "s.npz").description.rank == 1
    for cmd in ("verify-numpy", "export-numpy"):
        capsys.readouterr()
        assert main([cmd, str(tmp_path / "nowhere")]) == 2
        err = capsys.readouterr().err
        assert "no best.pt" in err and err.count("\n") == 1

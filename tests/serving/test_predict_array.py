"""Predicting on arrays of any input shape: ``Predictor.predict_array`` and ``--array X.npy``.

The networks are 1-D, 2-D and 3-D descriptions with several input channels and
non-square inputs, so a layout mistake (channels-last vs channels-first, a transposed
axis) changes the answer. References call the loaded network on the input moved
channels-first by hand, then a softmax.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.cli import main, npy
from cnnlab.errors import CnnlabError
from cnnlab.models import ModelDescription, build_module, parse_compact
from cnnlab.serving.predict import Predictor
from cnnlab.train import checkpoint, runs

DESCRIPTIONS = {
    "1d": "Input(40,3) Conv1D(6,5,same,relu) MaxPooling1D(2) Conv1D(8,4,2,same,tanh) "
    "GlobalAveragePooling1D Dense(4,softmax)",
    "2d": "Input(12,10,3) Conv2D(5,3,relu) BatchNormalization MaxPooling2D(2) "
    "Conv2D(6,2,same,elu) Flatten Dense(7,softmax)",
    "3d": "Input(6,8,7,2) Conv3D(4,3,same,relu) MaxPooling3D(2) Flatten Dense(5,softmax)",
}


def randomised(desc: ModelDescription, seed: int) -> torch.nn.Module:
    """The network with non-trivial biases and BatchNormalization statistics."""
    torch.manual_seed(seed)
    model = build_module(desc)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith(("bias", "running_mean")):
                t.uniform_(-0.5, 0.5)
            elif name.endswith(("running_var", "weight")) and t.ndim == 1:
                t.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def array_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for k, (kind, line) in enumerate(DESCRIPTIONS.items()):
        desc = parse_compact(line, f"net{kind}")
        run = tmp_path_factory.mktemp(f"run{kind}")
        runs.save_torch(run / "best.pt", checkpoint.make_checkpoint(desc, randomised(desc, k), 3))
        out[kind] = run
    return out


def reference(run_dir: Path, x: np.ndarray) -> np.ndarray:
    """softmax(model(x)) with x (N, *spatial, C) moved to (N, C, *spatial) by hand."""
    model, _ = checkpoint.load_model(run_dir)
    xt = torch.from_numpy(np.moveaxis(x.astype(np.float32), -1, 1).copy())
    with torch.no_grad():
        return torch.softmax(model(xt), dim=1).numpy()


def inputs(run_dir: Path, n: int, seed: int = 0) -> np.ndarray:
    shape = Predictor.from_run(run_dir).input_shape
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


@pytest.mark.parametrize("kind", list(DESCRIPTIONS))
def test_predict_array_matches_the_model(array_runs: dict[str, Path], kind: str) -> None:
    predictor = Predictor.from_run(array_runs[kind])
    x = inputs(array_runs[kind], 7)
    probs = predictor.predict_array(x)
    want = reference(array_runs[kind], x)
    assert probs.shape == want.shape == (7, predictor.classes)
    np.testing.assert_allclose(probs, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(predictor.predict_array(x[3]), want[3:4], atol=1e-6)  # one input
    np.testing.assert_allclose(predictor.predict_array(x.astype(np.float64)), want, atol=1e-6)
    assert predictor.predict_array(x[:0]).shape == (0, predictor.classes)


@pytest.mark.parametrize("kind", list(DESCRIPTIONS))
def test_feature_maps_are_every_conv_layer(array_runs: dict[str, Path], kind: str) -> None:
    """Each conv layer's output after its activation, channels-first, per input."""
    predictor = Predictor.from_run(array_runs[kind])
    x = inputs(array_runs[kind], 3, seed=1)
    _, maps = predictor.predict_inputs(x, feature_maps=True)
    desc = predictor.description
    convs = [i for i in desc.info if i.layer.class_name.startswith("Conv")]
    assert list(maps) == [i.layer.name for i in convs]
    h = torch.from_numpy(np.moveaxis(x, -1, 1).copy())
    with torch.no_grad():
        for name, module in predictor.model.named_children():
            h = module(h)
            if name in maps:
                info = next(i for i in convs if i.layer.name == name)
                assert maps[name].shape == (3, info.out_shape[-1], *info.out_shape[:-1])
                np.testing.assert_allclose(maps[name], h.numpy(), atol=1e-6)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("kind", list(DESCRIPTIONS))
def test_cli_array_json_is_softmax_of_the_model(
    array_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    x = inputs(array_runs[kind], 6, seed=2)
    np.save(tmp_path / "x.npy", x)
    code, out, err = run_cli(
        ["predict", str(array_runs[kind]), "--array", str(tmp_path / "x.npy"), "--json"], capsys
    )
    assert code == 0, err
    rows = json.loads(out)
    want = reference(array_runs[kind], x)
    assert [set(r) for r in rows] == [{"label", "class_index", "class", "probabilities"}] * 6
    got = np.array([r["probabilities"] for r in rows])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert [r["class_index"] for r in rows] == list(want.argmax(axis=1))
    assert [r["class"] for r in rows] == [r["class_index"] for r in rows]  # the older name
    assert [r["label"] for r in rows] == [str(k) for k in want.argmax(axis=1)]  # no names
    np.save(tmp_path / "one.npy", x[0])  # a single input, without the batch axis
    code, out, _ = run_cli(
        ["predict", str(array_runs[kind]), "--array", str(tmp_path / "one.npy")], capsys
    )
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith(f"input 0  class {want[0].argmax()}  p={want[0].max():.3f}")


def write_npy_header(path: Path, shape: tuple[int, ...], payload: bytes) -> Path:
    """A .npy whose header claims ``shape`` of float32, followed by ``payload``."""
    with path.open("wb") as f:
        header = {"descr": "<f4", "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(f, header)
        f.write(payload)
    return path


def bad_arrays(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, a phrase the one error line must hold)."""
    np.save(tmp / "shape.npy", np.zeros((2, 5, 5), np.float32))
    nan = np.zeros((2, 40, 3), np.float32)
    nan[1, 3, 2] = np.nan
    np.save(tmp / "nan.npy", nan)
    np.save(tmp / "inf.npy", np.full((1, 40, 3), np.inf))
    np.save(tmp / "big.npy", np.full((1, 40, 3), 1e300))  # beyond float32
    obj = np.empty((1, 40, 3), dtype=object)
    obj[...] = 0.5
    np.save(tmp / "object.npy", obj, allow_pickle=True)
    np.save(tmp / "text.npy", np.full((1, 40, 3), "a"))
    np.save(tmp / "complex.npy", np.zeros((1, 40, 3), np.complex64))
    np.savez(tmp / "zipped.npz", x=np.zeros((1, 40, 3), np.float32))
    (tmp / "notes.npy").write_text("not an array at all\n")
    (tmp / "empty.npy").write_bytes(b"")
    good = (tmp / "shape.npy").read_bytes()
    (tmp / "truncated.npy").write_bytes(good[: len(good) - 8])
    write_npy_header(tmp / "claims.npy", (10**12,), bytes(64))
    (tmp / "folder").mkdir()
    os.mkfifo(tmp / "fifo")
    return {
        "wrong shape": (tmp / "shape.npy", "takes inputs of shape 40x3"),
        "nan": (tmp / "nan.npy", "NaN"),
        "inf": (tmp / "inf.npy", "NaN or infinite"),
        "beyond float32": (tmp / "big.npy", "beyond float32"),
        "pickled objects": (tmp / "object.npy", "Python objects"),
        "strings": (tmp / "text.npy", "must be numbers"),
        "complex": (tmp / "complex.npy", "must be numbers"),
        "npz": (tmp / "zipped.npz", "not a .npy file"),
        "text file": (tmp / "notes.npy", "not a .npy file"),
        "empty file": (tmp / "empty.npy", "not a .npy file"),
        "truncated": (tmp / "truncated.npy", "truncated"),
        "header claims a terabyte": (tmp / "claims.npy", "does not match its header"),
        "missing": (tmp / "missing.npy", "not found"),
        "directory": (tmp / "folder", "is a folder"),
        "fifo": (tmp / "fifo", "not a regular file"),
        "/dev/zero": (Path("/dev/zero"), "not a regular file"),
    }


def call_main(argv: list[str], result: dict[str, int]) -> None:
    result["code"] = main(argv)


def test_cli_refuses_bad_arrays_in_one_line(
    array_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2, one line naming the problem, and quickly: a FIFO or /dev/zero never blocks."""
    cases = bad_arrays(tmp_path)
    for name, (path, phrase) in cases.items():
        result: dict[str, int] = {}
        argv = ["predict", str(array_runs["1d"]), "--array", str(path)]
        t = threading.Thread(target=call_main, args=(argv, result), daemon=True)
        t.start()
        t.join(timeout=30)
        assert not t.is_alive(), f"{name}: still reading after 30 s"
        out, err = capsys.readouterr()
        assert result["code"] == 2, (name, out, err)
        assert err.startswith("cnnlab: error:") and err.count("\n") == 1, (name, err)
        assert phrase in err, (name, err)
        assert out == ""


def test_array_reads_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((1000, 40, 3), np.float32))  # 480 kB
    read = []
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: read.append(n) or real_read(fd, n))
    with pytest.raises(CnnlabError, match=r"a \.npy array is at most 9\.8 KiB"):
        npy.load_npy(path, max_bytes=10_000)
    assert sum(read) <= 10_001
    assert npy.load_npy(path).shape == (1000, 40, 3)
    # what predict --array uses: the file mapped, its size checked before any byte is read
    with pytest.raises(CnnlabError, match=r"a \.npy array is at most 9\.8 KiB"):
        npy.open_npy(path, max_bytes=10_000)
    mapped = npy.open_npy(path)
    assert isinstance(mapped, np.memmap) and mapped.shape == (1000, 40, 3)


def test_cli_needs_exactly_one_source(
    array_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 40, 3), np.float32))
    (tmp_path / "a.png").write_bytes(b"")
    run = str(array_runs["1d"])
    for args, phrase in [
        ([run], "give image files (IMAGE ...) or --array"),
        ([run, str(tmp_path / "a.png"), "--array", str(tmp_path / "x.npy")], "not both"),
        ([run, "--array", str(tmp_path / "x.npy"), "--show-input", str(tmp_path)], "for image"),
    ]:
        code, _, err = run_cli(["predict", *args], capsys)
        assert code == 2 and phrase in err and err.count("\n") == 1, err


def test_images_need_an_image_network(
    array_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Any H x W x 1|3|4 network reads image files (a run without a record: its input size,
    bilinear, stretched; pixels / 255); series and clip networks are refused in one line."""
    from PIL import Image

    from cnnlab.data import load_image

    img = Image.new("RGB", (30, 20), (200, 30, 90))
    img.paste((10, 240, 60), (0, 0, 12, 20))
    img.save(tmp_path / "a.png")
    code, out, err = run_cli(
        ["predict", str(array_runs["2d"]), str(tmp_path / "a.png"), "--json"], capsys
    )
    assert code == 0, err
    x = load_image(tmp_path / "a.png", (12, 10, 3)).astype(np.float32) / 255
    want = reference(array_runs["2d"], x[None])[0]
    (row,) = json.loads(out)
    np.testing.assert_allclose(row["probabilities"], want, atol=1e-5)
    assert row["class_index"] == int(want.argmax()) and row["label"] == str(want.argmax())
    for kind, shape in (("1d", "40x3"), ("3d", "6x8x7x2")):
        code, _, err = run_cli(["predict", str(array_runs[kind]), str(tmp_path / "a.png")], capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert "needs a network that takes images" in err and shape in err and "--array" in err
    with pytest.raises(CnnlabError, match="not images"):
        Predictor.from_run(array_runs["1d"]).predict_image(tmp_path / "a.png")
    code, _, err = run_cli(["serve", str(array_runs["3d"])], capsys)
    assert code == 2 and err.count("\n") == 1 and "cnnlab serve" in err and "6x8x7x2" in err

"""explain, shift, verify-numpy and report on runs trained on a user's own data.

Three runs are trained here through the command line: on a folder of RGB images, on a folder
of grey ones (cropped, nearest neighbour: preprocessing that differs from the defaults), and
on an ``.npz`` of series with string labels. Each command must read the run's own data, its
class names and its input scale; the references are built independently (the data layer's
``load_dataset`` with the options written out, Pillow for image files).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cnnlab import fileio
from cnnlab.analysis import explain, explain_series
from cnnlab.analysis.explain import feature_maps
from cnnlab.analysis.numpy_check import TOLERANCE, from_run
from cnnlab.cli import main
from cnnlab.data import DataOptions
from cnnlab.data.datasets import load_dataset
from cnnlab.data.scaling import InputScale, to_inputs

RGB_NET = (
    "Input(16,16,3) Conv2D(6,3,same,relu) MaxPooling2D(2) Conv2D(6,3,relu) "
    "GlobalAveragePooling2D Dense(3,softmax)"
)
GREY_NET = "Input(12,12,1) Conv2D(4,3,relu) MaxPooling2D(2) Flatten Dense(2,softmax)"
SERIES_NET = "Input(24,2) Conv1D(6,3,same,relu) GlobalAveragePooling1D Dense(3,softmax)"
COLOURS = {"blue": (30, 40, 200), "green": (30, 180, 40), "red": (200, 30, 30)}
PIXELS = InputScale(255.0, "uint8 pixels divided by 255")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Decoded folders are cached under a temporary $XDG_CACHE_HOME for the module."""
    from cnnlab.engine import native

    native.load()  # the C++ kernels from the user's cache first: not rebuilt in the temporary one
    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("cache")
    mp.setenv("XDG_CACHE_HOME", str(folder))
    yield folder
    mp.undo()


def rgb_folder(root: Path) -> Path:
    """A coloured square on dark noise, one class per colour; two sizes, PNG and BMP."""
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(12):
            h, w = (20, 24) if i % 2 else (18, 18)
            a = rng.integers(0, 60, size=(h, w, 3))
            y, x = rng.integers(1, h - 9), rng.integers(1, w - 9)
            a[y : y + 8, x : x + 8] = colour
            Image.fromarray(a.astype(np.uint8)).save(
                root / name / f"img{i}.{'png' if i % 3 else 'bmp'}"
            )
    return root


def grey_folder(root: Path) -> Path:
    """Bright horizontal or vertical bars on grey (mode L), 30 high and 40 wide."""
    rng = np.random.default_rng(1)
    for name in ("across", "down"):
        (root / name).mkdir(parents=True)
        for i in range(10):
            a = rng.integers(0, 80, size=(30, 40))
            k = int(rng.integers(8, 22))
            if name == "across":
                a[k : k + 3, 5:35] = 250
            else:
                a[3:27, k + 5 : k + 8] = 250
            Image.fromarray(a.astype(np.uint8), mode="L").save(root / name / f"{i}.png")
    return root


def series_npz(path: Path) -> Path:
    """Two-channel series: a sine of 0, 2 or 5 periods in channel 0, labelled by strings."""
    rng = np.random.default_rng(2)
    n, t = 60, np.linspace(0, 1, 24)
    y = np.array(["walk", "run", "stand"])[np.arange(n) % 3]
    x = rng.normal(0, 0.3, size=(n, 24, 2)).astype(np.float32)
    for i, label in enumerate(y):
        periods = {"walk": 2, "run": 5, "stand": 0}[label]
        x[i, :, 0] += np.sin(2 * np.pi * periods * t + rng.uniform(0, 6))
    np.savez(path, x_train=x, y_train=y)
    return path


def train(run: Path, net: str, spec: str, *flags: str) -> Path:
    argv = ["train", "--model", net, "--data", spec, "--out", str(run), "--quiet"]
    assert main([*argv, "--epochs", "8", "--lr", "0.01", "--workers", "1", *flags]) == 0
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("own")
    rgb, grey = rgb_folder(root / "rgb"), grey_folder(root / "grey")
    npz = series_npz(root / "motion.npz")
    crop = ("--fit", "crop", "--interpolation", "nearest")
    return {
        "rgb": train(root / "run_rgb", RGB_NET, f"folder:{rgb}"),
        "grey": train(root / "run_grey", GREY_NET, f"folder:{grey}", *crop),
        "series": train(root / "run_series", SERIES_NET, f"npz:{npz}"),
        "data": {"rgb": rgb, "grey": grey, "series": npz},
    }


def reference(runs: dict[str, Any], which: str) -> Any:
    """The run's dataset loaded directly, with the options its training used."""
    spec = "npz" if which == "series" else "folder"
    shape = {"rgb": (16, 16, 3), "grey": (12, 12, 1)}.get(which)
    fit = {"fit": "crop", "interpolation": "nearest"} if which == "grey" else {}
    return load_dataset(
        f"{spec}:{runs['data'][which]}", DataOptions(image_shape=shape, workers=1, **fit)
    )


class Spy:
    """Records what explain computed: the input, its source line and the prediction."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[dict[str, Any]] = []
        real = explain.start

        def start(
            model: Any, x: Any, what: str, out: Path, source: str, classes: Any = None
        ) -> Any:
            e = real(model, x, what, out, source, classes)
            self.calls.append({"x": x, "source": source, "classes": classes, "e": e})
            return e

        for module in (explain, explain_series):  # each holds its own reference
            monkeypatch.setattr(module, "start", start)


def _one_error_line(capsys: pytest.CaptureFixture[str], *phrases: str) -> str:
    err = capsys.readouterr().err.rpartition("\r")[2]  # after a decoding bar, if any
    assert err.startswith("cnnlab: error:") and err.count("\n") == 1, err
    for phrase in phrases:
        assert phrase in err, err
    return err


@pytest.mark.parametrize(("which", "index"), [("rgb", 5), ("grey", 2)])
def test_explain_index_reads_the_runs_own_test_example(
    runs: dict[str, Any], which: str, index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(monkeypatch)
    out = tmp_path / "ex"
    assert main(["explain", str(runs[which]), "--index", str(index), "--out", str(out)]) == 0
    ds = reference(runs, which)
    x = to_inputs(ds.splits.x_test[index : index + 1], PIXELS)[0]
    (call,) = spy.calls
    np.testing.assert_array_equal(call["x"], x)
    label = ds.classes[int(ds.splits.y_test[index])]
    assert call["source"] == f"test image #{index} (label {label})"
    assert call["classes"] == ds.classes
    engine = from_run(runs[which])
    for got, want in zip(call["e"].maps, feature_maps(engine, x), strict=True):
        np.testing.assert_array_equal(got.maps, want.maps)
    proba = engine.predict_proba(x[None])[0]
    assert call["e"].label == ds.classes[int(proba.argmax())]
    assert (out / "overview.png").read_bytes().startswith(b"\x89PNG")
    assert {p.name for p in out.iterdir()} >= {
        "overview.png",
        "maps_conv2d.png",
        "kernels_conv2d.png",
    }


def test_explain_image_goes_through_the_recorded_preprocessing(
    runs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    photo = tmp_path / "photo.png"  # 40 wide, 30 high: cropping keeps columns 5..34
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(photo)
    spy = Spy(monkeypatch)
    for which in ("rgb", "grey"):
        assert (
            main(
                ["explain", str(runs[which]), "--image", str(photo), "--out", str(tmp_path / which)]
            )
            == 0
        )
    rgb, grey = (c["x"] for c in spy.calls)
    with Image.open(photo) as im:  # rgb: stretched, bilinear (the defaults)
        want = np.asarray(im.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR))
        np.testing.assert_allclose(rgb, want.astype(np.float32) / 255, atol=1e-7)
        # grey: trained with --fit crop --interpolation nearest: the centred 30x30 window
        cropped = im.convert("L").crop((5, 0, 35, 30)).resize((12, 12), Image.Resampling.NEAREST)
        np.testing.assert_allclose(grey[..., 0], np.asarray(cropped, np.float32) / 255, atol=1e-7)
    assert spy.calls[0]["source"] == "photo.png"
    assert spy.calls[0]["classes"] == ["blue", "green", "red"]
    assert spy.calls[1]["e"].label in ("across", "down")


def test_explain_a_series_names_its_classes(
    runs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(monkeypatch)
    assert main(["explain", str(runs["series"]), "--index", "4", "--out", str(tmp_path)]) == 0
    ds = reference(runs, "series")
    (call,) = spy.calls
    np.testing.assert_array_equal(call["x"], ds.splits.x_test[4])
    assert call["classes"] == ["run", "stand", "walk"]
    assert call["source"] == f"test series #4 (label {ds.classes[int(ds.splits.y_test[4])]})"
    assert {p.name for p in tmp_path.iterdir()} == {"overview.png", "cam.png"}


def test_shift_on_the_colour_run(
    runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["rgb"], run)
    assert main(["shift", str(run), "--max-shift", "2", "--invariance-images", "4"]) == 0
    out = capsys.readouterr().out
    n = len(reference(runs, "rgb").splits.y_test)
    assert re.search(rf"shift robustness of {run}: {n} test images, about \d+ s", out)
    found = fileio.read_json(run / "shift.json")
    grid = np.asarray(found["grid"]["accuracy"])
    assert grid.shape == (5, 5) and found["grid"]["n_images"] == n
    accuracy = fileio.read_json(run / "metrics.json")["test_accuracy"]  # the training's score
    assert grid[2, 2] == pytest.approx(accuracy, abs=1e-12)
    assert [ly["name"] for ly in found["layers"]] == ["conv2d", "max_pooling2d", "conv2d_1"]
    assert found["data"]["spec"] == f"folder:{runs['data']['rgb']}"
    assert main(["shift", str(run), "--max-shift", "16"]) == 2
    _one_error_line(capsys, "max_shift must be below the images' side (16)")
    assert main(["shift", str(runs["series"])]) == 2
    _one_error_line(capsys, "shift needs a network of images (2-D maps); model takes 24x2 series")


@pytest.mark.parametrize(
    ("which", "what"), [("rgb", "images"), ("grey", "images"), ("series", "series")]
)
def test_verify_numpy_on_the_runs_test_set(
    runs: dict[str, Any], which: str, what: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs[which], run)
    assert main(["verify-numpy", str(run), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    n = len(reference(runs, which).splits.y_test)
    assert r["passed"] and r["max_abs_diff"] <= TOLERANCE
    assert r["inputs"] == f"test {what}" and r["n_images"] == r["same_predictions"] == n


def _images(page: str) -> list[str]:
    return re.findall(r'<img alt="[^"]*" src="([^"]+)"', page)


def test_report_of_runs_on_three_kinds_of_data(
    runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copies = []
    for which in ("rgb", "grey", "series"):
        shutil.copytree(runs[which], tmp_path / which)
        copies.append(str(tmp_path / which))
    out = tmp_path / "page" / "report.html"
    argv = ["report", *copies, "--out", str(out), "--max-shift", "1", "--invariance-images", "4"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for stage in (
        "confusion matrix of",
        "feature maps of",
        "shift robustness of",
        "NumPy engine against PyTorch on",
    ):
        assert stage in printed, stage
    page = out.read_text()
    for names in (
        "3 classes: blue, green, red;",
        "2 classes: across, down;",
        "3 classes: run, stand, walk;",
    ):
        assert names in page, names
    assert "Data: 36 images of 3 classes" in page and "npz:" in page
    assert "No baselines here: `cnnlab baselines` trains them on MNIST only" in page
    assert page.count("Shift robustness") >= 3  # the comparison's and two runs' figures
    assert (
        "Class activation map" in page
        and "No shift robustness: it is measured for networks of images" in page
    )
    srcs = _images(page)
    assert len(srcs) >= 3 * 3 + 2  # curves, confusion, overview per run; the comparison
    for src in srcs:
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert page.count("(within 1e-05)") == 3
    md = out.with_suffix(".md").read_text()
    assert "| conv1d | Conv1D | 24x6 | 3 |" in md


def damaged(tmp_path: Path, how: str) -> Path:
    """A run whose data folder was moved away, or gained a class, after training."""
    run = train(tmp_path / "run", GREY_NET, f"folder:{grey_folder(tmp_path / 'data')}")
    if how == "moved":
        (tmp_path / "data").rename(tmp_path / "elsewhere")
    else:
        shutil.copytree(tmp_path / "data" / "down", tmp_path / "data" / "diagonal")
    return run


@pytest.mark.parametrize(
    ("how", "says"), [("moved", "cannot be rebuilt"), ("changed", "has changed: classes")]
)
@pytest.mark.usefixtures("cache")
def test_a_run_whose_data_is_gone_gets_one_line_each(
    how: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = damaged(tmp_path, how)
    for argv in (
        ["explain", str(run), "--index", "0"],
        ["shift", str(run)],
        ["verify-numpy", str(run)],
        ["report", str(run), "--out", str(tmp_path / "r.html")],
    ):
        assert main(argv) == 2, argv
        _one_error_line(capsys, f"{run}: its data (folder:", says)
    assert not (tmp_path / "r.html").exists() and not (run / "shift.json").exists()
    assert main(["verify-numpy", str(run), "--random-inputs"]) == 0
    assert "1,000 random inputs" in capsys.readouterr().out
    image = next((tmp_path).glob("*/down/0.png"))  # a file needs no data set
    assert main(["explain", str(run), "--image", str(image), "--out", str(tmp_path / "e")]) == 0


def test_verify_numpy_of_a_run_on_arrays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Arrays given to fit in Python are not kept: one line naming --data and --random-inputs;
    with --random-inputs the engines are compared on random inputs of the network's shape."""
    from cnnlab.train.keras_like import fit

    rng = np.random.default_rng(4)
    x, y = rng.integers(0, 256, (40, 10, 10, 3), dtype=np.uint8), np.arange(40) % 2
    net = "Input(10,10,3) Conv2D(4,3,relu) GlobalAveragePooling2D Dense(2,softmax)"
    fit(net, x, y, epochs=1, out_dir=tmp_path / "run", verbose=0)
    assert main(["verify-numpy", str(tmp_path / "run")]) == 2
    _one_error_line(capsys, "its data (arrays) cannot be rebuilt", "--data", "--random-inputs")
    assert main(["verify-numpy", str(tmp_path / "run"), "--random-inputs", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["passed"] and r["inputs"].startswith("random inputs") and r["n_images"] == 1000
    np.savez(tmp_path / "mine.npz", x_train=x, y_train=y, x_test=x[:6], y_test=y[:6])
    argv = ["verify-numpy", str(tmp_path / "run"), "--data", f"npz:{tmp_path / 'mine.npz'}"]
    assert main([*argv, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["passed"] and r["inputs"] == "test images" and r["n_images"] == 6

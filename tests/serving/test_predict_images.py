"""Predicting on image files for any image network, made the run's way.

Runs are trained here on folders of RGB and grey images (``image_runs``). Every prediction
is checked against the loaded PyTorch module called on ``cnnlab.data.load_image``'s pixels
with the run's recorded decoding, scaled by hand (/255, or raw for a network that begins
with a Rescaling layer): the same file must give the same probabilities, and the label is
the folder's class name.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from image_runs import CLASSES, DECODING, decoding, encoded, make_folder, picture, train_run
from image_runs import reference as ref_probs
from PIL import Image, ImageDraw

from cnnlab.cli import main
from cnnlab.data import load_image
from cnnlab.data.preprocess import preprocess
from cnnlab.data.scaling import InputScale
from cnnlab.models import Network, build_module, parse_compact
from cnnlab.serving.predict import Predictor
from cnnlab.train import checkpoint, runs
from cnnlab.train.run_inputs import DIGITS, IMAGE, is_digit_run, pixel_scale, recipe_for
from cnnlab.train.schemas import LEGACY_SCALE, RunData

DIVISOR = {"rgb": 255.0, "grey": 255.0, "raw": 1.0}


@pytest.fixture(scope="module")
def image_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"rgb", "grey", "raw": run folder, "rgb_data", "grey_data": the image folders}."""
    root = tmp_path_factory.mktemp("image-runs")
    cache = root / "cache"
    folders = {"rgb": make_folder(root / "rgb", "RGB"), "grey": make_folder(root / "grey", "L")}
    out: dict[str, Path] = {f"{k}_data": v for k, v in folders.items()}
    for kind, data in (("rgb", "rgb"), ("grey", "grey"), ("raw", "rgb")):
        out[kind] = train_run(kind, folders[data], root / f"run-{kind}", cache)
    return out


def new_files(tmp: Path) -> list[Path]:
    """Images the runs never saw: other sizes and aspect ratios, PNG and JPEG, RGBA."""
    out = []
    for i, (name, size, fmt) in enumerate(
        [("ring", (120, 45), "PNG"), ("bar 10", (37, 91), "JPEG"), ("bar 2", (64, 64), "PNG")]
    ):
        img = picture(name, size, 900 + i, "RGBA" if fmt == "PNG" else "RGB")
        path = tmp / f"new{i}.{fmt.lower()}"
        img.save(path, format=fmt)
        out.append(path)
    return out


def loaded(kind: str, path: Path) -> np.ndarray:
    return load_image(path, **decoding(kind))


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("kind", ["rgb", "grey", "raw"])
def test_files_give_the_network_on_load_image(
    image_runs: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    predictor = Predictor.from_run(image_runs[kind])
    assert predictor.class_names == CLASSES and predictor.named
    assert predictor.recipe.mode == IMAGE and not predictor.digits and not predictor.drawing
    settings = predictor.recipe.settings
    assert settings is not None and (settings.interpolation, settings.fit) == DECODING[kind]
    assert predictor.recipe.scale.divisor == DIVISOR[kind]
    data = image_runs["grey_data" if kind == "grey" else "rgb_data"]
    paths = [data / "ring" / "0.jpg", data / "bar 10" / "4.png", *new_files(tmp_path)]
    results = predictor.predict_files(paths)
    pixels = np.stack([loaded(kind, p) for p in paths])  # (N, H, W, C) uint8
    want = ref_probs(image_runs[kind], pixels, DIVISOR[kind])
    for r, p, w, px in zip(results, paths, want, pixels, strict=True):
        np.testing.assert_allclose(r.probabilities, w, atol=1e-5)
        assert r.class_index == r.digit == int(np.argmax(w)) and r.label == CLASSES[r.digit]
        assert r.path == str(p) and r.inverted is None
        picture_seen = px[..., 0] if kind == "grey" else px  # the grey run: no digit centring
        np.testing.assert_array_equal(np.rint(r.input * 255), picture_seen)
        seen = predictor.load(p)
        np.testing.assert_array_equal(seen.x, px.astype(np.float32) / np.float32(DIVISOR[kind]))
        from_bytes = predictor.predict_image(p.read_bytes())
        np.testing.assert_allclose(from_bytes.probabilities, r.probabilities, atol=1e-6)
    # arrays of any size go through the same decoding (no EXIF in a bare array)
    photo = np.asarray(Image.open(paths[3]).convert("RGB"))
    as_ints, as_floats = photo.astype(np.int64), photo / 255.0  # levels 0-255, or 0-1
    for arr in (photo, as_ints, as_floats):
        (from_array,) = predictor.predict_arrays([arr])
        np.testing.assert_allclose(from_array.probabilities, results[3].probabilities, atol=1e-5)


def test_a_grey_28x28_folder_run_is_not_centred(
    image_runs: dict[str, Path], tmp_path: Path
) -> None:
    """A 28x28x1 network trained on a folder sees the picture resized, not MNIST-centred."""
    img = Image.new("L", (100, 100), 0)
    ImageDraw.Draw(img).rectangle([5, 5, 30, 30], fill=255)  # top left: centring would move it
    path = tmp_path / "corner.png"
    img.save(path)
    predictor = Predictor.from_run(image_runs["grey"])
    seen = predictor.predict_files([path])[0].input
    np.testing.assert_array_equal(np.rint(seen * 255), loaded("grey", path)[..., 0])
    assert np.abs(seen - preprocess(img).image).max() > 0.5


@pytest.mark.parametrize("kind", ["rgb", "grey"])
def test_cli_names_the_classes(
    image_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    data = image_runs[f"{kind}_data"]
    files = [data / "ring", data / "bar 2" / "1.png"]  # a folder of images and a file
    shown = tmp_path / "seen"
    code, out, err = run_cli(
        ["predict", str(image_runs[kind]), *map(str, files), "--json", "--show-input", str(shown)],
        capsys,
    )
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 11 and all(set(r) == {"path", "label", "class_index", "probabilities"}
                                   for r in rows)  # fmt: skip
    pixels = np.stack([loaded(kind, Path(r["path"])) for r in rows])
    want = ref_probs(image_runs[kind], pixels, 255.0)
    np.testing.assert_allclose([r["probabilities"] for r in rows], want, atol=1e-5)
    assert [r["label"] for r in rows] == [CLASSES[k] for k in want.argmax(axis=1)]
    assert [r["class_index"] for r in rows] == list(want.argmax(axis=1))
    written = Image.open(shown / "1.input.png")  # "ring/1.png" (the file comes later: 1-2)
    assert written.mode == ("L" if kind == "grey" else "RGB")
    np.testing.assert_array_equal(
        np.asarray(written).reshape(pixels.shape[1:]), loaded(kind, data / "ring" / "1.png")
    )
    assert len(list(shown.iterdir())) == 11
    code, out, err = run_cli(["predict", str(image_runs[kind]), str(files[1])], capsys)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    k = int(want[-1].argmax())
    assert lines[0] == f"{files[1]}  {CLASSES[k]}  p={want[-1][k]:.3f}"
    assert lines[1] == "    " + "  ".join(
        f"{c}:{p:.3f}" for c, p in zip(CLASSES, want[-1], strict=True)
    )


def test_invert_is_for_digit_runs(
    image_runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = image_runs["rgb_data"] / "ring" / "1.png"
    code, _, err = run_cli(["predict", str(image_runs["rgb"]), str(path), "--invert"], capsys)
    assert code == 2 and err.count("\n") == 1 and "MNIST digits" in err and "20x24 RGB" in err


@pytest.mark.parametrize("kind", ["rgb", "raw"])
def test_array_pixels_are_scaled_floats_are_inputs(
    image_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """uint8 arrays are pixels, scaled as the run's (/255, raw for Rescaling); floats are
    the network's inputs as they are."""
    folder = image_runs["rgb_data"] / "bar 2"
    pixels = np.stack([loaded(kind, folder / f"{i}.png") for i in (1, 2, 4)])
    np.save(tmp_path / "pixels.npy", pixels)
    floats = pixels.astype(np.float32) / np.float32(DIVISOR[kind])
    np.save(tmp_path / "floats.npy", floats)
    want = ref_probs(image_runs[kind], pixels, DIVISOR[kind])
    for name in ("pixels", "floats"):
        code, out, err = run_cli(
            ["predict", str(image_runs[kind]), "--array", str(tmp_path / f"{name}.npy"), "--json"],
            capsys,
        )
        assert code == 0, err
        rows = json.loads(out)
        np.testing.assert_allclose([r["probabilities"] for r in rows], want, atol=1e-5)
        assert [r["label"] for r in rows] == [CLASSES[k] for k in want.argmax(axis=1)]
    # floats given as pixels (0-255) to a /255 network are not scaled: another answer
    if kind == "rgb":
        np.save(tmp_path / "wrong.npy", pixels.astype(np.float32))
        code, out, _ = run_cli(
            ["predict", str(image_runs[kind]), "--array", str(tmp_path / "wrong.npy"), "--json"],
            capsys,
        )
        got = np.array([r["probabilities"] for r in json.loads(out)])
        np.testing.assert_allclose(got, ref_probs(image_runs[kind], pixels, 1.0), atol=1e-5)


def test_many_classes_list_the_top_three(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    desc = parse_compact("Input(12,10,3) Conv2D(3,3,relu) GlobalAveragePooling2D Dense(12,softmax)")
    runs.save_torch(tmp_path / "best.pt", checkpoint.make_checkpoint(desc, build_module(desc), 0))
    Image.new("RGB", (30, 20), (90, 10, 200)).save(tmp_path / "a.png")
    code, out, _ = run_cli(["predict", str(tmp_path), str(tmp_path / "a.png")], capsys)
    first, spread = out.splitlines()
    assert code == 0 and "  class " in first and spread.startswith("    top 3: "), out
    assert len(spread.split(":")) == 5  # "top 3" and three classes


def test_mnist_runs_keep_digit_centring(tiny_run: dict[str, Path]) -> None:
    predictor = Predictor.from_run(tiny_run["case1"])
    assert predictor.recipe.mode == DIGITS and predictor.drawing
    assert predictor.class_names == [str(d) for d in range(10)] and not predictor.named
    img = Image.new("L", (200, 240), 255)
    ImageDraw.Draw(img).line([(10, 10), (60, 10), (30, 90)], fill=0, width=12)  # top left
    r = predictor.predict_image(encoded(img))
    np.testing.assert_array_equal(r.input, preprocess(img).image)  # centred by mass
    assert r.to_dict()["label"] == str(r.digit) and r.to_dict()["digit"] == r.digit
    assert r.to_dict()["inverted"] is True


def test_a_rescaling_digit_network_gets_raw_pixels() -> None:
    """A 28x28x1 network that begins with Rescaling, trained on MNIST pixels (divide_by 1):
    the centred digit reaches it as 0-255 values."""
    desc = parse_compact(
        "Input(28,28,1) Rescaling(0.00392156862745098) Conv2D(2,3,relu) Flatten Dense(10,softmax)"
    )
    record = {"spec": "mnist", "classes": [str(d) for d in range(10)], "pixels": True,
              "kind": "images", "preprocessing": {}}  # fmt: skip
    data = RunData("mnist", record, InputScale(1.0, "raw"))
    predictor = Predictor(Network(desc), data=data)
    img = Image.new("L", (90, 90), 255)
    ImageDraw.Draw(img).line([(20, 20), (70, 70)], fill=0, width=9)
    seen = predictor.load(encoded(img))
    np.testing.assert_allclose(seen.x[..., 0], preprocess(img).image * 255, rtol=1e-6)
    assert seen.x.max() > 200


def record(spec: str, classes: list[str], pixels: bool = True, image: bool = False) -> RunData:
    pre = {"image": {"shape": [28, 28, 1], "interpolation": "bilinear", "fit": "stretch"}}
    rec = {"spec": spec, "classes": classes, "pixels": pixels, "kind": "images",
           "preprocessing": pre if image else {}}  # fmt: skip
    return RunData(spec, rec, InputScale(255.0, "as recorded"))


def test_which_runs_read_images_as_digits() -> None:
    digits = [str(d) for d in range(10)]
    grey = parse_compact("Input(28,28,1) Conv2D(2,3) Flatten Dense(10,softmax)")
    colour = parse_compact("Input(28,28,3) Conv2D(2,3) Flatten Dense(10,softmax)")
    legacy = RunData(None, None, LEGACY_SCALE)
    assert is_digit_run(grey, legacy) and not is_digit_run(colour, legacy)
    assert is_digit_run(grey, record("mnist", digits))
    assert is_digit_run(grey, record("arrays", digits))  # fit(model, x_train, y_train)
    assert not is_digit_run(grey, record("arrays", [f"c{d}" for d in range(10)]))
    assert not is_digit_run(grey, record("fashion-mnist", list("abcdefghij")))
    assert not is_digit_run(grey, record("folder:/x", digits, image=True))
    assert recipe_for(colour, legacy).mode == IMAGE
    series = parse_compact("Input(40,3) Conv1D(2,3) GlobalAveragePooling1D Dense(2,softmax)")
    assert recipe_for(series, legacy).mode is None
    two = parse_compact("Input(8,8,2) Conv2D(2,3) Flatten Dense(2,softmax)")
    assert "1 (grey), 3 (RGB) or 4 (RGBA)" in recipe_for(two, legacy).refusal


def test_pixels_of_a_float_trained_run() -> None:
    """A run trained on floats took no pixels: image files are / 255 (0-1), or raw for a
    network that begins with Rescaling; a pixel run keeps its recorded scale."""
    plain = parse_compact("Input(8,8,3) Conv2D(2,3) Flatten Dense(2,softmax)")
    raw = parse_compact("Input(8,8,3) Rescaling(0.5) Conv2D(2,3) Flatten Dense(2,softmax)")
    floats = record("npz:/x.npz", ["a", "b"], pixels=False)
    assert pixel_scale(plain, floats).divisor == 255.0
    assert (
        pixel_scale(raw, floats).divisor == 1.0 and "Rescaling" in pixel_scale(raw, floats).reason
    )
    pixels = RunData("folder:/x", {**(floats.record or {}), "pixels": True}, InputScale(1.0, "r"))
    assert pixel_scale(plain, pixels).divisor == 1.0  # as the run recorded

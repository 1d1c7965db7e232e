"""The prediction API and the ``cnnlab predict`` command.

References are computed independently: probabilities by calling the loaded model and
softmax directly, feature maps with torch.nn.functional on the checkpoint's weights.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from cnnlab.cli import main
from cnnlab.data.preprocess import ImageRejected, preprocess
from cnnlab.errors import CnnlabError
from cnnlab.models import predict_proba
from cnnlab.serving.predict import Predictor
from cnnlab.train import checkpoint, runs


def drawing(dark_on_light: bool = True, size: tuple[int, int] = (200, 240)) -> Image.Image:
    fg, bg = (0, 255) if dark_on_light else (255, 0)
    img = Image.new("L", size, bg)
    ImageDraw.Draw(img).line([(40, 40), (160, 40), (90, 210)], fill=fg, width=18)
    return img


def save_png(img: Image.Image, path: Path) -> Path:
    img.save(path, format="PNG")
    return path


@pytest.fixture
def inputs(global_random_seed: int) -> np.ndarray:
    rng = np.random.default_rng(global_random_seed)
    return rng.random((5, 28, 28), dtype=np.float32)  # (N, 28, 28)


@pytest.mark.parametrize("case", ["case1", "case2", "case3"])
def test_probabilities_match_the_model(
    tiny_run: dict[str, Path], inputs: np.ndarray, case: str
) -> None:
    predictor = Predictor.from_run(tiny_run[case])
    assert predictor.name == case and predictor.classes == 10
    assert list(predictor.feature_layers) == ["conv1", "conv2"]  # from the description
    probs, maps = predictor.predict_inputs(inputs)
    assert maps == {}  # not asked for
    model, _ = checkpoint.load_model(tiny_run[case])
    with torch.no_grad():
        ref = predict_proba(model, torch.from_numpy(inputs).unsqueeze(1)).numpy()
    np.testing.assert_allclose(probs, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    results = predictor.predict_arrays(inputs, preprocess_images=False)
    assert [r.digit for r in results] == list(ref.argmax(axis=1))
    assert all(r.inverted is None for r in results)


@pytest.mark.parametrize(
    ("case", "shapes"),
    [("case1", ((16, 26, 26), (64, 11, 11))), ("case2", ((32, 26, 26), (10, 11, 11)))],
)
def test_feature_maps_match_functional_convolutions(
    tiny_run: dict[str, Path], inputs: np.ndarray, case: str, shapes: tuple[tuple[int, ...], ...]
) -> None:
    predictor = Predictor.from_run(tiny_run[case])
    _, maps = predictor.predict_inputs(inputs, feature_maps=True)
    sd = checkpoint.load_checkpoint(tiny_run[case] / "best.pt")["model"]
    x = torch.from_numpy(inputs).unsqueeze(1)  # (N, 1, 28, 28)
    conv1 = F.relu(F.conv2d(x, sd["conv1.weight"], sd["conv1.bias"]))
    conv2 = F.relu(F.conv2d(F.max_pool2d(conv1, 2), sd["conv2.weight"], sd["conv2.bias"]))
    assert {k: v.shape[1:] for k, v in maps.items()} == {"conv1": shapes[0], "conv2": shapes[1]}
    np.testing.assert_allclose(maps["conv1"], conv1.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps["conv2"], conv2.numpy(), rtol=1e-5, atol=1e-5)
    (one,) = predictor.predict_arrays(inputs[:1], preprocess_images=False, feature_maps=True)
    np.testing.assert_allclose(one.feature_maps["conv1"], conv1[0].numpy(), rtol=1e-5, atol=1e-6)


def test_threads_get_their_own_feature_maps(tiny_run: dict[str, Path], inputs: np.ndarray) -> None:
    predictor = Predictor.from_run(tiny_run["case1"])
    expected = [predictor.predict_inputs(inputs[i], feature_maps=True) for i in range(5)]
    got: dict[int, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(20):
                got[i] = predictor.predict_inputs(inputs[i], feature_maps=i % 2 == 0)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(5):
        np.testing.assert_allclose(got[i][0], expected[i][0], rtol=1e-5, atol=1e-6)
        if i % 2 == 0:
            np.testing.assert_allclose(got[i][1]["conv2"], expected[i][1]["conv2"], atol=1e-5)
        else:
            assert got[i][1] == {}


def test_arrays_and_files_agree(tiny_run: dict[str, Path], tmp_path: Path) -> None:
    predictor = Predictor.from_run(tiny_run["case1"])
    img = drawing()
    (from_array,) = predictor.predict_arrays([np.asarray(img)])
    (from_file,) = predictor.predict_files([save_png(img, tmp_path / "seven.png")])
    from_bytes = predictor.predict_image((tmp_path / "seven.png").read_bytes())
    for r in (from_array, from_file, from_bytes):
        assert r.inverted is True
        np.testing.assert_array_equal(r.input, preprocess(img).image)
        np.testing.assert_allclose(r.probabilities, from_array.probabilities, atol=1e-6)
    assert from_file.path == str(tmp_path / "seven.png")
    assert from_file.to_dict()["digit"] == from_file.digit
    assert len(from_file.to_dict()["probabilities"]) == 10


def test_bad_inputs(tiny_run: dict[str, Path], tmp_path: Path) -> None:
    predictor = Predictor.from_run(tiny_run["case1"])
    with pytest.raises(CnnlabError, match="28x28"):
        predictor.predict_arrays([np.zeros((20, 20), np.float32)], preprocess_images=False)
    with pytest.raises(CnnlabError, match=r"takes inputs of shape 28x28x1.*\(2, 3, 28, 28\)"):
        predictor.predict_inputs(np.zeros((2, 3, 28, 28), np.float32))
    (tmp_path / "note.png").write_text("not an image")
    with pytest.raises(ImageRejected, match=r"note\.png"):
        predictor.predict_files([tmp_path / "note.png"])
    with pytest.raises(CnnlabError, match="not found"):
        Predictor.from_run(tmp_path / "no-such-run")
    assert predictor.predict_arrays([]) == []


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_and_show_input(
    tiny_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    save_png(drawing(), folder / "a.png")
    save_png(drawing(dark_on_light=False), folder / "b.png")
    other = tmp_path / "other"
    other.mkdir()
    save_png(drawing(), other / "a.png")  # same file name as folder/a.png
    shown = tmp_path / "seen"
    code, out, err = run_cli(
        ["predict", str(tiny_run["case1"]), str(folder), str(other / "a.png"), "--json"]
        + ["--show-input", str(shown)],
        capsys,
    )
    assert code == 0, err
    rows = json.loads(out)
    assert [Path(r["path"]).name for r in rows] == ["a.png", "b.png", "a.png"]
    predictor = Predictor.from_run(tiny_run["case1"])
    for row in rows:
        (ref,) = predictor.predict_files([row["path"]])
        assert row["digit"] == ref.digit
        np.testing.assert_allclose(row["probabilities"], ref.probabilities, atol=1e-5)
    assert sorted(p.name for p in shown.iterdir()) == [
        "a-2.input.png",
        "a.input.png",
        "b.input.png",
    ]
    seen = np.asarray(Image.open(shown / "a.input.png"), dtype=np.float32) / 255
    assert seen.shape == (28, 28)
    np.testing.assert_allclose(seen, preprocess(drawing()).image, atol=0.5 / 255 + 1e-6)


def test_cli_table_and_errors(
    tiny_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = save_png(drawing(), tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"GIF89a but not really")
    code, out, err = run_cli(["predict", str(tiny_run["case2"]), str(good)], capsys)
    assert code == 0 and "digit" in out and "(inverted)" in out and "9:" in out
    # a file that does not decode: one line, skipped; the others are predicted
    code, out, err = run_cli(["predict", str(tiny_run["case2"]), str(good), str(bad)], capsys)
    assert code == 0 and "good.png" in out and "bad.png" not in out
    assert err.count("\n") == 1 and err.startswith("cnnlab: warning: skipped:") and "bad.png" in err
    code, out, err = run_cli(
        ["predict", str(tiny_run["case2"]), str(good), str(bad), "--strict"], capsys
    )
    assert code == 2 and err.startswith("cnnlab: error:") and "bad.png" in err
    code, out, err = run_cli(["predict", str(tiny_run["case2"]), str(bad), str(bad)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 3 and "none of the 2 images could be used" in err
    code, out, err = run_cli(["predict", str(tiny_run["case2"]), str(bad)], capsys)
    assert code == 2 and err.count("\n") == 1 and "bad.png" in err
    assert "Traceback" not in err
    code, out, err = run_cli(["predict", str(tiny_run["case2"]), str(good), "--no-invert"], capsys)
    assert code == 2 and "no digit found" in err
    code, _, err = run_cli(["predict", str(tmp_path), str(good)], capsys)
    assert code == 2 and err.startswith("cnnlab: error:") and err.count("\n") == 1


def test_cli_serve_refuses_a_bad_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["serve", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "not found" in err
    with pytest.raises(SystemExit):
        main(["serve", str(tmp_path), "--port", "70000"])


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny batches run faster on one thread, and far faster on a busy shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.mark.mnist
def test_photographed_mnist_digits_are_recognised(
    mnist: object, tmp_path: Path, global_random_seed: int, one_thread: None
) -> None:
    """A model trained briefly on real MNIST reads digits turned into 'photos' about as
    well as the digits themselves: the preprocessing undoes enlargement, inversion,
    placement and JPEG."""
    from cnnlab.data import scale
    from cnnlab.engine.device import to_tensors
    from cnnlab.models import create_model
    from cnnlab.train.loop import TrainConfig, make_optimizer, train_epoch

    x_train, y_train = mnist.x_train[:3000], mnist.y_train[:3000]  # type: ignore[attr-defined]
    x_test, y_test = mnist.x_test[:200], mnist.y_test[:200]  # type: ignore[attr-defined]
    model = create_model("case1")
    x, y = to_tensors(scale(x_train), y_train.astype(np.int64), torch.device("cpu"))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(global_random_seed))
    train_epoch(model, make_optimizer(model, TrainConfig()), x, y, order, batch_size=32)
    runs.save_torch(tmp_path / "best.pt", checkpoint.make_checkpoint(model.description, model, 1))
    predictor = Predictor.from_run(tmp_path)

    direct = predictor.predict_arrays(x_test / 255.0, preprocess_images=False)
    rng = np.random.default_rng(global_random_seed)
    photos = []
    for img in x_test:
        page = Image.new("L", (300, 260), 255)
        big = Image.fromarray(255 - img).resize((168, 168), Image.Resampling.BILINEAR)
        page.paste(big, (int(rng.integers(0, 130)), int(rng.integers(0, 90))))
        buf = io.BytesIO()
        page.save(buf, format="JPEG", quality=85)
        photos.append(buf.getvalue())
    from_photos = [predictor.predict_image(b) for b in photos]
    acc_direct = np.mean([r.digit == t for r, t in zip(direct, y_test, strict=True)])
    acc_photo = np.mean([r.digit == t for r, t in zip(from_photos, y_test, strict=True)])
    assert acc_direct > 0.85
    assert acc_photo > acc_direct - 0.05, (acc_direct, acc_photo)

"""Your own data end to end, from the command line alone: a folder of RGB images, a folder
of grey ones, and an ``.npz`` of series with string labels, each through train, evaluate,
explain, predict (with the class names), the web page's upload (images) and report.

Every step reads the run folder the one before wrote; the class names are the folders'
(or the labels'), never digits; nothing here calls cnnlab's Python API but ``main``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from image_runs import CLASSES, make_folder, picture

from cnnlab.cli.main import main

NETS = {
    # a template sized for the data, and a user's one-line network with its own size
    "rgb": ["--model", "smallcnn", "--image-size", "24x24", "--channels", "3"],
    "grey": ["--model", "Input(20,20,1) Conv2D(6,3,relu) MaxPooling2D Flatten Dense(3,softmax)"],
}


def ok(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.mark.parametrize("kind", list(NETS))
def test_a_folder_of_images_through_every_command(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = make_folder(tmp_path / "pictures", "RGB" if kind == "rgb" else "L")
    run = tmp_path / "run"
    train = ["train", *NETS[kind], "--data", f"folder:{folder}", "--epochs", "2"]
    ok([*train, "--out", str(run), "--quiet"], capsys)
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["classes"] == CLASSES  # natural order: "bar 2" before "bar 10"
    assert config["resolved"]["input_scale"]["divide_by"] == 255
    channels = 3 if kind == "rgb" else 1
    assert config["data"]["input_shape"][-1] == channels

    evaluated = ok(["evaluate", str(run)], capsys)
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"{metrics['test_accuracy']:.4f}" in evaluated
    assert (run / "confusion.png").is_file()

    ok(["explain", str(run), "--index", "1", "--out", str(tmp_path / "explain")], capsys)
    assert (tmp_path / "explain" / "overview.png").is_file()

    image = tmp_path / "ring.png"
    picture("ring", (64, 48), seed=99, mode="RGB" if kind == "rgb" else "L").save(image)
    (answer,) = json.loads(ok(["predict", str(run), str(image), "--json"], capsys))
    probs = np.asarray(answer["probabilities"])
    assert probs.shape == (3,) and abs(probs.sum() - 1) < 1e-5
    assert answer["label"] == CLASSES[int(probs.argmax())]  # a class name, not a number

    from cnnlab.serving.serve import create_app

    with TestClient(create_app(run), base_url="http://localhost") as client:
        reply = client.post(
            "/api/predict", content=image.read_bytes(), headers={"content-type": "image/png"}
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["label"] == answer["label"]
        np.testing.assert_allclose(body["probabilities"], probs, atol=1e-5)

    html = tmp_path / "report.html"
    small = ["--shift-images", "20", "--invariance-images", "10"]
    ok(["report", str(run), "--out", str(html), *small], capsys)
    page = html.read_text()
    assert all(name in page for name in CLASSES) and "data:image/png;base64" in page


def test_an_npz_of_series_with_string_labels_through_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(3)
    t = np.linspace(0, 1, 32)
    labels = np.array(["slow", "fast"] * 30)
    freq = np.where(labels == "slow", 2.0, 6.0)[:, None]
    x = np.sin(2 * np.pi * freq * t)[..., None] + 0.2 * rng.normal(size=(60, 32, 1))
    np.savez(tmp_path / "waves.npz", x_train=x.astype(np.float32), y_train=labels)
    run = tmp_path / "run"
    data = f"npz:{tmp_path / 'waves.npz'}"
    train = ["train", "--model", "fcn1d_small", "--data", data, "--epochs", "3"]
    ok([*train, "--batch-size", "8", "--out", str(run), "--quiet"], capsys)
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["classes"] == ["fast", "slow"] and config["data"]["kind"] == "series"
    assert config["config"]["monitor"] == "val_loss"  # series get the time-series recipe
    assert config["resolved"]["input_scale"]["divide_by"] == 1  # floats, as stored

    ok(["evaluate", str(run)], capsys)
    ok(["explain", str(run), "--index", "0", "--out", str(tmp_path / "explain")], capsys)
    assert list((tmp_path / "explain").glob("*.png"))
    np.save(tmp_path / "two.npy", x[:2].astype(np.float32))
    array = ["--array", str(tmp_path / "two.npy"), "--json"]
    rows = json.loads(ok(["predict", str(run), *array], capsys))
    assert [r["label"] in ("fast", "slow") for r in rows] == [True, True]
    html = tmp_path / "report.html"
    ok(["report", str(run), "--out", str(html)], capsys)
    assert "slow" in html.read_text()

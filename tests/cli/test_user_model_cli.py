"""A network the user wrote in a file goes through every command, from the command line.

The descriptions (a YAML chain with strides, same padding, BatchNormalization, average
pooling and a tanh; a YAML graph with a residual connection) are nothing the registry knows:
train, evaluate, summary, receptive, explain, predict (an image and a .npy), serve (the app
answers /api/predict), export to ONNX and NumPy, shift and report all rebuild them from the
run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import MNIST
from cnnlab.train.checkpoint import load_model

DESCRIPTIONS = {
    "my_net": """\
name: my_net
input_shape: [28, 28, 1]
layers:
  - Conv2D: {filters: 6, kernel_size: 5, strides: 2, padding: same, activation: tanh}
  - BatchNormalization: {}
  - AveragePooling2D: {pool_size: 2}
  - Conv2D: {filters: 8, kernel_size: 3, activation: relu, name: second}
  - Flatten: {}
  - Dense: {units: 10, activation: softmax}
""",
    "my_resnet": """\
name: my_resnet
input_shape: [28, 28, 1]
layers:
  - Conv2D: {name: stem, filters: 8, kernel_size: 3, padding: same, activation: relu}
  - MaxPooling2D: {name: pool}
  - Conv2D: {name: second, filters: 8, kernel_size: 3, padding: same, activation: relu}
  - Conv2D: {name: third, filters: 8, kernel_size: 3, padding: same, use_bias: false}
  - BatchNormalization: {name: bn}
  - Add: {name: skip, inputs: [bn, pool]}
  - ReLU: {}
  - GlobalAveragePooling2D: {}
  - Dense: {units: 10, activation: softmax}
""",
}
# Keras' counts. my_net: 5*5*6+6, BN 4*6 (2*6 trainable), 3*3*6*8+8 on 7x7x6, Dense on
# 5*5*8. my_resnet: 3*3*8+8, 3*3*8*8+8, 3*3*8*8, BN 4*8, Dense 8*10+10.
PARAMS = {"my_net": 156 + 24 + 440 + 2010, "my_resnet": 80 + 584 + 576 + 32 + 90}


@pytest.fixture(params=sorted(DESCRIPTIONS))
def run(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    synthetic_data: MNIST,
    capsys: pytest.CaptureFixture[str],
) -> Path:
    model = tmp_path / "my_net.yaml"
    model.write_text(DESCRIPTIONS[request.param])
    out = tmp_path / "run"
    args = ["train", "--model", str(model), "--epochs", "2", "--out", str(out)]
    assert main([*args, "--batch-size", "16", "--seed", "3"]) == 0
    capsys.readouterr()
    return out


def _ok(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_a_users_file_goes_through_every_command(
    run: Path, tmp_path: Path, synthetic_data: MNIST, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = json.loads((run / "model.json").read_text())
    name = saved["name"]
    assert saved["layers"][0]["class_name"] == "Conv2D"
    if name == "my_resnet":  # the graph is kept: the merge reads its two inputs
        assert next(x for x in saved["layers"] if x["name"] == "skip")["inputs"] == ["bn", "pool"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"] == name and 0 <= metrics["test_accuracy"] <= 1
    assert metrics["params"] == PARAMS[name]

    assert "second (Conv2D)" in _ok(["summary", "--model", str(tmp_path / "my_net.yaml")], capsys)
    assert "second" in _ok(["receptive", "--model", str(tmp_path / "my_net.yaml")], capsys)
    evaluated = _ok(["evaluate", str(run)], capsys)
    assert f"{metrics['test_accuracy']:.4f}" in evaluated

    _ok(["explain", str(run), "--index", "0", "--out", str(tmp_path / "explain")], capsys)
    assert list((tmp_path / "explain").rglob("*.png"))

    image = tmp_path / "digit.png"
    Image.fromarray(synthetic_data.x_test[0]).save(image)
    predicted = json.loads(_ok(["predict", str(run), str(image), "--json"], capsys))
    probs = np.asarray(predicted[0]["probabilities"])
    assert probs.shape == (10,) and abs(probs.sum() - 1) < 1e-5
    array = tmp_path / "x.npy"
    np.save(array, synthetic_data.x_test[:3, :, :, None].astype(np.float32) / 255)
    batch = json.loads(_ok(["predict", str(run), "--array", str(array), "--json"], capsys))
    assert len(batch) == 3
    net, _ = load_model(run)  # the network as the run folder describes it, on the raw arrays
    with torch.no_grad():
        x = torch.from_numpy(np.load(array)).movedim(-1, 1)
        expected = torch.softmax(net.eval()(x), dim=1).numpy()
    np.testing.assert_allclose([b["probabilities"] for b in batch], expected, atol=1e-5)

    from cnnlab.serving.serve import create_app

    with TestClient(create_app(run), base_url="http://localhost") as client:
        png = image.read_bytes()
        answer = client.post("/api/predict", content=png, headers={"content-type": "image/png"})
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(answer.json()["probabilities"], probs, atol=1e-5)

    onnx = tmp_path / "my_net.onnx"
    _ok(["export", str(run), "--onnx", str(onnx)], capsys)
    assert onnx.stat().st_size > 1000
    _ok(["export-numpy", str(run), "--out", str(tmp_path / "my_net.npz")], capsys)
    assert (tmp_path / "my_net.npz").is_file()
    _ok(["report", str(run), "--out", str(tmp_path / "report.html"), "--no-verify"], capsys)
    html = (tmp_path / "report.html").read_text()
    assert name in html and "second" in html

"""Feature maps and kernel grids of a trained run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.analysis.explain import (
    explain_image,
    feature_maps,
    kernel_mosaic,
    load_image_file,
)
from cnnlab.cli import main
from cnnlab.data import MNIST, scale
from cnnlab.engine.numpy_engine import from_run, from_torch
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_feature_maps_match_torch_layers(global_random_seed: int) -> None:
    model = create_model("case1").eval()
    image = np.random.default_rng(0).random((28, 28, 1), dtype=np.float32)
    fms = feature_maps(from_torch(model, "case1"), image)
    assert [(f.name, f.kind, f.maps.shape) for f in fms] == [
        ("conv1", "conv", (26, 26, 16)),
        ("pool1", "pool", (13, 13, 16)),
        ("conv2", "conv", (11, 11, 64)),
        ("pool2", "pool", (5, 5, 64)),
    ]
    # Independent reference: torch's own layers, channels-first, transposed to (h, w, C).
    with torch.no_grad():
        h = torch.from_numpy(image).permute(2, 0, 1)[None]
        ref = {}
        for name, layer in model.named_children():
            h = layer(h)
            if h.ndim == 4:
                ref[name] = h[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(fms[0].maps, ref["relu1"], atol=1e-5)  # conv1 = after its ReLU
    np.testing.assert_allclose(fms[3].maps, ref["pool2"], atol=1e-5)


def test_kernel_mosaic_layout() -> None:
    w = np.arange(3 * 3 * 4 * 2, dtype=np.float64).reshape(3, 3, 4, 2)
    m = kernel_mosaic(w, gap=1, filter_gap=3)
    # Each filter: 2x2 sub-grid of 3x3 kernels = 7x7; two filters side by side, 3 apart.
    assert m.shape == (7, 17)
    np.testing.assert_array_equal(m[0:3, 0:3], w[:, :, 0, 0])
    np.testing.assert_array_equal(m[4:7, 4:7], w[:, :, 3, 0])  # 4th input channel
    np.testing.assert_array_equal(m[0:3, 10:13], w[:, :, 0, 1])  # second filter
    assert np.isnan(m[3]).all() and np.isnan(m[:, 7:10]).all()


def test_explain_writes_titled_pngs(
    tiny_run: dict[str, Path], tiny_mnist: MNIST, tmp_path: Path
) -> None:
    model = from_run(tiny_run["case2"])
    paths = explain_image(model, scale(tiny_mnist.x_test[:1])[0], tmp_path / "x", "test image #0")
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [
            "overview.png",
            "maps_conv1.png",
            "maps_pool1.png",
            "maps_conv2.png",
            "maps_pool2.png",
            "kernels_conv1.png",
            "kernels_conv2.png",
        ]
    )
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) < 300_000, p


def test_explain_rejects_a_wrong_shape(global_random_seed: int, tmp_path: Path) -> None:
    model = from_torch(create_model("case3"), "case3")
    with pytest.raises(CnnlabError, match="28x28"):
        explain_image(model, np.zeros((32, 32, 1), np.float32), tmp_path, "x")


def test_load_image_file_inverts_dark_on_light(tmp_path: Path) -> None:
    img = np.full((60, 40), 255, dtype=np.uint8)
    img[10:50, 18:22] = 0  # a dark vertical stroke on white paper
    path = tmp_path / "one.png"
    Image.fromarray(img).save(path)
    x = load_image_file(path)
    assert x.shape == (28, 28, 1) and x.dtype == np.float32
    assert x[0, 0, 0] == 0 and x.max() > 0.9  # white-on-black now
    assert x[:, 14, 0].max() > 0.9  # the stroke is centred


def test_cli_explain_index_and_image(
    tiny_run: dict[str, Path],
    tiny_mnist: MNIST,
    synthetic_data: MNIST,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run["case1"], run)
    assert main(["explain", str(run), "--index", "3"]) == 0
    assert (run / "explain" / "test-3" / "maps_pool2.png").is_file()
    path = tmp_path / "digit.png"
    Image.fromarray((tiny_mnist.x_test[0]).astype(np.uint8)).save(path)
    assert main(["explain", str(run), "--image", str(path), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "overview.png").is_file()
    capsys.readouterr()
    assert main(["explain", str(run), "--index", "100000"]) == 2
    assert "--index must be below" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["explain", str(run), "--image", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: error:") and err.count("\n") == 1

"""Feature maps and kernel grids of any 2-D network; a user's own run end to end.

``train_user_run`` and ``write_untrained_run`` are imported by the shift and report tests.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.analysis.explain import explain_image, feature_maps, kernel_mosaic, load_image_file
from cnnlab.analysis.numpy_check import from_run
from cnnlab.cli import main
from cnnlab.data import MNIST, Splits, scale
from cnnlab.engine.numpy_engine import from_torch
from cnnlab.errors import CnnlabError
from cnnlab.models import ModelDescription, build_module, get, parse_compact
from cnnlab.models import layers as L
from cnnlab.train import records
from cnnlab.train.config import TrainConfig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
USER_MODEL = (  # strides, same padding, tanh, BN, dilation, a separate ReLU, average pooling
    "Input(28,28,1) Conv2D(6,5,2,same,tanh,name=c1) BatchNormalization(name=bn) "
    "MaxPooling2D(3,1,same,name=p1) Conv2D(8,3,dilation_rate=2,name=c2) ReLU(name=r2) "
    "AveragePooling2D(2,1,name=p2) Flatten(name=flat) Dense(10,softmax,name=out)"
)
SERIES = "Input(20,3) Conv1D(4,3,same,relu) MaxPooling1D(2) Flatten Dense(4,softmax)"
COLOUR = "Input(16,16,3) Conv2D(4,3,same,relu) MaxPooling2D(2) GlobalAveragePooling2D Dense(3)"


def train_user_run(out: Path, splits: Splits) -> Path:
    """One epoch of the user's own description (USER_MODEL) on ``splits``, into ``out``."""
    from cnnlab.train.loop import fit

    desc = parse_compact(USER_MODEL, "mine")
    config = TrainConfig(model=USER_MODEL, epochs=1)
    fit(config, splits, out, description=desc, progress=False, log=lambda _m: None)
    return out


def write_untrained_run(out: Path, line: str, name: str) -> Path:
    """A run folder holding only the best.pt of a freshly initialised network."""
    out.mkdir(parents=True, exist_ok=True)
    desc = parse_compact(line, name)
    records.save_best(out, desc, build_module(desc), 0)
    return out


@pytest.fixture(scope="module")
def user_run(tmp_path_factory: pytest.TempPathFactory, tiny_splits: Splits) -> Path:
    return train_user_run(tmp_path_factory.mktemp("mine"), tiny_splits)


def _torch_outputs(desc: ModelDescription, model: torch.nn.Module, image: np.ndarray) -> dict:
    """Every child's output for one image, channels-last (N dropped)."""
    out, h = {}, torch.from_numpy(image).movedim(-1, 0)[None]
    with torch.no_grad():
        for layer, child in zip(desc.layers, model, strict=True):
            h = child(h)
            out[layer.name] = h[0].movedim(0, -1).numpy() if h.ndim > 2 else h[0].numpy()
    return out


@pytest.mark.parametrize("line", ["case1", USER_MODEL])
def test_feature_maps_match_torch_layers(line: str, global_random_seed: int) -> None:
    desc = get(line) if line == "case1" else parse_compact(line, "mine")
    model = build_module(desc).eval()
    image = np.random.default_rng(0).random((28, 28, 1), dtype=np.float32)
    fms = feature_maps(from_torch(model), image)
    ref = _torch_outputs(desc, model, image)  # independent: torch's own layers
    assert [f.name for f in fms] == [
        ly.name for ly in desc.layers if isinstance(ly, L.Conv | L.Pool)
    ]
    for fm in fms:
        np.testing.assert_allclose(fm.maps, ref[fm.layer.output], atol=1e-5)
    if line != "case1":
        assert [f.layer.output for f in fms] == ["bn", "p1", "r2", "p2"]


def test_kernel_mosaic_layout() -> None:
    w = np.arange(3 * 3 * 4 * 2, dtype=np.float64).reshape(3, 3, 4, 2)
    m = kernel_mosaic(w, gap=1, filter_gap=3)
    # Each filter: 2x2 sub-grid of 3x3 kernels = 7x7; two filters side by side, 3 apart.
    assert m.shape == (7, 17)
    np.testing.assert_array_equal(m[0:3, 0:3], w[:, :, 0, 0])
    np.testing.assert_array_equal(m[4:7, 4:7], w[:, :, 3, 0])  # 4th input channel
    np.testing.assert_array_equal(m[0:3, 10:13], w[:, :, 0, 1])  # second filter
    assert np.isnan(m[3]).all() and np.isnan(m[:, 7:10]).all()


def test_explain_a_user_run(user_run: Path, tiny_mnist: MNIST, tmp_path: Path) -> None:
    model = from_run(user_run)
    paths = explain_image(model, scale(tiny_mnist.x_test[:1])[0], tmp_path / "x", "test #0")
    assert sorted(p.name for p in paths) == sorted(
        ["overview.png", *(f"maps_{n}.png" for n in ("c1", "p1", "c2", "p2"))]
        + ["kernels_c1.png", "kernels_c2.png"]
    )
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) < 300_000, p


def test_explain_any_2d_network(tmp_path: Path, global_random_seed: int) -> None:
    model = from_torch(build_module(parse_compact(COLOUR, "colour")))
    image = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
    names = {p.name for p in explain_image(model, image, tmp_path, "random")}
    assert names == {"overview.png", "maps_conv2d.png", "maps_max_pooling2d.png"} | {
        "kernels_conv2d.png"
    }
    with pytest.raises(CnnlabError, match="colour takes 16x16x3 images, got 28x28x1"):
        explain_image(model, np.zeros((28, 28, 1), np.float32), tmp_path, "x")
    series = from_torch(build_module(parse_compact(SERIES, "series")))
    with pytest.raises(CnnlabError, match="explain draws 2-D feature maps; series takes 20x3"):
        explain_image(series, np.zeros((20, 3), np.float32), tmp_path, "x")


def test_load_image_file_inverts_dark_on_light(tmp_path: Path) -> None:
    img = np.full((60, 40), 255, dtype=np.uint8)
    img[10:50, 18:22] = 0  # a dark vertical stroke on white paper
    path = tmp_path / "one.png"
    Image.fromarray(img).save(path)
    x = load_image_file(path)
    assert x.shape == (28, 28, 1) and x.dtype == np.float32
    assert x[0, 0, 0] == 0 and x.max() > 0.9  # white-on-black now
    assert x[:, 14, 0].max() > 0.9  # the stroke is centred


def _one_error_line(capsys: pytest.CaptureFixture[str], *phrases: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: error:") and err.count("\n") == 1, err
    for phrase in phrases:
        assert phrase in err, err


def test_cli_explain(
    user_run: Path,
    tiny_mnist: MNIST,
    synthetic_data: MNIST,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    shutil.copytree(user_run, run)
    assert main(["explain", str(run), "--index", "3"]) == 0
    assert (run / "explain" / "test-3" / "maps_p2.png").is_file()
    path = tmp_path / "digit.png"
    Image.fromarray(tiny_mnist.x_test[0].astype(np.uint8)).save(path)
    assert main(["explain", str(run), "--image", str(path), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "overview.png").is_file()
    capsys.readouterr()
    assert main(["explain", str(run), "--index", "100000"]) == 2
    _one_error_line(capsys, "--index must be below")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["explain", str(run), "--image", str(bad)]) == 2
    _one_error_line(capsys)
    assert main(["explain", str(tmp_path / "nowhere"), "--index", "0"]) == 2
    _one_error_line(capsys, "no best.pt")
    series = write_untrained_run(tmp_path / "series", SERIES, "series")  # no data recorded
    assert main(["explain", str(series), "--index", "0"]) == 2
    _one_error_line(capsys, "the network takes 20x3 inputs, the data (mnist) has 28x28x1")
    line = COLOUR.replace("Dense(3)", "Dense(3,softmax)")
    colour = write_untrained_run(tmp_path / "colour", line, "colour")  # any image file
    assert main(["explain", str(colour), "--image", str(path), "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "overview.png").is_file()

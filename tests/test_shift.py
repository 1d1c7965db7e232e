"""Shift robustness: the shift itself, the accuracy grid, and equivariance vs invariance."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab import fileio
from cnnlab.analysis import shift
from cnnlab.analysis.shift import (
    ShiftConfig,
    ShiftGrid,
    accuracy_grid,
    layer_invariance,
    markdown_grid,
    run_shift,
    shift_images,
    torch_predictor,
)
from cnnlab.cli import main
from cnnlab.data import MNIST, scale
from cnnlab.engine.device import to_tensors
from cnnlab.engine.inference import evaluate
from cnnlab.engine.numpy_engine import Layer, NumpyModel, from_run
from cnnlab.train import checkpoint


def test_shift_images_by_hand() -> None:
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4)
    down_left = shift_images(x, 1, -2)[0]
    expected = np.array(
        [[0, 0, 0, 0], [3, 4, 0, 0], [7, 8, 0, 0], [11, 12, 0, 0]], dtype=np.float32
    )
    np.testing.assert_array_equal(down_left, expected)
    np.testing.assert_array_equal(shift_images(x, 0, 0), x)
    assert not shift_images(x, 0, 4).any() and not shift_images(x, -5, 0).any()
    # Channels ride along: (N, H, W, C).
    xc = np.stack([x, -x], axis=-1)
    np.testing.assert_array_equal(shift_images(xc, 1, -2)[..., 1], -shift_images(x, 1, -2))


def test_grid_rows_are_dy_and_columns_dx() -> None:
    # One lit pixel per image; the "classifier" reads off its row, which only dy changes.
    rng = np.random.default_rng(0)
    n = 50
    rows, cols = rng.integers(5, 23, n), rng.integers(5, 23, n)
    x = np.zeros((n, 28, 28, 1), dtype=np.float32)
    x[np.arange(n), rows, cols, 0] = 1

    def predict(xs: np.ndarray) -> np.ndarray:
        return xs[..., 0].max(axis=2).argmax(axis=1)

    grid = accuracy_grid(predict, x, rows, max_shift=2)
    assert grid.shifts == [-2, -1, 0, 1, 2]
    np.testing.assert_array_equal(grid.accuracy[2], np.ones(5))  # dy = 0: every dx is fine
    assert grid.accuracy[[0, 1, 3, 4]].max() == 0.0  # any dy moves the row
    assert grid.at(0, 2) == 1.0 and grid.at(1, 0) == 0.0
    assert ShiftGrid.from_dict(grid.as_dict()).at(0, -2) == 1.0
    assert "| +0 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 |" in markdown_grid(grid)


@pytest.mark.parametrize("case", ["case1", "case2", "case3"])
def test_shift_zero_is_the_unshifted_accuracy(
    case: str, tiny_run: dict[str, Path], tiny_mnist: MNIST
) -> None:
    model, _ = checkpoint.load_model(tiny_run[case], "best")
    x, y = scale(tiny_mnist.x_test), tiny_mnist.y_test.astype(np.int64)
    _, acc, _ = evaluate(model, *to_tensors(x, y, torch.device("cpu")))
    grid = accuracy_grid(torch_predictor(model, batch_size=16), x, y, max_shift=1)
    assert grid.at(0, 0) == pytest.approx(acc, abs=1e-12)


def _identity_pool_model() -> NumpyModel:
    """A 1x1 identity convolution, ReLU, 2x2 max-pool: maps we can reason about by hand."""
    conv = Layer(
        "conv1",
        "conv",
        {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1]},
        {"w": np.ones((1, 1, 1, 1), np.float32), "b": np.zeros(1, np.float32)},
    )
    pool = Layer("pool1", "max_pool", {"pool_size": [2, 2], "strides": [2, 2]})
    return NumpyModel("toy", [conv, Layer("relu1", "relu"), pool])


def test_invariance_fractions_by_hand() -> None:
    x = np.zeros((1, 8, 8, 1), dtype=np.float32)
    x[0, 2, 2, 0] = 5.0  # top-left cell of pooling window (1, 1)
    conv, pool = layer_invariance(_identity_pool_model(), x)
    # The conv map moves with the pixel: the two units involved change under every shift.
    assert (conv.name, conv.kind, conv.jump) == ("conv1", "conv", 1)
    assert conv.unchanged_1px == 0.0 and conv.units == 8
    assert conv.relative_change == pytest.approx(2.0)  # 2 * 5 changed per shift, |f(x)| = 5
    # Right and down keep the pixel in its window (pooled value unchanged: 1 unit each);
    # left and up move it to a neighbouring window (2 units changed each): 2 of 6.
    assert (pool.kind, pool.jump) == ("pool", 2)
    assert pool.units == 6 and pool.unchanged_1px == pytest.approx(2 / 6)
    assert pool.relative_change == pytest.approx(1.0)  # (0 + 10 + 0 + 10) / (4 * 5)
    assert conv.equivariant == 1.0 and pool.equivariant == 1.0
    # Over all 64 (conv) / 16 (pool) units nearly everything is zero and "unchanged".
    assert conv.unchanged_1px_all == pytest.approx(1 - 8 / (4 * 64))


def test_trained_maps_are_equivariant(tiny_run: dict[str, Path], tiny_mnist: MNIST) -> None:
    # Noisy synthetic images: ink everywhere, so only the outermost units are left out.
    layers = layer_invariance(from_run(tiny_run["case1"]), scale(tiny_mnist.x_test[:12]))
    assert [ly.name for ly in layers] == ["conv1", "pool1", "conv2", "pool2"]
    assert [ly.jump for ly in layers] == [1, 2, 2, 4]
    for ly in layers:
        assert ly.equivariant == 1.0, ly
        assert 0 <= ly.unchanged_1px < 1 and ly.units > 0
    # A 1-pixel shift moves conv1's map: hardly any of its responding values stay.
    assert layers[0].unchanged_1px < 0.05


def test_run_shift_caches(
    tiny_run: dict[str, Path],
    tiny_mnist: MNIST,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run["case2"], run)
    x, y = scale(tiny_mnist.x_test), tiny_mnist.y_test.astype(np.int64)
    config = ShiftConfig(max_shift=1, n_images=20, invariance_images=5)
    first = run_shift(run, x, y, config)
    assert (run / "shift.png").is_file() and first["grid"]["n_images"] == 20
    assert len(first["grid"]["accuracy"]) == 3 and len(first["layers"]) == 4

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("recomputed despite a valid cache")

    monkeypatch.setattr(shift, "accuracy_grid", boom)
    assert run_shift(run, x, y, config) == first
    with pytest.raises(AssertionError, match="recomputed"):
        run_shift(run, x, y, ShiftConfig(max_shift=2, n_images=20, invariance_images=5))


def test_shift_config_is_checked() -> None:
    from cnnlab.errors import CnnlabError

    with pytest.raises(CnnlabError, match="max_shift"):
        ShiftConfig(max_shift=30)
    with pytest.raises(CnnlabError, match="n_images"):
        ShiftConfig(n_images=0)


def test_cli_shift(
    tiny_run: dict[str, Path],
    synthetic_data: MNIST,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run["case3"], run)
    args = ["shift", str(run), "--max-shift", "1", "--invariance-images", "4"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| dy \\ dx | -1 | +0 | +1 |" in out and "pool2 (max-pool)" in out
    assert fileio.read_json(run / "shift.json")["config"]["max_shift"] == 1

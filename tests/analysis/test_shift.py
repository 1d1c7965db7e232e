"""Shift robustness: the shift itself, the accuracy grid, and equivariance vs invariance."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from model_zoo import ZOO, randomize

from cnnlab import fileio
from cnnlab.analysis import invariance, shift
from cnnlab.analysis.layer_walk import feature_map_layers
from cnnlab.analysis.numpy_check import from_run
from cnnlab.analysis.run_data import RunTestSet
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
from cnnlab.data import MNIST, Splits, scale
from cnnlab.engine.device import to_tensors
from cnnlab.engine.inference import evaluate
from cnnlab.engine.numpy_engine import NumpyModel, from_torch, weight_shapes
from cnnlab.errors import CnnlabError
from cnnlab.models import build_module, parse_compact
from cnnlab.train import checkpoint

from .test_explain import SERIES, train_user_run, write_untrained_run
from .test_receptive import linearised

IMAGES_2D = [n for n, d in ZOO.items() if d.rank == 2]


@pytest.fixture(scope="module")
def user_run(tmp_path_factory: pytest.TempPathFactory, tiny_splits: Splits) -> Path:
    return train_user_run(tmp_path_factory.mktemp("mine"), tiny_splits)


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


def test_shift_zero_is_the_unshifted_accuracy(user_run: Path, tiny_mnist: MNIST) -> None:
    model, _ = checkpoint.load_model(user_run, "best")
    x, y = scale(tiny_mnist.x_test), tiny_mnist.y_test.astype(np.int64)
    _, acc, _ = evaluate(model, *to_tensors(x, y, torch.device("cpu")))
    grid = accuracy_grid(torch_predictor(model, batch_size=16), x, y, max_shift=1)
    assert grid.at(0, 0) == pytest.approx(acc, abs=1e-12)


def _ones(line: str) -> NumpyModel:
    """A description with kernels of ones and zero biases: maps we can reason about by hand."""
    desc = parse_compact(line, "toy")
    weights = {
        info.layer.name: {k: np.ones(s) if k == "kernel" else np.zeros(s) for k, s in w.items()}
        for info in desc.info
        if (w := weight_shapes(info))
    }
    return NumpyModel(desc, weights)


def test_invariance_fractions_by_hand() -> None:
    x = np.zeros((1, 8, 8, 1), dtype=np.float32)
    x[0, 2, 2, 0] = 5.0  # top-left cell of pooling window (1, 1)
    toy = _ones("Input(8,8,1) Conv2D(1,1,relu,name=conv1) MaxPooling2D(2,name=pool1)")
    conv, pool = layer_invariance(toy, x)
    # The conv map moves with the pixel: the two units involved change under every shift.
    assert (conv.name, conv.kind, conv.what, conv.jump) == (
        "conv1",
        "conv",
        "Conv2D 1x1, relu",
        [1, 1],
    )
    assert conv.unchanged_1px == 0.0 and conv.units == 8
    assert conv.relative_change == pytest.approx(2.0)  # 2 * 5 changed per shift, |f(x)| = 5
    # Right and down keep the pixel in its window (pooled value unchanged: 1 unit each);
    # left and up move it to a neighbouring window (2 units changed each): 2 of 6.
    assert (pool.kind, pool.jump) == ("pool", [2, 2])
    assert pool.units == 6 and pool.unchanged_1px == pytest.approx(2 / 6)
    assert pool.relative_change == pytest.approx(1.0)  # (0 + 10 + 0 + 10) / (4 * 5)
    # Shifted by J down, then right: the lit unit moved by one unit, once per axis.
    assert conv.equivariant == pool.equivariant == 1.0
    assert conv.equivariant_units == pool.equivariant_units == 2
    # Over all 64 (conv) / 16 (pool) units nearly everything is zero and "unchanged".
    assert conv.unchanged_1px_all == pytest.approx(1 - 8 / (4 * 64))


def test_padded_units_are_left_out_exactly() -> None:
    # A 3x3 same conv on 8x8: only rows/columns 1..6 read no padding. Pairs (u, u - 1) of
    # such units along one axis: 5 x 6 = 30, on both axes 60, per image.
    x = 0.1 + np.random.default_rng(0).random((2, 8, 8, 1), dtype=np.float32)
    (conv,) = layer_invariance(_ones("Input(8,8,1) Conv2D(1,3,same)"), x)
    assert conv.equivariant == 1.0 and conv.equivariant_units == 2 * 60
    # Dilation 2 with same padding: rows/columns 2..5 are clean: 3 x 4 = 12 pairs per axis.
    (conv,) = layer_invariance(_ones("Input(8,8,1) Conv2D(1,3,same,dilation_rate=2)"), x)
    assert conv.equivariant == 1.0 and conv.equivariant_units == 2 * 24


@pytest.mark.parametrize("name", IMAGES_2D)
def test_clean_units_are_exactly_equivariant(name: str, global_random_seed: int) -> None:
    desc = ZOO[name]
    engine = from_torch(randomize(build_module(desc), 0).eval())
    x = np.random.default_rng(1).random((3, *desc.input_shape), dtype=np.float32)
    layers = layer_invariance(engine, x)
    assert [ly.name for ly in layers] == [m.name for m in feature_map_layers(desc)]
    for ly in layers:
        # Where every unit reads padding somewhere (speedrun's 3x3 pool2), none is compared.
        assert ly.equivariant == (1.0 if ly.equivariant_units else None), ly
        assert 0 <= ly.unchanged_1px <= 1 and 0 <= ly.unchanged_1px_all <= 1
    assert sum(ly.equivariant_units for ly in layers) > 0


@pytest.mark.parametrize("name", IMAGES_2D)
def test_ink_masks_follow_the_window_geometry(name: str, global_random_seed: int) -> None:
    # A linear network with positive kernels and zero biases responds exactly where a unit's
    # windows (padding, strides, dilation and all) reach a lit pixel: the ink mask.
    desc = ZOO[name]
    lin = linearised(desc)
    weights = {
        info.layer.name: {k: np.full(s, 0.5) if k == "kernel" else np.ones(s) for k, s in w.items()}
        for info in lin.info
        if (w := weight_shapes(info))
    }
    for info in lin.info:  # zero biases, betas and moving means
        for key in ("bias", "beta", "moving_mean"):
            if key in weights.get(info.layer.name, {}):
                weights[info.layer.name][key][:] = 0
    engine = NumpyModel(lin, weights, "float64")
    x = np.zeros((4, *desc.input_shape))
    rng = np.random.default_rng(0)
    for i in range(4):
        x[i, rng.integers(0, desc.input_shape[0]), rng.integers(0, desc.input_shape[1]), 0] = 1
    walk = feature_map_layers(lin)
    ink = invariance._ink(lin, walk, x)
    for m, maps in invariance.map_outputs(walk, engine.activations(x)):
        np.testing.assert_array_equal(ink[m.name], (maps > 0).any(axis=-1), err_msg=m.name)


def test_trained_user_run(user_run: Path, tiny_mnist: MNIST) -> None:
    layers = layer_invariance(from_run(user_run), scale(tiny_mnist.x_test[:12]))
    assert [(ly.name, ly.jump) for ly in layers] == [
        ("c1", [2, 2]),
        ("p1", [2, 2]),
        ("c2", [2, 2]),
        ("p2", [2, 2]),
    ]
    assert layers[1].what == "MaxPooling2D 3x3 stride 1, same"
    for ly in layers:
        assert ly.equivariant == 1.0 and ly.equivariant_units > 0, ly
        assert 0 <= ly.unchanged_1px < 1 and ly.units > 0


def test_run_shift_caches(
    user_run: Path, tiny_mnist: MNIST, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    shutil.copytree(user_run, run)
    test = RunTestSet.of(run, checkpoint.load_model(run, "best")[0].description, tiny_mnist)
    config = ShiftConfig(max_shift=1, n_images=20, invariance_images=5)
    lines: list[str] = []
    first = run_shift(run, test, config, log=lines.append)
    assert (run / "shift.png").is_file() and first["grid"]["n_images"] == 20
    assert len(first["grid"]["accuracy"]) == 3 and len(first["layers"]) == 4
    assert first["model"] == first["case"] == "mine"
    assert re.fullmatch(rf"shift robustness of {run}: 20 test images, about \d+ (s|min)", lines[0])
    # The grid is the one of the scaled arrays (MNIST's pixels / 255), read batch by batch.
    x, y = scale(tiny_mnist.x_test), tiny_mnist.y_test.astype(np.int64)
    model, _ = checkpoint.load_model(run, "best")
    alone = accuracy_grid(torch_predictor(model), x[:20], y[:20], max_shift=1)
    np.testing.assert_array_equal(first["grid"]["accuracy"], alone.accuracy)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("recomputed despite a valid cache")

    monkeypatch.setattr(shift, "split_grid", boom)
    assert run_shift(run, test, config, log=lines.append) == first
    assert lines[-1] == f"shift grid of {run}: reused from shift.json (--recompute to redo it)"
    with pytest.raises(AssertionError, match="recomputed"):
        run_shift(run, test, ShiftConfig(max_shift=2, n_images=20, invariance_images=5))
    other = RunTestSet(test.x[::-1], test.y[::-1], test.classes, test.scale, test.spec)
    with pytest.raises(AssertionError, match="recomputed"):  # other data: another key
        run_shift(run, other, config)
    # A cache from before the data was keyed was made on MNIST's test set: still used there.
    older = {k: v for k, v in first.items() if k != "data"} | {"format": "cnnlab-shift-2"}
    fileio.write_json(run / "shift.json", older)
    assert run_shift(run, test, config) == older
    with pytest.raises(AssertionError, match="recomputed"):
        run_shift(run, RunTestSet(test.x, test.y, test.classes, test.scale, "npz:x.npz"), config)


def test_other_inputs_are_refused_in_one_line(tmp_path: Path, tiny_mnist: MNIST) -> None:
    run = write_untrained_run(tmp_path / "series", SERIES, "series")
    test = RunTestSet.of_inputs(np.zeros((2, 20, 3), np.float32), np.zeros(2))
    with pytest.raises(
        CnnlabError, match=r"shift needs a network of images \(2-D maps\); series takes 20x3 series"
    ):
        run_shift(run, test, ShiftConfig(max_shift=1))
    with pytest.raises(CnnlabError, match="need a network of images"):
        layer_invariance(from_run(run), np.zeros((1, 20, 3), np.float32))


def test_shift_config_is_checked(user_run: Path, tiny_mnist: MNIST) -> None:
    with pytest.raises(CnnlabError, match=r"max_shift must be in 0\.\.64"):
        ShiftConfig(max_shift=65)
    test = RunTestSet.of(
        user_run, checkpoint.load_model(user_run, "best")[0].description, tiny_mnist
    )
    with pytest.raises(CnnlabError, match=r"max_shift must be below the images' side \(28\)"):
        run_shift(user_run, test, ShiftConfig(max_shift=28))
    with pytest.raises(CnnlabError, match="n_images"):
        ShiftConfig(n_images=0)


def test_cli_shift(
    tiny_run: dict[str, Path],
    user_run: Path,
    synthetic_data: MNIST,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run["case3"], run)
    args = ["shift", str(run), "--max-shift", "1", "--invariance-images", "4"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| dy \\ dx | -1 | +0 | +1 |" in out and "| pool2 (MaxPooling2D 2x2) | 4 |" in out
    assert fileio.read_json(run / "shift.json")["config"]["max_shift"] == 1
    mine = tmp_path / "mine"
    shutil.copytree(user_run, mine)
    assert main(["shift", str(mine), "--max-shift", "1", "--invariance-images", "4"]) == 0
    assert (
        "| c1 (Conv2D 5x5 stride 2, same, tanh, BatchNormalization) | 2 |"
        in capsys.readouterr().out
    )
    for bad in (tmp_path / "nowhere", write_untrained_run(tmp_path / "s", SERIES, "series")):
        assert main(["shift", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("cnnlab: error:") and err.count("\n") == 1

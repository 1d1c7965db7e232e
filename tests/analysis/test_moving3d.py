"""Clips: the 3-D CNN and its per-frame 2-D baseline, their structure, and explain on a run."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_mnist

from cnnlab.analysis.receptive import receptive_fields
from cnnlab.cli.main import main
from cnnlab.data import moving_mnist
from cnnlab.engine.numpy_engine import NumpyModel
from cnnlab.models import build_module, count_params, parse_compact
from cnnlab.models.registry import resolve_for

from .test_explain_series import random_model


def _conv(desc: object, name: str) -> int:
    return [layer.name for layer in desc.layers].index(name)  # type: ignore[attr-defined]


@pytest.mark.parametrize("shape", [(8, 40, 40, 1), (4, 20, 24, 3), (2, 8, 8, 1)])
@pytest.mark.parametrize("name", ["moving3d", "perframe2d"])
def test_clip_templates_build_for_the_data(name: str, shape: tuple[int, ...]) -> None:
    desc = resolve_for(name, shape, 3)
    assert desc.input_shape == shape and desc.output_shape == (3,)
    build_module(desc)


def test_baseline_is_of_similar_size() -> None:
    p3 = count_params(build_module(resolve_for("moving3d", (8, 40, 40, 1), 2)))
    p2 = count_params(build_module(resolve_for("perframe2d", (8, 40, 40, 1), 2)))
    assert abs(p3 - p2) / p3 < 0.05


def test_receptive_field_in_time() -> None:
    base = resolve_for("perframe2d", (8, 40, 40, 1), 2)
    net = resolve_for("moving3d", (8, 40, 40, 1), 2)
    fb, fn = receptive_fields(base), receptive_fields(net)
    for name in ("conv1", "conv2", "conv3"):  # each unit of the baseline sees one frame
        assert fb[_conv(base, name)].size[0] == 1
    assert fn[_conv(net, "conv3")].size[0] == 7  # three 3-frame kernels: 1 + 3 * 2
    assert fb[_conv(base, "conv3")].size[1:] == fn[_conv(net, "conv3")].size[1:]


def test_baseline_is_a_per_frame_2d_cnn_averaged_over_frames() -> None:
    base = random_model(resolve_for("perframe2d", (5, 16, 16, 1), 2), seed=3)
    frame = parse_compact(
        "Input(16,16,1) Conv2D(16,3,same,relu,name=conv1) MaxPooling2D(2,name=pool1) "
        "Conv2D(24,3,same,relu,name=conv2) MaxPooling2D(2,name=pool2) "
        "Conv2D(32,3,same,relu,name=conv3) GlobalAveragePooling2D(name=gap) "
        "Dense(2,name=dense)",
        "frame2d",
    )
    weights = {
        name: {k: (v[0] if k == "kernel" and name.startswith("conv") else v) for k, v in w.items()}
        for name, w in base.weights.items()
    }  # a (1, 3, 3, Cin, Cout) kernel is a (3, 3, Cin, Cout) 2-D kernel
    per_frame = NumpyModel(frame, weights, "float64")
    clip = np.random.default_rng(4).random((5, 16, 16, 1))
    averaged = per_frame.logits(clip).mean(axis=0)  # the 5 frames as a batch of images
    np.testing.assert_allclose(base.logits(clip[None])[0], averaged, atol=1e-10)


@pytest.fixture
def tiny_clips(monkeypatch: pytest.MonkeyPatch) -> None:
    """moving-mnist from synthetic digits, 64/32/32 clips: offline and seconds."""
    import cnnlab.data as data

    monkeypatch.setattr(data, "load_mnist", lambda *a, **k: synthetic_mnist())
    small = partial(moving_mnist.load_moving_mnist, n_train=64, n_val=32, n_test=32)
    monkeypatch.setattr(moving_mnist, "load_moving_mnist", small)


def test_train_and_explain_a_3d_run(tiny_clips: None, tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = ["train", "--model", "moving3d", "--data", "moving-mnist", "--epochs", "1"]
    assert main([*argv, "--out", str(run), "--quiet"]) == 0
    out = tmp_path / "explain"
    assert main(["explain", str(run), "--index", "3", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [
        "maps_conv1.png",
        "maps_conv2.png",
        "maps_conv3.png",
        "maps_pool1.png",
        "maps_pool2.png",
        "overview.png",
    ]

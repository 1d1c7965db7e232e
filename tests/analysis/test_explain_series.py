"""``cnnlab explain`` on 1-D runs: the CAM identity, and the figures through the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from train.test_timeseries_train import shared_ucr

from cnnlab.analysis.explain_series import class_activation_map, explain_series, has_cam
from cnnlab.cli.main import main
from cnnlab.engine.numpy_engine import NumpyModel, weight_shapes
from cnnlab.errors import CnnlabError
from cnnlab.models import ModelDescription, parse_compact
from cnnlab.models.registry import resolve_for


def random_model(desc: ModelDescription, seed: int = 0) -> NumpyModel:
    """``desc`` with seeded random weights (positive variances), computing in float64."""
    rng = np.random.default_rng(seed)
    weights = {}
    for info in desc.info:
        arrays = {k: rng.normal(0, 0.3, size=s) for k, s in weight_shapes(info).items()}
        if "moving_variance" in arrays:
            arrays["moving_variance"] = rng.uniform(0.5, 2.0, size=arrays["moving_variance"].shape)
        if arrays:
            weights[info.layer.name] = arrays
    return NumpyModel(desc, weights, "float64")


@pytest.mark.parametrize(("shape", "classes"), [((40, 3), 4), ((17, 1), 2)])
def test_cam_is_the_logit_decomposition(shape: tuple[int, int], classes: int) -> None:
    model = random_model(resolve_for("fcn1d_small", shape, classes))
    x = np.random.default_rng(1).normal(size=shape)
    logits = model.logits(x[None])[0]
    for c in range(classes):
        cam = class_activation_map(model, x, c)
        assert cam.cam.shape == (shape[0],)
        # sum over t of CAM / T + bias = logit of the class, exactly for GAP + Dense
        assert cam.cam.sum() / shape[0] + cam.bias == pytest.approx(logits[c], abs=1e-10)
        assert cam.logit == pytest.approx(logits[c], abs=1e-10)
    assert class_activation_map(model, x).cls == int(logits.argmax())


def test_cam_needs_gap_then_dense() -> None:
    desc = parse_compact("Input(20,2) Conv1D(4,3,relu) Flatten Dense(3,softmax)", "flat")
    model = random_model(desc)
    assert not has_cam(model)
    with pytest.raises(CnnlabError, match="GlobalAveragePooling1D"):
        class_activation_map(model, np.zeros((20, 2)))


def test_explain_series_writes_figures(tmp_path: Path) -> None:
    model = random_model(resolve_for("fcn1d_small", (30, 2), 3))
    x = np.random.default_rng(2).normal(size=(30, 2))
    paths = explain_series(model, x, tmp_path, "series #0", ["a", "b", "c"])
    assert [p.name for p in paths] == ["overview.png", "cam.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    with pytest.raises(CnnlabError, match="takes 30x2"):
        explain_series(model, x[:10], tmp_path, "short")


@pytest.mark.mnist
@pytest.mark.parametrize("model", ["fcn1d_small", "resnet1d"])
def test_explain_a_1d_run_through_the_cli(
    model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = shared_ucr()
    if src is None:
        pytest.skip("shared UCR data not found: set CNNLAB_DATA to a folder holding ucr/")
    shutil.copytree(src / "BasicMotions", tmp_path / "data" / "ucr" / "BasicMotions")
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "data"))
    run = tmp_path / "run"
    argv = ["train", "--model", model, "--data", "ucr:BasicMotions", "--epochs", "1"]
    assert main([*argv, "--out", str(run), "--quiet"]) == 0
    out = tmp_path / "explain"
    assert main(["explain", str(run), "--index", "5", "--out", str(out)]) == 0
    assert (out / "overview.png").is_file() and (out / "cam.png").is_file()
    assert (out / "cam.png").stat().st_size > 10_000  # a drawn map, not an empty figure
    assert main(["explain", str(run), "--index", "40"]) == 2  # 40 test series: 0..39
    assert main(["explain", str(run), "--image", str(out / "cam.png")]) == 2

"""Time series end to end: registry templates, the time-series recipe, ``train --data ucr:NAME``.

The CLI tests copy one shared UCR dataset into a temporary ``$CNNLAB_DATA/ucr/NAME/`` (any
archive dataset placed there works) and train for one epoch: seconds, offline.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.cli.main import main
from cnnlab.data.ucr import load_ucr
from cnnlab.errors import CnnlabError
from cnnlab.models import build_module, count_params, resolve
from cnnlab.models.registry import REGISTRY, TEMPLATES, resolve_for
from cnnlab.train.recipes import (
    TIME_SERIES,
    TIME_SERIES_HOLDOUT,
    recipe_for,
    series_batch,
    settings,
)
from cnnlab.train.records import load_best

REPO = Path(__file__).resolve().parents[2]


def shared_ucr() -> Path | None:
    """The shared UCR folder ($CNNLAB_DATA/ucr or ../shared/data/ucr), None if absent."""
    env = os.environ.get("CNNLAB_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (cand / "ucr" / "GunPoint" / "GunPoint_TRAIN.ts").is_file():
            return cand / "ucr"
    return None


@pytest.fixture
def ucr_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary CNNLAB_DATA holding a copy of the shared GunPoint in ucr/GunPoint/."""
    src = shared_ucr()
    if src is None:
        pytest.skip("shared UCR data not found: set CNNLAB_DATA to a folder holding ucr/")
    root = tmp_path / "data"
    shutil.copytree(src / "GunPoint", root / "ucr" / "GunPoint")
    monkeypatch.setenv("CNNLAB_DATA", str(root))
    return root


@pytest.mark.parametrize(
    ("shape", "classes"), [((150, 1), 2), ((29, 12), 9), ((100, 6), 4), ((7, 3), 3)]
)
@pytest.mark.parametrize("name", ["fcn1d", "fcn1d_small"])
def test_1d_templates_build_for_the_data(name: str, shape: tuple[int, int], classes: int) -> None:
    desc = resolve_for(name, shape, classes)
    assert desc.input_shape == shape and desc.output_shape == (classes,)
    assert [layer.class_name for layer in desc.layers][-2:] == ["GlobalAveragePooling1D", "Dense"]
    build_module(desc)  # the PyTorch module builds for every shape


def test_fcn1d_is_wang_et_al() -> None:
    desc = resolve_for("fcn1d", (150, 1), 2)
    convs = [layer for layer in desc.layers if layer.class_name == "Conv1D"]
    assert [(c.filters, c.kernel_size, c.padding) for c in convs] == [
        (128, (8,), "same"),
        (256, (5,), "same"),
        (128, (3,), "same"),
    ]
    names = [layer.class_name for layer in desc.layers]
    assert names.count("BatchNormalization") == 3 and names.count("ReLU") == 3
    # 1*128*8+128 + 128*256*5+256 + 256*128*3+128 + BN 2*(128+256+128) + 128*2+2
    assert count_params(build_module(desc)) == 264962


def test_templates_have_defaults_and_fixed_networks_stay_fixed() -> None:
    assert set(TEMPLATES) <= set(REGISTRY)
    assert resolve("fcn1d").input_shape == (150, 1)  # resolve(spec) keeps working
    assert resolve_for("case1", (29, 12), 9).input_shape == (28, 28, 1)  # chapter cases fixed
    with pytest.raises(CnnlabError, match=r"\(T, C\)"):
        resolve_for("fcn1d", (28, 28, 1), 10)
    with pytest.raises(CnnlabError, match="at least 2 classes"):
        resolve_for("moving3d", (8, 40, 40, 1), 1)


def test_time_series_recipe_is_written_down() -> None:
    assert recipe_for("ucr:Anything") is TIME_SERIES
    assert set(TIME_SERIES.overrides) >= {"epochs", "patience", "batch_size"}
    assert "cross-validation within TRAIN" in TIME_SERIES.reason
    assert settings("ucr:X", epochs=3)["epochs"] == 3  # a flag wins over the recipe
    assert TIME_SERIES_HOLDOUT.overrides["val_fraction"] == 0.25  # the earlier recipe, kept


@pytest.mark.mnist
def test_train_any_archive_dataset_through_the_cli(ucr_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["train", "--model", "fcn1d_small", "--data", "ucr:GunPoint", "--epochs", "1"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["data"] == "ucr:GunPoint" and config["model"] == "fcn1d_small"
    assert config["batch_size"] == 5  # the recipe: min(50 / 10, 16)
    assert config["val_fraction"] == 0.0  # no held-out split: all 50 series train
    assert main(["evaluate", str(out)]) == 0  # the run's dataset, read from config.json


@pytest.mark.mnist
def test_compare_builds_templates_for_the_data(ucr_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    argv = ["compare", "--models", "fcn1d_small", "--data", "ucr:GunPoint", "--epochs", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    assert (out / "compare.md").is_file()
    assert json.loads((out / "fcn1d_small" / "metrics.json").read_text())["test_accuracy"] >= 0


def made_ts(path: Path, n: int, seed: int) -> None:
    """A made two-class .ts file: noisy rising or falling ramps of 16 steps."""
    rng = np.random.default_rng(seed)
    lines = ["@problemName Made", "@timeStamps false", "@univariate true", "@equalLength true",
             "@seriesLength 16", "@classLabel true up down", "@data"]  # fmt: skip
    for i in range(n):
        label = ("up", "down")[i % 2]
        ramp = np.linspace(-1, 1, 16) * (1 if label == "up" else -1)
        values = ramp + rng.normal(0, 0.5, 16)
        lines.append(",".join(f"{v:.4f}" for v in values) + f":{label}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def made_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$CNNLAB_DATA/ucr/Made/: 23 training series (batch min(2.3, 16) = 2), 10 test."""
    folder = tmp_path / "data" / "ucr" / "Made"
    folder.mkdir(parents=True)
    made_ts(folder / "Made_TRAIN.ts", 23, 0)
    made_ts(folder / "Made_TEST.ts", 10, 1)
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "data"))
    return folder


def test_series_batch_is_a_tenth_of_train_at_most_16() -> None:
    assert [series_batch(n) for n in (1, 9, 10, 23, 36, 50, 159, 160, 1000)] == [
        1, 1, 1, 2, 3, 5, 15, 16, 16,
    ]  # fmt: skip
    assert settings("ucr:X", n_train=36)["batch_size"] == 3  # ArrowHead's 36 series
    assert settings("ucr:X", n_train=36, batch_size=8)["batch_size"] == 8  # the flag wins
    assert "batch_size" not in settings("mnist", n_train=36)  # the chapter's recipe unchanged


@pytest.mark.mnist
def test_recipe_trains_on_all_of_train_and_keeps_the_lowest_train_loss(
    made_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    argv = ["train", "--model", "fcn1d_small", "--data", "ucr:Made", "--epochs", "6"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    run = json.loads((out / "config.json").read_text())
    config, record = run["config"], json.dumps(run)
    assert config["batch_size"] == 2 and config["val_fraction"] == 0.0
    assert config["monitor"] == "val_loss" and config["patience"] >= config["epochs"]
    assert '"held_out": false' in record and '"train": 23' in record and '"val": 23' in record
    history = list(csv.DictReader((out / "history.csv").open()))
    losses = [float(row["val_loss"]) for row in history]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_epoch"] == 1 + int(np.argmin(losses)) and len(losses) == 6
    assert not metrics["stopped_early"]
    # the kept model's loss on all 23 TRAIN series is the lowest of the epochs'
    model, _ = load_best(out)
    data = load_ucr("Made", made_data.parents[1], allow_download=False)
    with torch.no_grad():
        logits = model(torch.from_numpy(data.x_train).movedim(-1, 1))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(data.y_train))
    assert float(loss) == pytest.approx(min(losses), rel=1e-4)


@pytest.mark.mnist
def test_holdout_split_is_still_a_flag(made_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["train", "--model", "fcn1d_small", "--data", "ucr:Made", "--epochs", "1"]
    assert main([*argv, "--val-split", "0.25", "--out", str(out), "--quiet"]) == 0
    record = (out / "config.json").read_text()
    assert '"train": 17' in record and '"val": 6' in record  # ceil(0.25 * 23) held out
    with pytest.raises(SystemExit):
        main([*argv, "--val-split", "1", "--out", str(tmp_path / "bad"), "--quiet"])

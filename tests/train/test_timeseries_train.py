"""Time series end to end: registry templates, the time-series recipe, ``train --data ucr:NAME``.

The CLI tests copy one shared UCR dataset into a temporary ``$CNNLAB_DATA/ucr/NAME/`` (any
archive dataset placed there works) and train for one epoch: seconds, offline.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cnnlab.cli.main import main
from cnnlab.errors import CnnlabError
from cnnlab.models import build_module, count_params, resolve
from cnnlab.models.registry import REGISTRY, TEMPLATES, resolve_for
from cnnlab.train.recipes import TIME_SERIES, recipe_for, settings

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
    assert "validation" in TIME_SERIES.reason
    assert settings("ucr:X", epochs=3)["epochs"] == 3  # a flag wins over the recipe


@pytest.mark.mnist
def test_train_any_archive_dataset_through_the_cli(ucr_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["train", "--model", "fcn1d_small", "--data", "ucr:GunPoint", "--epochs", "1"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["data"] == "ucr:GunPoint" and config["model"] == "fcn1d_small"
    assert config["batch_size"] == TIME_SERIES.overrides["batch_size"]  # the default recipe
    assert main(["evaluate", str(out)]) == 0  # the run's dataset, read from config.json


@pytest.mark.mnist
def test_compare_builds_templates_for_the_data(ucr_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    argv = ["compare", "--models", "fcn1d_small", "--data", "ucr:GunPoint", "--epochs", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    assert (out / "compare.md").is_file()
    assert json.loads((out / "fcn1d_small" / "metrics.json").read_text())["test_accuracy"] >= 0

"""Runs trained on a user's data, whose data then moved, changed or no longer fits: every
command that needs the data answers in one line, exit 2, naming the run's data.

Beside ``test_damaged_runs.py`` (damaged files of a run folder), this table damages what a
run points at: a folder of images moved away, a class folder added or removed, an ``.npz``
replaced by arrays of another shape, a run trained on arrays in Python (not kept), and the
``data`` record of config.json edited by hand.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli.main import main
from cnnlab.data import DataOptions, load_dataset
from cnnlab.train.keras_like import fit as keras_fit

LINE = "Input(12,12,1) Conv2D(4,3,relu) MaxPooling2D Flatten Dense(3,softmax)"


def _folder(root: Path, classes: tuple[str, ...] = ("ant", "bee", "cat")) -> Path:
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 60, (12, 12), dtype=np.uint8)
            pixels[2 + k * 3 : 5 + k * 3, 2:10] = 220  # a bar whose row tells the class
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def _train(args: list[str]) -> None:
    assert main(["train", *args, "--epochs", "1", "--quiet"]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run on a folder, one on an .npz of series, one on arrays given to fit."""
    base = tmp_path_factory.mktemp("data-runs")
    folder = _folder(base / "photos")
    out = {"folder": base / "folder-run", "npz": base / "npz-run", "arrays": base / "arrays-run"}
    _train(["--model", LINE, "--data", f"folder:{folder}", "--out", str(out["folder"])])
    rng = np.random.default_rng(1)
    series = rng.normal(size=(40, 16, 2)).astype(np.float32)
    labels = np.array(["low", "high"] * 20)
    np.savez(base / "series.npz", x_train=series, y_train=labels)
    npz = f"npz:{base / 'series.npz'}"
    _train(["--model", "fcn1d_small", "--data", npz, "--out", str(out["npz"]), "--batch-size", "8"])
    dataset = load_dataset(f"folder:{folder}", DataOptions(image_shape=(12, 12, 1)))
    s = dataset.splits
    keras_fit(LINE, s.x_train, s.y_train, epochs=1, out_dir=out["arrays"], verbose=0)
    return out


Damage = Callable[[Path, Path], None]  # (run folder copy, its data's copy)


def _moved(run: Path, data: Path) -> None:
    shutil.rmtree(data) if data.is_dir() else data.unlink()


def _class_added(run: Path, data: Path) -> None:
    shutil.copytree(data / "cat", data / "dog")


def _class_removed(run: Path, data: Path) -> None:
    shutil.rmtree(data / "cat")


def _npz_reshaped(run: Path, data: Path) -> None:
    np.savez(
        data, x_train=np.zeros((40, 20, 2), np.float32), y_train=np.array(["low", "high"] * 20)
    )


def _set(d: dict[str, Any], key: str, value: Any) -> None:
    d[key] = value


def _record(edit: Callable[[dict[str, Any]], Any]) -> Damage:
    def damage(run: Path, data: Path) -> None:
        path = run / "config.json"
        config = json.loads(path.read_text())
        edit(config)
        path.write_text(json.dumps(config))

    return damage


DAMAGES: dict[str, tuple[str, Damage, str]] = {
    # name: (which run, damage, what the one line must say)
    "folder moved away": ("folder", _moved, "cannot be rebuilt"),
    "class folder added": ("folder", _class_added, "has changed: classes [ant, bee, cat, dog]"),
    "class folder removed": ("folder", _class_removed, "has changed: classes [ant, bee]"),
    "npz reshaped": ("npz", _npz_reshaped, "16x2 inputs, the data"),
    "npz moved away": ("npz", _moved, "cannot be rebuilt"),
    "arrays not kept": ("arrays", lambda r, d: None, "trained on arrays given to cnnlab.train.fit"),
    "classes a string": ("folder", _record(lambda c: _set(c["data"], "classes", 1)), "classes"),
    "no pixels flag": ("folder", _record(lambda c: c["data"].pop("pixels")), "data.pixels"),
    "unknown kind": ("folder", _record(lambda c: _set(c["data"], "kind", "audio")), "data.kind"),
    "odd input scale": (
        "folder",
        _record(lambda c: _set(c["resolved"]["input_scale"], "divide_by", 7)),
        "input_scale.divide_by",
    ),
}  # fmt: skip

COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "evaluate": lambda run, tmp: ["evaluate", str(run)],
    "train --resume": lambda run, tmp: ["train", "--resume", str(run), "--quiet"],
    "explain": lambda run, tmp: ["explain", str(run), "--index", "0", "--out", str(tmp / "ex")],
    "verify-numpy": lambda run, tmp: ["verify-numpy", str(run)],
    "shift": lambda run, tmp: ["shift", str(run), "--shift-images", "5"],
    "report": lambda run, tmp: ["report", str(run), "--no-verify", "--out", str(tmp / "r.html")],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("name", list(DAMAGES))
def test_data_gone_or_changed_gets_one_line(
    name: str,
    command: str,
    runs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    which, damage, message = DAMAGES[name]
    if command == "train --resume" and which == "arrays":
        pytest.skip("fit on arrays finishes its run: there is nothing to resume")
    if command == "shift" and which == "npz":
        pytest.skip("shift is for networks of images: a series run is refused before its data")
    source = runs[which]
    run = tmp_path / "run"
    shutil.copytree(source, run)
    config = json.loads((run / "config.json").read_text())
    data = Path(
        config["data"]["preprocessing"].get("root")
        or config["data"]["preprocessing"].get("path")
        or tmp_path / "none"
    )
    copy = tmp_path / "data" / data.name
    if data.exists():  # damage a copy of the data, pointed at by the run's copy
        copy.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if data.is_dir() else shutil.copy2)(data, copy)
        key = "root" if data.is_dir() else "path"
        config["data"]["preprocessing"][key] = str(copy)
        config["data"]["spec"] = f"{config['data']['spec'].partition(':')[0]}:{copy}"
        (run / "config.json").write_text(json.dumps(config))
    damage(run, copy)
    if command == "train --resume":  # an unfinished run: its last epoch not yet reached
        cfg = json.loads((run / "config.json").read_text())
        cfg["config"]["epochs"] = 3
        (run / "config.json").write_text(json.dumps(cfg))
    capsys.readouterr()
    code = main(COMMANDS[command](run, tmp_path))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("cnnlab: error: "), err
    assert message in lines[0], err


def test_the_undamaged_runs_evaluate(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The table's failures are the damages' doing."""
    for which in ("folder", "npz"):
        assert main(["evaluate", str(runs[which])]) == 0, capsys.readouterr().err

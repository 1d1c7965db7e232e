"""Hand-damaged run folders: every command that reads one answers in one line, exit 2.

A table of damages (what a user's editor or a half-copied folder does to a run) times the
commands that read the damaged file. Each cell copies one small real run folder (trained
once per module, 1 epoch on the synthetic data), damages one file and runs the command
in-process: it must return 2 and print exactly one stderr line, ``cnnlab: error: ...``,
that names the damaged file. An uncaught exception (a traceback) fails the cell.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cnnlab.cli.main import main
from cnnlab.data import Splits
from cnnlab.models import build_module, get

Damage = Callable[[Path], None]
EVERY = "every"  # the damage concerns every command that reads a run folder


# ------------------------------------------------------------------ damages


def _ckpt(name: str, edit: Callable[[dict[str, Any]], Any]) -> Damage:
    def damage(run: Path) -> None:
        ckpt = torch.load(run / name, weights_only=True)
        result = edit(ckpt)
        torch.save(ckpt if result is None else result, run / name)

    return damage


def _drop(*keys: str) -> Callable[[dict[str, Any]], None]:
    def edit(ckpt: dict[str, Any]) -> None:
        for key in keys:
            del ckpt[key]

    return edit


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(ckpt: dict[str, Any]) -> None:
        ckpt[key] = value

    return edit


def _other_weights(ckpt: dict[str, Any]) -> None:
    torch.manual_seed(0)
    ckpt["model"] = build_module(get("case2")).state_dict()


def _other_network(ckpt: dict[str, Any]) -> None:
    """A whole, consistent checkpoint of another network: a half-copied folder."""
    torch.manual_seed(0)
    ckpt["model"] = build_module(get("case2")).state_dict()
    ckpt["description"] = get("case2").to_dict()
    ckpt["name"] = "case2"


def _nan_weights(ckpt: dict[str, Any]) -> None:
    key = next(iter(ckpt["model"]))
    ckpt["model"][key] = torch.full_like(ckpt["model"][key], float("nan"))


def _mid_epoch(**changes: Any) -> Callable[[dict[str, Any]], None]:
    """last.pt as a mid-epoch checkpoint of the run (``--checkpoint-every``) would hold it:
    a position 2 steps into epoch 2 of the 180 training images in batches of 32, written by
    one process; ``changes``: fields of the position, ``ranks`` a count of processes."""

    def edit(ckpt: dict[str, Any]) -> None:
        rank = {"loss": 4.6, "hits": 7, "torch": torch.get_rng_state()}
        position = {
            "epoch": ckpt["epoch"] + 1,
            "step": 2,
            "order_rng": torch.Generator().manual_seed(3).get_state(),
            "batch_size": 32,
            "n_train": 180,
            "seconds": 0.5,
            "ranks": [rank],
        }
        position |= {k: v for k, v in changes.items() if k != "ranks"}
        position["ranks"] = [dict(rank) for _ in range(changes.get("ranks", 1))]
        ckpt["position"] = position
        ckpt["finished"] = False

    return edit


def _mid_epoch_truncated(run: Path) -> None:
    _ckpt("last.pt", _mid_epoch())(run)
    path = run / "last.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _bytes(name: str, make: Callable[[bytes], bytes]) -> Damage:
    def damage(run: Path) -> None:
        path = run / name
        path.write_bytes(make(path.read_bytes()))

    return damage


class _Exploit:
    """Unpickling this would run a shell command: it must be refused, never executed."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {Path.cwd() / 'PWNED'}",))


def _malicious(name: str) -> Damage:
    def damage(run: Path) -> None:
        torch.save({"format": "cnnlab-checkpoint-2", "model": _Exploit()}, run / name)

    return damage


def _json(name: str, edit: Callable[[Any], Any]) -> Damage:
    def damage(run: Path) -> None:
        path = run / name
        data = json.loads(path.read_text())
        result = edit(data)
        path.write_text(json.dumps(data if result is None else result))

    return damage


def _text(name: str, text: str) -> Damage:
    def damage(run: Path) -> None:
        (run / name).write_text(text)

    return damage


def _config(key: str, value: Any) -> Damage:
    return _json("config.json", lambda d: d["config"].__setitem__(key, value))


def _layer(index: int, key: str, value: Any) -> Callable[[Any], None]:
    return lambda d: d["layers"][index].__setitem__(key, value)


def _old_run_case(case: Any) -> Callable[[Any], None]:
    """A run from before model descriptions (no ``model`` object) naming a missing case."""

    def edit(d: Any) -> None:
        del d["model"]
        d["config"].pop("model")
        d["config"]["case"] = case

    return edit


NESTED = "[" * 100_000 + "]" * 100_000

# (file, damage name, damage, commands that read the file)
DAMAGES: list[tuple[str, str, Damage]] = [
    ("best.pt", "no model", _ckpt("best.pt", _drop("model"))),
    ("best.pt", "no epoch", _ckpt("best.pt", _drop("epoch"))),
    ("best.pt", "no description", _ckpt("best.pt", _drop("description"))),
    ("best.pt", "no format", _ckpt("best.pt", _drop("format"))),
    ("best.pt", "model a list", _ckpt("best.pt", lambda c: c.__setitem__("model", [1, 2]))),
    ("best.pt", "epoch a string", _ckpt("best.pt", _set("epoch", "3"))),
    ("best.pt", "another network's weights", _ckpt("best.pt", _other_weights)),
    ("best.pt", "another network", _ckpt("best.pt", _other_network)),
    ("best.pt", "NaN weights", _ckpt("best.pt", _nan_weights)),
    ("best.pt", "bad description", _ckpt("best.pt", _set("description", {"layers": 3}))),
    ("best.pt", "a list", _ckpt("best.pt", lambda c: [c])),
    ("best.pt", "truncated", _bytes("best.pt", lambda b: b[: len(b) // 2])),
    ("best.pt", "garbage", _bytes("best.pt", lambda b: os.urandom(4096))),
    ("best.pt", "empty", _bytes("best.pt", lambda b: b"")),
    ("best.pt", "unsafe pickle", _malicious("best.pt")),
    ("last.pt", "no model", _ckpt("last.pt", _drop("model"))),
    ("last.pt", "no optimizer", _ckpt("last.pt", _drop("optimizer"))),
    ("last.pt", "no stopping state", _ckpt("last.pt", _drop("stopping"))),
    ("last.pt", "no rng state", _ckpt("last.pt", _drop("rng"))),
    ("last.pt", "stopping a list", _ckpt("last.pt", _set("stopping", [1]))),
    ("last.pt", "stopping unknown key", _ckpt("last.pt", _set("stopping", {"zzz": 1}))),
    ("last.pt", "history rows", _ckpt("last.pt", _set("history", [{"epoch": 1}]))),
    ("last.pt", "history a string", _ckpt("last.pt", _set("history", "x"))),
    ("last.pt", "best_val_loss a string", _ckpt("last.pt", _set("best_val_loss", "x"))),
    ("last.pt", "optimizer garbage", _ckpt("last.pt", _set("optimizer", {"state": 1}))),
    ("last.pt", "another network's weights", _ckpt("last.pt", _other_weights)),
    ("last.pt", "another network", _ckpt("last.pt", _other_network)),
    ("last.pt", "truncated", _bytes("last.pt", lambda b: b[: len(b) // 2])),
    ("last.pt", "unsafe pickle", _malicious("last.pt")),
    # mid-epoch checkpoints (--checkpoint-every): a kill while copying, another run's file
    ("last.pt", "mid-epoch, truncated", _mid_epoch_truncated),
    ("last.pt", "mid-epoch, another batch size", _ckpt("last.pt", _mid_epoch(batch_size=16))),
    ("last.pt", "mid-epoch, other data", _ckpt("last.pt", _mid_epoch(n_train=5000))),
    ("last.pt", "mid-epoch, another world size", _ckpt("last.pt", _mid_epoch(ranks=2))),
    ("last.pt", "mid-epoch, step past the epoch", _ckpt("last.pt", _mid_epoch(step=6))),
    ("last.pt", "mid-epoch, another epoch", _ckpt("last.pt", _mid_epoch(epoch=7))),
    ("last.pt", "mid-epoch, seconds a string", _ckpt("last.pt", _mid_epoch(seconds="x"))),
    ("last.pt", "mid-epoch, no ranks", _ckpt("last.pt", _mid_epoch(ranks=0))),
    ("config.json", "a list", _text("config.json", "[1, 2]")),
    ("config.json", "null", _text("config.json", "null")),
    ("config.json", "not JSON", _text("config.json", "{config: 1")),
    ("config.json", "deeply nested", _text("config.json", NESTED)),
    ("config.json", "no config", _json("config.json", lambda d: d.pop("config"))),
    ("config.json", "config null", _json("config.json", lambda d: d.__setitem__("config", None))),
    ("config.json", "string for a number", _config("epochs", "5")),
    ("config.json", "bool for a number", _config("epochs", True)),
    ("config.json", "negative epochs", _config("epochs", -1)),
    ("config.json", "seed out of range", _config("seed", 2**40)),
    ("config.json", "unknown key", _config("zzz", 1)),
    ("config.json", "unknown dataset", _config("data", "nosuch")),
    ("config.json", "unknown case", _json("config.json", _old_run_case("case9"))),
    ("config.json", "case a number", _json("config.json", _old_run_case(7))),
    ("config.json", "model a list", _json("config.json", lambda d: d.__setitem__("model", []))),
    (
        "config.json",
        "model unknown layer",
        _json("config.json", lambda d: _layer(0, "class_name", "Conv9D")(d["model"])),
    ),
    (
        "config.json",
        "another network",
        _json("config.json", lambda d: d.__setitem__("model", get("case2").to_dict())),
    ),
    ("model.json", "a list", _text("model.json", "[]")),
    ("model.json", "not JSON", _text("model.json", "{")),
    ("model.json", "deeply nested", _text("model.json", NESTED)),
    ("model.json", "unknown layer", _json("model.json", _layer(0, "class_name", "Conv9D"))),
    ("model.json", "wrong argument type", _json("model.json", _layer(0, "filters", "16"))),
    ("model.json", "impossible shape", _json("model.json", _layer(1, "pool_size", [100, 100]))),
    ("model.json", "unknown key", _json("model.json", lambda d: d.__setitem__("zzz", 1))),
    ("model.json", "another network", _text("model.json", json.dumps(get("case2").to_dict()))),
    ("metrics.json", "a list", _text("metrics.json", "[]")),
    ("metrics.json", "not JSON", _text("metrics.json", "{")),
    ("metrics.json", "no test_loss", _json("metrics.json", lambda d: d.pop("test_loss"))),
    ("metrics.json", "no test_accuracy", _json("metrics.json", lambda d: d.pop("test_accuracy"))),
    (
        "metrics.json",
        "string accuracy",
        _json("metrics.json", lambda d: d.__setitem__("test_accuracy", "0.9")),
    ),
    ("metrics.json", "NaN loss", _text("metrics.json", '{"test_accuracy": 0.5, "test_loss": NaN}')),
    ("history.csv", "garbage", _text("history.csv", "epoch,loss\n1,abc\n")),
]


# ------------------------------------------------------------------ commands

Argv = Callable[[Path, Path], list[str]]

COMMANDS: dict[str, Argv] = {
    "evaluate": lambda run, tmp: ["evaluate", str(run)],
    "report": lambda run, tmp: ["report", str(run), "--no-verify", "--out", str(tmp / "r.html")],
    "compare": lambda run, tmp: ["compare", str(run), "--out", str(tmp / "cmp")],
    "explain": lambda run, tmp: ["explain", str(run), "--index", "0", "--out", str(tmp / "ex")],
    "predict": lambda run, tmp: ["predict", str(run), str(tmp / "digit.png")],
    "export-numpy": lambda run, tmp: ["export-numpy", str(run), "--out", str(tmp / "m.npz")],
    "export-onnx": lambda run, tmp: ["export", str(run), "--onnx", str(tmp / "m.onnx")],
    "verify-numpy": lambda run, tmp: ["verify-numpy", str(run)],
    "shift": lambda run, tmp: ["shift", str(run), "--shift-images", "10"],
    "summary": lambda run, tmp: ["summary", "--model", str(run / "model.json")],
    "receptive": lambda run, tmp: ["receptive", "--model", str(run / "model.json")],
    "train --resume": lambda run, tmp: ["train", "--resume", str(run), "--quiet"],
    "serve": lambda run, tmp: ["serve", str(run), "--port", "0"],
}
LOAD_MODEL = ("evaluate", "report", "explain", "predict", "export-numpy", "export-onnx")
LOAD_MODEL += ("verify-numpy", "shift", "serve", "train --resume")
RUN_READERS = (*LOAD_MODEL, "compare")

READERS: dict[str, tuple[str, ...]] = {
    "best.pt": LOAD_MODEL,
    "last.pt": ("train --resume",),
    "config.json": RUN_READERS,
    "model.json": (*RUN_READERS, "summary", "receptive"),
    "metrics.json": ("evaluate", "report", "compare"),
    "history.csv": ("compare",),
}

# summary and receptive read model.json alone: another network's description is no damage there
ALONE = ("summary", "receptive")
CELLS = [
    pytest.param(fname, damage, command, id=f"{fname}:{name}:{command}")
    for fname, name, damage in DAMAGES
    for command in READERS[fname]
    if not (command in ALONE and name == "another network")
]


@pytest.fixture(scope="module")
def pristine_run(tmp_path_factory: pytest.TempPathFactory, tiny_splits: Splits) -> Path:
    """One finished case-1 run (1 epoch on the synthetic data), copied by every cell."""
    from cnnlab.train.loop import TrainConfig, fit

    run = tmp_path_factory.mktemp("pristine") / "run"
    run.mkdir()
    fit(TrainConfig(epochs=1), tiny_splits, run, progress=False, log=lambda _m: None)
    return run


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from cnnlab.data.preprocess import to_png

    image = np.zeros((28, 28), dtype=np.float32)
    image[6:22, 12:16] = 1.0
    return to_png(image)


def _no_listening(*_args: Any, **_kwargs: Any) -> None:
    raise AssertionError("serve reached the point of listening on a damaged run")


@pytest.mark.usefixtures("synthetic_data")
@pytest.mark.parametrize(("fname", "damage", "command"), CELLS)
def test_damaged_run_gets_one_line(
    fname: str,
    damage: Damage,
    command: str,
    pristine_run: Path,
    digit_png: bytes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cnnlab.serving.serve as serving

    monkeypatch.setattr(serving, "serve", _no_listening)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(pristine_run, run, copy_function=os.link)  # hard links: fast
    (run / fname).unlink()  # the damaged file alone is a real copy
    shutil.copy2(pristine_run / fname, run / fname)
    (tmp_path / "digit.png").write_bytes(digit_png)
    damage(run)
    capsys.readouterr()

    code = main(COMMANDS[command](run, tmp_path))

    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("cnnlab: error: "), err
    assert fname in lines[0], err
    assert "weights_only" not in err  # torch's advice to unpickle anything: never passed on
    assert not (tmp_path / "PWNED").exists()


def test_every_damage_meets_some_command() -> None:
    """The table is honest: every file named has readers, and the cells are counted."""
    assert {f for f, _, _ in DAMAGES} <= set(READERS)
    assert len(CELLS) > 300


@pytest.mark.usefixtures("synthetic_data")
def test_pristine_run_passes_the_cheap_commands(
    pristine_run: Path, digit_png: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The undamaged copy works, so the table's failures are the damages' doing."""
    run = tmp_path / "run"
    shutil.copytree(pristine_run, run)
    (tmp_path / "digit.png").write_bytes(digit_png)
    for command in ("predict", "export-numpy", "compare", "summary", "evaluate"):
        assert main(COMMANDS[command](run, tmp_path)) == 0, capsys.readouterr().err

"""Training: Keras' stopping rule, the run folder, reproducibility, resume, real MNIST."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab import fileio
from cnnlab.data import MNIST, Splits, prepare
from cnnlab.engine import native
from cnnlab.models import get
from cnnlab.train import checkpoint, runs
from cnnlab.train.loop import EarlyStopping, TrainConfig, fit

QUIET = {"progress": False, "log": lambda _msg: None}


def history_without_time(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "history.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


@pytest.mark.parametrize(
    ("values", "patience", "stop_epoch"),
    [
        ([0.5, 0.6, 0.6, 0.6], 2, 4),  # equal is no improvement
        ([0.5, 0.6, 0.55, 0.7, 0.6, 0.6, 0.6], 3, 7),
        ([0.5, 0.4, 0.3, 0.2], 5, None),
        ([0.5, 0.4, 0.3], 0, 2),  # Keras never stops after the first epoch
        ([0.9, 0.8, 0.95, 0.9, 0.9, 0.9, 0.9, 0.9], 5, 8),
    ],
)
def test_early_stopping_follows_keras(
    values: list[float], patience: int, stop_epoch: int | None
) -> None:
    es = EarlyStopping(patience)
    stopped = None
    for epoch, v in enumerate(values, start=1):
        if es.step(epoch, v):
            stopped = epoch
            break
    assert stopped == stop_epoch
    assert es.best == max(values[: stopped or len(values)])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be in"),
        ({"patience": -1}, "patience must be in"),
        ({"seed": 2**32}, "seed must be in"),
        ({"seed": -1}, "seed must be in"),
        ({"epochs": "3"}, "epochs must be of type int"),
        ({"lr": float("nan")}, "lr must be a positive number"),
        ({"native": 1}, "native must be of type bool"),
        ({"device": "tpu"}, "device must be one of"),
        ({"engine": "turbo"}, "engine must be one of"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"model": ""}, "model must name a network"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)  # type: ignore[arg-type]


def test_config_from_saved_dict() -> None:
    assert TrainConfig.from_dict({"case": "case2", "epochs": 3}).model == "case2"  # old runs
    assert TrainConfig.from_dict({"lr": 1}).lr == 1.0  # JSON may write 1 for 1.0
    with pytest.raises(ValueError, match="unknown field 'epoch'"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="must be an object"):
        TrainConfig.from_dict(["case1"])


def test_fit_writes_a_complete_run(tiny_run: dict[str, Path]) -> None:
    for case, run_dir in tiny_run.items():
        names = {p.name for p in run_dir.iterdir()}
        assert {
            "config.json",
            "model.json",
            "history.csv",
            "best.pt",
            "last.pt",
            "curves.png",
            "metrics.json",
        } <= names
        assert not [n for n in names if n.endswith(".tmp")]
        metrics = fileio.read_json(run_dir / "metrics.json")
        history = runs.read_history(run_dir / "history.csv")
        assert metrics["model"] == case and metrics["epochs_run"] == len(history) == 2
        best = min(history, key=lambda r: r["val_loss"])
        assert metrics["best_epoch"] == best["epoch"]
        assert metrics["best_val_loss"] == pytest.approx(best["val_loss"])
        assert 0 <= metrics["test_accuracy"] <= 1 and metrics["test_loss"] > 0
        config = fileio.read_json(run_dir / "config.json")
        assert config["config"]["model"] == case
        # the description it was trained with, stored twice: config.json and model.json
        assert config["model"] == fileio.read_json(run_dir / "model.json") == get(case).to_dict()
        best_ckpt = checkpoint.load_checkpoint(run_dir / "best.pt")
        assert best_ckpt["description"] == get(case).to_dict() and best_ckpt["name"] == case
        # every case's blocks have C++ kernels: they run wherever they build (a C++ compiler)
        assert config["resolved"]["native_kernels"] == native.load()
        where = "cnnlab" if native.load() else "pytorch"
        layers = [layer.name for layer in get(case).layers]
        assert config["resolved"]["blocks"] == dict.fromkeys(layers, where)


def test_training_learns_synthetic_digits(tiny_splits: Splits, tmp_path: Path) -> None:
    m = fit(TrainConfig(model="case1", epochs=6, batch_size=16), tiny_splits, tmp_path, **QUIET)
    assert m["test_accuracy"] >= 0.6  # ten classes: chance is 0.1


def test_same_seed_same_history(tiny_splits: Splits, tmp_path: Path) -> None:
    cfg = TrainConfig(model="case3", epochs=3, seed=7)
    for name, config in (
        ("a", cfg),
        ("b", cfg),
        ("c", TrainConfig(model="case3", epochs=3, seed=8)),
    ):
        (tmp_path / name).mkdir()
        fit(config, tiny_splits, tmp_path / name, **QUIET)
    assert history_without_time(tmp_path / "a") == history_without_time(tmp_path / "b")
    assert history_without_time(tmp_path / "a") != history_without_time(tmp_path / "c")


def test_early_stopping_ends_the_run(tiny_splits: Splits, tmp_path: Path) -> None:
    m = fit(
        TrainConfig(model="case2", epochs=50, patience=1, lr=1e-6), tiny_splits, tmp_path, **QUIET
    )
    history = runs.read_history(tmp_path / "history.csv")
    assert m["stopped_early"] and m["epochs_run"] == len(history) < 50


def test_resume_after_a_kill_matches_the_uninterrupted_run(
    tiny_splits: Splits, tmp_path: Path
) -> None:
    """A separate process trains and dies hard after epoch 2; resuming finishes the run."""
    cfg = TrainConfig(model="case1", epochs=4, batch_size=16, seed=5)
    full, killed = tmp_path / "full", tmp_path / "killed"
    full.mkdir()
    killed.mkdir()
    fit(cfg, tiny_splits, full, **QUIET)
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from conftest import synthetic_mnist
        from cnnlab.data import prepare
        from cnnlab.train.loop import TrainConfig, fit
        from pathlib import Path
        splits = prepare(synthetic_mnist(), seed=42)
        def die(epoch, row):
            if epoch == 2:
                os._exit(3)
        fit(TrainConfig(model="case1", epochs=4, batch_size=16, seed=5), splits,
            Path({str(killed)!r}), progress=False, on_epoch_end=die, log=lambda m: None)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert len(runs.read_history(killed / "history.csv")) == 2
    assert not (killed / "metrics.json").exists()
    fit(cfg, tiny_splits, killed, resume=True, **QUIET)
    assert history_without_time(killed) == history_without_time(full)
    a, b = (
        checkpoint.load_checkpoint(full / "last.pt"),
        checkpoint.load_checkpoint(killed / "last.pt"),
    )
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    ma, mb = fileio.read_json(full / "metrics.json"), fileio.read_json(killed / "metrics.json")
    assert ma["test_accuracy"] == mb["test_accuracy"] and ma["best_epoch"] == mb["best_epoch"]


@pytest.mark.mnist
def test_one_epoch_of_case1_on_real_mnist(mnist_data_dir: Path, tmp_path: Path) -> None:
    from cnnlab.data import load_mnist

    splits = prepare(load_mnist(mnist_data_dir, allow_download=False), seed=42)
    m = fit(TrainConfig(model="case1", epochs=1), splits, tmp_path, **QUIET)
    assert m["test_accuracy"] >= 0.97
    assert m["params"] == 61_002


def test_uint8_images_train_exactly_as_scaled_ones(tiny_mnist: MNIST, tmp_path: Path) -> None:
    """prepare(scaled=False) keeps uint8 (a quarter of the memory) and changes nothing."""
    cfg = TrainConfig(model="case1", epochs=2, batch_size=16)
    for name, scaled in (("float", True), ("uint8", False)):
        splits = prepare(tiny_mnist, seed=42, scaled=scaled)
        assert splits.x_train.dtype == (np.float32 if scaled else np.uint8)
        (tmp_path / name).mkdir()
        fit(cfg, splits, tmp_path / name, **QUIET)
    assert history_without_time(tmp_path / "float") == history_without_time(tmp_path / "uint8")

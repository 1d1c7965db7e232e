"""The scripts behind ``make bench`` still run against today's API.

``make bench`` is not part of ``make test`` (it needs Keras' own environment and minutes),
so a renamed function or config field would break it unseen: each script must at least
import and print its usage, and the script that trains cnnlab's rows must train.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
# keras_chapter.py runs in benchmarks/.venv-keras (TensorFlow), never in cnnlab's environment
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name != "keras_chapter.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_prints_its_usage(script: str) -> None:
    run = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        cwd=BENCH, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "usage" in run.stdout.lower()


@pytest.mark.mnist
def test_cnnlab_train_script_trains(tmp_path: Path, mnist_data_dir: Path) -> None:
    out = tmp_path / "run"
    run = subprocess.run(
        [sys.executable, str(BENCH / "cnnlab_train.py"), str(out), "--epochs", "1",
         "--case", "3", "--threads", "1"],
        cwd=BENCH, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "CNNLAB_DATA": str(mnist_data_dir)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and metrics["test_accuracy"] > 0.5

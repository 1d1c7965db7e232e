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


def test_gpu_check_parses_and_says_so_without_a_gpu() -> None:
    """benchmarks/gpu_check.sh: valid bash; on a machine without CUDA, one line and exit 0."""
    script = BENCH / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    if _cuda():
        pytest.skip("a CUDA device is present: the script would run the GPU checks")
    run = subprocess.run(
        ["bash", str(script), sys.executable], capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines() == [
        "gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing checked"
    ]


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def test_bench_blocks_measures_a_point(tmp_path: Path) -> None:
    """One block, one size: the kernels' step, the mixed step and PyTorch's, and the ratio."""
    from cnnlab.engine import native

    if not native.load():
        pytest.skip("the C++ kernels do not build here")
    run = subprocess.run(
        [sys.executable, str(BENCH / "bench_blocks.py"), "--kinds", "conv_pool_relu",
         "--sizes", "8", "--channels", "16", "--budget", "0.01", "--out", str(tmp_path)],
        cwd=BENCH, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    (row,) = json.loads((tmp_path / "bench_blocks.json").read_text())["rows"]
    assert {"kernels_ms", "mixed_ms", "pytorch_ms"} <= set(row)
    assert row["kernels_ratio"] == pytest.approx(row["kernels_ms"] / row["pytorch_ms"])

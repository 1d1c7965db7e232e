"""The command line: bad input gives one clear line and a non-zero exit, and loses nothing."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab import cli, data


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cnnlab.cli", *args], capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--case", "4"], "argument --case: invalid choice: '4'"),
        (["train", "--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
        (["train", "--batch-size", "many"], "expected a whole number, got 'many'"),
        (["train", "--device", "tpu"], "argument --device: invalid choice"),
        (["summary"], "one of the arguments --case --model is required"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_flags_give_one_line(args: list[str], message: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_summary_command() -> None:
    proc = run_cli("summary", "--case", "3")
    assert proc.returncode == 0 and "Total params: 10,090" in proc.stdout
    assert "every layer in cnnlab's C++ kernels" in proc.stdout  # where the step runs
    proc = run_cli("summary", "--model", "moving3d")
    assert proc.returncode == 0 and "PyTorch operations (no C++ kernels" in proc.stdout
    mixed = "Input(12,12,1) Conv2D(4,3,relu) MaxPooling2D(2) Activation(softmax) Flatten Dense(3)"
    proc = run_cli("summary", "--model", mixed)
    assert "activation, flatten, dense as PyTorch operations" in proc.stdout


def test_missing_data_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def offline(url: str, dest: Path) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(data.mnist, "_fetch", offline)
    code = cli.main(
        ["train", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("cnnlab: error: could not download")
    assert err.count("\n") == 1
    assert not (tmp_path / "r" / "config.json").exists()


def test_corrupt_data_is_refused(tmp_path: Path, mnist_data_dir: Path) -> None:
    shutil.copytree(mnist_data_dir / "mnist", tmp_path / "mnist")
    bad = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(gzip.decompress(bad.read_bytes())[:-1] + b"\x09"))
    proc = run_cli("train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "train-labels-idx1-ubyte.gz failed verification" in proc.stderr
    proc = run_cli("data", "verify", "--data-dir", str(tmp_path))
    assert proc.returncode == 1 and "FAILED" in proc.stdout


@pytest.mark.usefixtures("synthetic_data")
def test_train_evaluate_compare_and_no_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert cli.main(["train", "--case", "2", "--epochs", "2", "--out", str(run), "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    # A second train into the same folder must refuse and change nothing.
    code = cli.main(["train", "--case", "1", "--epochs", "1", "--out", str(run), "--quiet"])
    assert code == 2 and "already holds a run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before

    assert cli.main(["evaluate", str(run)]) == 0
    assert (run / "confusion.png").stat().st_size > 0
    assert "test_accuracy" in capsys.readouterr().out

    out = tmp_path / "cmp"
    assert cli.main(["compare", str(run), str(run), "--out", str(out)]) == 0
    table = (out / "compare.md").read_text()
    assert table.count("| case2 |") == 2 and "3,210" in table
    assert (out / "compare.png").stat().st_size > 0


@pytest.mark.usefixtures("synthetic_data")
def test_resume_flag_continues_a_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli.main(["train", "--case", "3", "--epochs", "3", "--out", str(run), "--quiet"]) == 0
    assert cli.main(["train", "--resume", str(run), "--quiet"]) == 0  # finished: evaluates only
    assert len((run / "history.csv").read_text().splitlines()) == 4


@pytest.mark.usefixtures("synthetic_data")
@pytest.mark.parametrize("tty", [False, True])
def test_progress_bar_only_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tty: bool
) -> None:
    """A log or a pipe gets one line per epoch; the bar is for a terminal (as Keras')."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    assert cli.main(["train", "--case", "2", "--epochs", "1", "--out", str(tmp_path / "r")]) == 0
    captured = capsys.readouterr()
    assert ("sample/s" in captured.err) is tty
    assert "epoch 1: loss" in captured.out + captured.err


def test_lines_reach_a_log_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redirected stdout is block-buffered by default: a log would show nothing until exit."""
    log = io.TextIOWrapper(io.BytesIO())
    monkeypatch.setattr(sys, "stdout", log)
    assert not log.line_buffering
    cli.main(["evaluate", str(tmp_path)])
    assert log.line_buffering


def test_unwritable_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = cli.main(["train", "--out", str(blocker / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot create output folder" in err and err.count("\n") == 1
    assert blocker.read_text() == "not a folder"


def test_evaluate_needs_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["evaluate", str(tmp_path)]) == 2
    assert "has no best.pt" in capsys.readouterr().err
    (tmp_path / "best.pt").write_bytes(b"garbage")
    assert cli.main(["evaluate", str(tmp_path)]) == 2
    assert "not a readable cnnlab checkpoint" in capsys.readouterr().err

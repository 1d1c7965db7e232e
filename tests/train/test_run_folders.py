"""Run folders under stress: a kill in the first epoch, stale temporaries, a failed start,
two commands on one folder, a full disk, and flags out of range (issue 15)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnnlab import data
from cnnlab.cli.main import main
from cnnlab.errors import CnnlabError
from cnnlab.train import runs

TRAIN = ["train", "--case", "2", "--quiet"]


def _one_error_line(err: str, prefix: str = "cnnlab: error: ") -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    return lines[0]


def _no_data(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("the data was loaded before the command refused")


def _killed_in_first_epoch(finished: Path, folder: Path) -> None:
    """What ``kill -9`` during epoch 1 leaves: the records, perhaps best.pt, a temporary,
    no last.pt."""
    folder.mkdir()
    for name in ("config.json", "model.json", "best.pt"):
        shutil.copy(finished / name, folder / name)
    (folder / ".last.pt.k3x_9q2a.tmp").write_bytes(b"half a checkpoint")


# ------------------------------------------------------------------ killed runs


@pytest.mark.usefixtures("synthetic_data")
def test_a_run_killed_in_its_first_epoch_restarts_with_out(
    tiny_run: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = tmp_path / "run"
    _killed_in_first_epoch(tiny_run["case2"], run)
    # --resume has nothing to resume: it says so, points at --out, and loads no data
    with monkeypatch.context() as m:
        m.setattr(data, "load_mnist", _no_data)
        assert main(["train", "--resume", str(run), "--quiet"]) == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert "last.pt not found" in line and f"--out {run}" in line
    assert "removed 1 temporary file(s)" in captured.out
    assert fileio_temporaries(run) == []
    # --out reuses the folder, saying so
    (run / ".history.csv.k3x_9q2b.tmp").write_bytes(b"half a history")
    assert main([*TRAIN, "--epochs", "1", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"reusing {run}: it holds no last.pt yet" in out
    assert "removed 1 temporary file(s)" in out
    assert (run / "last.pt").is_file() and (run / "metrics.json").is_file()
    assert fileio_temporaries(run) == []


def fileio_temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.usefixtures("synthetic_data")
def test_resume_removes_stale_temporaries(
    tiny_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run["case3"], run)
    for name in (".last.pt.a1b2c3d4.tmp", ".history.csv.zz_00000.tmp"):
        (run / name).write_bytes(b"partial")
    (run / "notes.tmp").write_text("the user's, not ours")
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert "removed 2 temporary file(s)" in capsys.readouterr().out
    assert fileio_temporaries(run) == ["notes.tmp"]


@pytest.mark.usefixtures("synthetic_data")
def test_a_folder_holding_a_run_is_refused_before_the_data_load(
    tiny_run: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run["case2"], run)
    monkeypatch.setattr(data, "load_mnist", _no_data)
    assert main([*TRAIN, "--out", str(run)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "already holds a run" in line and f"--resume {run}" in line


# ------------------------------------------------------------------ failed starts


def test_failed_data_load_leaves_no_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise CnnlabError("cannot download MNIST: network unreachable")

    monkeypatch.setattr(data, "load_mnist", unavailable)
    monkeypatch.chdir(tmp_path)
    assert main([*TRAIN, "--out", str(tmp_path / "a" / "b" / "run")]) == 2
    assert "network unreachable" in _one_error_line(capsys.readouterr().err)
    assert main(TRAIN) == 2  # the default folder under runs/
    capsys.readouterr()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("synthetic_data")
def test_failure_after_the_folder_is_made_removes_what_it_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A network the data does not fit fails inside fit, after the folder was claimed."""
    small = ["train", "--model", "Input(8,8,1) Flatten Dense(10)", "--quiet"]
    assert main([*small, "--out", str(tmp_path / "a" / "run")]) == 2
    assert "takes 8x8x1 inputs" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "a").exists()
    # a folder the user made stays, exactly as it was
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README").write_text("my notes")
    assert main([*small, "--out", str(mine)]) == 2
    capsys.readouterr()
    assert [p.name for p in mine.iterdir()] == ["README"]


# ------------------------------------------------------------------ the lock


@pytest.fixture
def held_lock(tmp_path: Path) -> Iterator[Path]:
    """Another process's lock on ``tmp_path/run``: flock locks belong to an open file,
    so a second open of the lock file conflicts even inside this process."""
    run = tmp_path / "run"
    run.mkdir()
    with (run / runs.LOCK).open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield run


@pytest.mark.usefixtures("synthetic_data")
def test_a_locked_folder_is_refused_in_one_line(
    held_lock: Path,
    tiny_run: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(data, "load_mnist", _no_data)
    assert main([*TRAIN, "--out", str(held_lock)]) == 2
    assert "is in use" in _one_error_line(capsys.readouterr().err)
    for name in ("config.json", "model.json", "last.pt", "best.pt"):
        shutil.copy(tiny_run["case2"] / name, held_lock / name)
    before = {p.name: p.read_bytes() for p in held_lock.iterdir()}
    assert main(["train", "--resume", str(held_lock), "--quiet"]) == 2
    assert "is in use" in _one_error_line(capsys.readouterr().err)
    assert {p.name: p.read_bytes() for p in held_lock.iterdir()} == before


@pytest.mark.usefixtures("synthetic_data")
def test_the_lock_is_held_for_the_whole_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second train --out/--resume started while the first trains gets one line."""
    import cnnlab.train.loop as loop

    run = tmp_path / "run"
    real_fit = loop.fit
    seen: list[tuple[int, str]] = []

    def fit_and_interfere(*args: Any, **kwargs: Any) -> dict[str, Any]:
        def on_epoch_end(epoch: int, _row: dict[str, float]) -> None:
            for argv in ([*TRAIN, "--out", str(run)], ["train", "--resume", str(run)]):
                code = main(argv)
                seen.append((code, capsys.readouterr().err))

        return real_fit(*args, **kwargs, on_epoch_end=on_epoch_end)

    monkeypatch.setattr(loop, "fit", fit_and_interfere)
    assert main([*TRAIN, "--epochs", "2", "--out", str(run)]) == 0
    assert len(seen) == 4
    for code, err in seen:
        assert code == 2 and "is in use" in _one_error_line(err)


# ------------------------------------------------------------------ a full disk


def _fail_writes_of(name: str, after: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every atomic write of ``name`` after the first ``after`` raises ENOSPC."""
    real = os.fsync
    count = {"n": 0}

    def fsync(fd: int) -> None:
        if f"/.{name}." in os.readlink(f"/proc/self/fd/{fd}"):
            count["n"] += 1
            if count["n"] > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def _history(run: Path) -> list[list[str]]:
    rows = (run / "history.csv").read_text().splitlines()
    return [r.split(",")[:-1] for r in rows]  # timing aside


@pytest.mark.usefixtures("synthetic_data")
def test_disk_full_is_one_line_and_the_run_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert main([*TRAIN, "--epochs", "3", "--out", str(whole)]) == 0
    with monkeypatch.context() as m:
        _fail_writes_of("last.pt", after=1, monkeypatch=m)
        assert main([*TRAIN, "--epochs", "3", "--out", str(run)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"cannot write {run / 'last.pt'}: No space left on device" in line
    assert fileio_temporaries(run) == []
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert _history(run) == _history(whole)
    metrics = json.loads((run / "metrics.json").read_text())
    assert (
        metrics["test_accuracy"]
        == json.loads((whole / "metrics.json").read_text())["test_accuracy"]
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1.4 MB tmpfs: room for one epoch of Case 1's checkpoints, not for the next."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1400k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip() or 'not root'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.usefixtures("synthetic_data")
def test_a_really_full_disk(small_disk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = small_disk / "run"
    argv = ["train", "--case", "1", "--epochs", "3", "--quiet", "--out", str(run)]
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and str(small_disk) in line
    assert (run / "last.pt").is_file() and fileio_temporaries(run) == []
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert len(_history(run)) == 4


# ------------------------------------------------------------------ flags and outputs


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--seed", "4294967296"],
        ["train", "--seed", "-1"],
        ["train", "--epochs", "0"],
        ["train", "--epochs", "100000000000000000000"],
        ["train", "--batch-size", "99999999999"],
        ["train", "--patience", "-3"],
        ["train", "--epochs", "1.5"],
        ["compare", "--seed", "4294967296"],
        ["baselines", "--seed", "4294967296"],
        ["shift", "RUN", "--max-shift", "1000000000"],
        ["explain", "RUN", "--index", "-1"],
        ["explain", "RUN", "--index", "100000000000"],
        ["serve", "RUN", "--port", "70000"],
        ["serve", "RUN", "--header-timeout", "nan"],
    ],
)
@pytest.mark.usefixtures("synthetic_data")
def test_numeric_flags_out_of_range_give_one_line(
    argv: list[str], tiny_run: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(tiny_run["case1"]) if a == "RUN" else a for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's refusal, also one line (cli.Parser)
        code = int(exc.code or 0)
    assert code == 2
    assert "error: " in _one_error_line(capsys.readouterr().err, prefix="cnnlab")


def test_outputs_in_the_way_give_one_line(
    tiny_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "taken"
    folder.mkdir()
    assert main(["export-numpy", str(tiny_run["case1"]), "--out", str(folder)]) == 2
    assert "is a folder" in _one_error_line(capsys.readouterr().err)
    a_file = tmp_path / "figures"
    a_file.write_text("not a folder")
    assert main(["report", str(tiny_run["case1"]), "--figures", str(a_file)]) == 2
    assert "is a file" in _one_error_line(capsys.readouterr().err)
    assert a_file.read_text() == "not a folder" and list(folder.iterdir()) == []

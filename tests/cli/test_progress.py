"""Progress of the long commands, and a report that reuses what its run computed.

Under pytest stderr is not a terminal, so every command takes the log's way: plain lines.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from interop.test_keras_import import import_cli, randomised, save_keras

from cnnlab import fileio
from cnnlab.analysis import baselines, shift
from cnnlab.cli import main
from cnnlab.cli.progress import Progress, seconds
from cnnlab.data import MNIST
from cnnlab.models import get

SMALL = ["--max-shift", "1", "--invariance-images", "4"]
PATHS = ("padding_valid.png", "padding_valid.gif", "strides.png", "strides.gif", "figures.json")
SPLIT_GRID = shift.split_grid  # the computation itself, whatever a test patched in


def _copy(tiny_run: dict[str, Path], tmp_path: Path, case: str) -> Path:
    run = tmp_path / case
    shutil.copytree(tiny_run[case], run)
    return run


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the shift grid's computations (each one still runs)."""
    calls: list[int] = []
    real = SPLIT_GRID

    def counted(*args: object, **kwargs: object) -> shift.ShiftGrid:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(shift, "split_grid", counted)
    return calls


def test_lines_of_the_helper() -> None:
    said: list[str] = []
    prog = Progress(bars=False, say=said.append)
    tick = prog.tick("grid", " images")
    assert tick is not None and Progress(bars=True).tick("grid") is None  # the bar shows it
    for done in range(1, 101):
        tick(done, 100)
    assert len(said) == 10 and said[-1].startswith("grid: 100 of 100 images (100%), ")
    assert said[0].startswith("grid: 10 of 100 images (10%), ")
    said.clear()
    with prog.step("evaluation"):
        pass
    with prog.items("figure", 2) as done:
        done("a")
        done("b")
    assert re.fullmatch(r"evaluation: done in \d\.\d s", said[0])
    assert said[1].startswith("[1/2] figure a: ") and said[2].startswith("[2/2] figure b: ")
    assert (seconds(4.25), seconds(41.4), seconds(257)) == ("4.2 s", "41 s", "4 min 17 s")


def test_report_lines_then_reuse_then_recompute(
    tiny_run: dict[str, Path],
    synthetic_data: MNIST,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = _copy(tiny_run, tmp_path, "case3")
    args = ["report", str(run), *SMALL, "--no-verify"]
    calls = _counting(monkeypatch)
    assert main(args) == 0
    first = capsys.readouterr().out
    for line in (
        "test data: done in",
        "evaluation of case3: done in",
        "feature maps of case3: done in",
        "shift grid of case3: 60 of 60 test images (100%), ",
        "shift grid of case3: done in",
        "page: done in",
    ):
        assert line in first, line
    assert "reused from shift.json" not in first and calls == [1]
    md = (run / "report.md").read_text()

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the shift grid was computed again")

    monkeypatch.setattr(shift, "split_grid", boom)
    assert main(args) == 0
    again = capsys.readouterr().out
    assert f"shift grid of {run}: reused from shift.json (--recompute to redo it)" in again
    assert f"confusion matrix of {run}: reused from confusion.json" in again
    assert (run / "report.md").read_text() == md  # the same page from the stored results
    calls = _counting(monkeypatch)
    assert main([*args, "--recompute"]) == 0
    assert calls == [1] and "reused from shift.json" not in capsys.readouterr().out
    assert (run / "report.md").read_text() == md


def test_stored_results_of_another_checkpoint_or_settings(
    tiny_run: dict[str, Path],
    synthetic_data: MNIST,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one, three = _copy(tiny_run, tmp_path, "case1"), _copy(tiny_run, tmp_path, "case3")
    calls = _counting(monkeypatch)
    assert main(["shift", str(one), *SMALL]) == 0
    assert main(["shift", str(three), *SMALL]) == 0
    assert len(calls) == 2
    capsys.readouterr()
    shutil.copy(one / "shift.json", three / "shift.json")  # case1's weights, not case3's
    assert main(["shift", str(three), *SMALL]) == 0
    out = capsys.readouterr().out
    assert "shift.json was made with another best.pt; computing it again" in out
    assert len(calls) == 3 and fileio.read_json(three / "shift.json")["model"] == "case3"
    # 60 of the 60 test images is what the default (the whole test set) uses: reused.
    assert main(["shift", str(three), *SMALL, "--shift-images", "60"]) == 0
    assert len(calls) == 3 and "reused from shift.json" in capsys.readouterr().out
    assert main(["shift", str(three), *SMALL, "--shift-images", "20"]) == 0
    assert len(calls) == 4 and "made with other settings" in capsys.readouterr().out
    wider = ["shift", str(three), "--max-shift", "2", "--invariance-images", "4"]
    assert main(wider) == 0
    assert len(calls) == 5 and "made with other settings" in capsys.readouterr().out
    assert main(wider) == 0
    assert len(calls) == 5
    assert main([*wider, "--recompute"]) == 0
    assert len(calls) == 6


@pytest.mark.parametrize("damage", ["truncated", "parts missing"])
def test_damaged_stored_shift_is_computed_again(
    tiny_run: dict[str, Path],
    synthetic_data: MNIST,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    damage: str,
) -> None:
    run = _copy(tiny_run, tmp_path, "case2")
    assert main(["shift", str(run), *SMALL]) == 0
    stored = run / "shift.json"
    text = stored.read_text()
    if damage == "truncated":
        stored.write_text(text[: len(text) // 2])
    else:
        fileio.write_json(stored, fileio.read_json(stored) | {"grid": {"shifts": [0]}})
    capsys.readouterr()
    calls = _counting(monkeypatch)
    assert main(["report", str(run), *SMALL, "--no-verify"]) == 0
    out, err = capsys.readouterr()
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(stored) in warnings[0], out
    assert "computing the shift grid again" in warnings[0] and "Traceback" not in out + err
    assert calls == [1] and fileio.read_json(stored)["grid"]["n_images"] == 60


def test_damaged_numpy_check_and_baselines(
    tiny_run: dict[str, Path],
    synthetic_data: MNIST,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "b"
    assert main(["baselines", "--out", str(out), "--limit-train", "100"]) == 0
    said = capsys.readouterr().out
    assert re.search(r"\[1/2\] baseline hog_logreg: test accuracy [\d.]+, done in", said)
    assert re.search(r"\[2/2\] baseline knn_pixels: test accuracy [\d.]+, done in", said)
    path = out / "baselines.json"
    path.write_text(path.read_text()[:100])
    assert main(["baselines", "--out", str(out), "--limit-train", "100"]) == 0
    said = capsys.readouterr().out
    assert said.count("warning:") == 1 and "training the baselines again" in said
    assert baselines.load(path)["n_train"] == 100
    # A report given a damaged baselines file or numpy_check.json: a warning each, a page.
    run = _copy(tiny_run, tmp_path, "case1")
    args = ["report", str(run), *SMALL, "--shift-images", "10", "--baselines", str(path)]
    assert main(args) == 0
    path.write_text(path.read_text()[:100])
    (run / "numpy_check.json").write_text('{"dtype": "float32", ')
    capsys.readouterr()
    assert main(args) == 0
    said = capsys.readouterr().out
    assert said.count("warning:") == 2 and "checking the NumPy engine again" in said
    assert "No baselines: cannot read" in (run / "report.md").read_text()
    assert fileio.read_json(run / "numpy_check.json")["passed"]


def test_figures_and_import_keras_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["figures", "--out", str(tmp_path / "f"), "--only", "padding_valid", "--only", "strides"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out.split() == [str(tmp_path / "f" / n) for n in PATHS]  # stdout: the paths alone
    lines = err.splitlines()
    assert lines[0].startswith("[1/2] figure padding_valid: ") and lines[0].endswith(" s")
    assert lines[1].startswith("[2/2] figure strides: ") and len(lines) == 2
    keras_file = save_keras(tmp_path / "m.keras", randomised(get("case2")))
    assert import_cli(keras_file, tmp_path / "run") == 0
    out = capsys.readouterr().out.splitlines()
    size = keras_file.stat().st_size
    assert out[0] == f"reading {keras_file} ({size / 1000:.1f} kB)"
    assert out[1].startswith("reading m.keras: done in ")
    assert out[2].startswith(f"writing {tmp_path / 'run'}/: done in ")
    assert out[3].startswith(f"imported {keras_file} as ")


def test_compare_trains_with_a_line_per_case(
    synthetic_data: MNIST, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    argv = ["compare", "--models", "case2", "case3", "--epochs", "1", "--out", str(out)]
    assert main(argv) == 0
    said, err = capsys.readouterr()
    assert f"[1/2] training case2 into {out / 'case2'}" in said
    assert re.search(r"^\[1/2\] case2: done in [\d.]+ s$", said, re.M)
    assert re.search(r"^\[2/2\] case3: done in [\d.]+ s$", said, re.M)
    assert "it/s" not in err and "\r" not in err  # no bar into a log


def test_numpy_check_lines_in_a_log_and_none_in_json(
    tiny_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(tiny_run, tmp_path, "case3")
    assert main(["verify-numpy", str(run), "--random-inputs"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^NumPy check: [\d,]+ of [\d,]+ inputs \(100%\), ", out, re.M), out
    assert main(["verify-numpy", str(run), "--random-inputs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True  # stdout stays one document

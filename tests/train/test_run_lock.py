"""Issue 21, class 1 and class 6's run-folder items: a real ``cnnlab train`` holds its folder
while every other writer tries it (each refused in one line naming the holder, nothing
written), then finishes exactly as an undisturbed run of the same seed; an empty --out or
--model is refused; metrics.json's best_val_accuracy is an accuracy."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import resource
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab import fileio
from cnnlab.cli.main import main
from cnnlab.data.mnist import MNIST
from cnnlab.train import runs

SRC = str(Path(cnnlab.__file__).parents[1])  # the cnnlab under test, for the subprocesses
RSS_BOUND = 1536 * 2**20  # a safety limit on a refused command's peak RSS, not a timing
GROWTH_BOUND = 256 * 2**20  # in-process: how far a refusal may raise this process's peak
SECONDS_BOUND = 60.0
EPOCHS = 3

# A real `cnnlab train`, paused after its first epoch until GO exists (a test hook from
# outside: the CLI itself has none), so the folder is held for as long as the writers take.
PAUSED_TRAIN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import cnnlab.train.loop as loop
    from cnnlab.cli.main import main
    go, ready, real = Path(sys.argv[2]), Path(sys.argv[3]), loop.fit
    def fit(*args, **kwargs):
        def on_epoch_end(epoch, _row):
            if epoch == 1:
                ready.touch()
                deadline = time.monotonic() + 120
                while not go.exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
        return real(*args, **kwargs, on_epoch_end=on_epoch_end)
    loop.fit = fit
    sys.exit(main(sys.argv[4:]))
""")
CLI = "import sys; sys.path.insert(0, sys.argv.pop(1)); from cnnlab.cli.main import main; "
CLI += "sys.exit(main(sys.argv[1:]))"


@dataclass
class Held:
    """The folder a paused train holds, and the same run left undisturbed."""

    run: Path
    twin: Path
    data: Path
    image: Path
    go: Path
    train: subprocess.Popen[str]
    twin_train: subprocess.Popen[str]
    snapshot: dict[str, str]  # the held folder's files (name -> sha256) when paused


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (sub-folders too) and its hash."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _train_argv(data: Path, out: Path) -> list[str]:
    argv = ["train", "--case", "2", "--data", f"npz:{data}", "--epochs", str(EPOCHS)]
    return [*argv, "--patience", "50", "--seed", "7", "--quiet", "--out", str(out)]


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory, tiny_mnist: MNIST) -> Iterator[Held]:
    """A train paused after epoch 1 in ``run`` (its twin runs through in ``twin``)."""
    root = tmp_path_factory.mktemp("held")
    data = root / "digits.npz"
    m = tiny_mnist
    np.savez(data, x_train=m.x_train, y_train=m.y_train, x_test=m.x_test, y_test=m.y_test)
    image = root / "digit.png"
    Image.fromarray(m.x_test[0]).save(image)
    go, ready, twin_go = root / "go", root / "ready", root / "twin-go"
    twin_go.touch()  # never paused
    procs = []
    for name, gate in (("run", go), ("twin", twin_go)):
        argv = [sys.executable, "-c", PAUSED_TRAIN, SRC, str(gate), str(root / f"{name}.ready")]
        procs.append(
            subprocess.Popen(
                [*argv, *_train_argv(data, root / name)],
                cwd=root,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    ready = root / "run.ready"
    deadline = time.monotonic() + 120
    while not ready.exists():
        if procs[0].poll() is not None or time.monotonic() > deadline:
            procs[0].kill()
            pytest.fail(f"the train did not reach its pause: {procs[0].communicate()}")
        time.sleep(0.05)
    held = Held(
        root / "run", root / "twin", data, image, go, procs[0], procs[1], _snapshot(root / "run")
    )
    try:
        yield held
    finally:
        go.touch()
        for proc in procs:
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()


# Runs ARGV[2:] as its child and writes that child's peak RSS (KiB) to ARGV[1]. The wrapper
# is small: a child forked straight from pytest would report pytest's own peak (Linux counts
# the parent's pages in a child's ru_maxrss until it execs).
MEASURE = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def _measured(argv: list[str], cwd: Path) -> tuple[int, str, int, float]:
    """(exit code, stderr, peak RSS in bytes, seconds) of ``cnnlab ARGV`` in a subprocess,
    its RSS measured by a small wrapper process (``MEASURE``)."""
    err, rss = cwd / ".stderr", cwd / ".rss"
    start = time.monotonic()
    with err.open("w") as f:
        cli = [sys.executable, "-c", CLI, SRC, *argv]
        code = subprocess.call(
            [sys.executable, "-c", MEASURE, str(rss), *cli], cwd=cwd, stdout=subprocess.DEVNULL,
            stderr=f,
        )  # fmt: skip
    seconds = time.monotonic() - start
    text, peak = err.read_text(), int(rss.read_text()) * 1024
    err.unlink()
    rss.unlink()
    return code, text, peak, seconds


# (class, reproduction, argv from the held folder's paths); every row must exit 2 in one line
Argv = Callable[[Held], list[str]]
ROWS: list[tuple[str, str, Argv]] = [
    ("1", "import-keras --out", lambda h: ["import-keras", str(h.image), "--out", str(h.run)]),
    (
        "1",
        "compare --out (trains)",
        lambda h: ["compare", "--models", "case2", "--out", str(h.run), "--data", f"npz:{h.data}"],
    ),
    ("1", "compare --out RUN/sub", lambda h: ["compare", "--out", str(h.run / "sub")]),
    ("1", "export --onnx RUN/", lambda h: ["export", str(h.run), "--onnx", str(h.run / "m.onnx")]),
    ("1", "export-numpy", lambda h: ["export-numpy", str(h.run)]),
    (
        "1",
        "export-numpy --out RUN/sub/",
        lambda h: ["export-numpy", str(h.run), "--out", str(h.run / "sub" / "m.npz")],
    ),
    ("1", "evaluate", lambda h: ["evaluate", str(h.run)]),
    ("1", "explain", lambda h: ["explain", str(h.run), "--index", "0"]),
    (
        "1",
        "explain --out RUN/x",
        lambda h: ["explain", str(h.run), "--image", str(h.image), "--out", str(h.run / "x")],
    ),
    ("1", "verify-numpy", lambda h: ["verify-numpy", str(h.run), "--random-inputs"]),
    ("1", "shift", lambda h: ["shift", str(h.run)]),
    ("1", "report", lambda h: ["report", str(h.run), "--no-verify"]),
    (
        "1",
        "report --out elsewhere",
        lambda h: ["report", str(h.run), "--out", str(h.data.parent / "r.html")],
    ),
    ("1", "baselines --out", lambda h: ["baselines", "--out", str(h.run)]),
    ("1", "figures --out", lambda h: ["figures", "--out", str(h.run), "--only", "pooling"]),
    ("1", "figures --out RUN/figs", lambda h: ["figures", "--out", str(h.run / "figs")]),
    ("1", "speedrun --out", lambda h: ["speedrun", "--out", str(h.run), "--seeds", "1"]),
    ("1", "train --out", lambda h: _train_argv(h.data, h.run)),
    ("1", "train --resume", lambda h: ["train", "--resume", str(h.run), "--quiet"]),
    ("6", "figures --out ''", lambda h: ["figures", "--out", "", "--only", "pooling"]),
    ("6", "figures --out ' '", lambda h: ["figures", "--out", " "]),
    ("6", "train --model ''", lambda h: ["train", "--model", "", "--epochs", "1"]),
    ("6", "summary --model ''", lambda h: ["summary", "--model", ""]),
    ("6", "receptive --model '  '", lambda h: ["receptive", "--model", "  "]),
]


@pytest.mark.parametrize(("kind", "row", "argv"), ROWS, ids=[f"{k}:{r}" for k, r, _ in ROWS])
def test_refused_in_one_line_with_nothing_written(
    held: Held,
    kind: str,
    row: str,
    argv: Argv,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if kind == "1":  # in-process (the real CLI) while the train is paused, holding RUN
        assert held.train.poll() is None, "the train stopped holding its folder"
        start = time.monotonic()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        try:
            code = main(argv(held))
        except SystemExit as exc:  # argparse's refusals
            code = int(exc.code or 0)
        # The process's peak includes every earlier test's: the refusal may raise it by at
        # most GROWTH_BOUND (it allocates nothing large), so its own peak stays below
        # max(earlier peak, its start) + GROWTH_BOUND. Safety limits, not timings.
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        assert grown < GROWTH_BOUND and time.monotonic() - start < SECONDS_BOUND, grown
        err = capsys.readouterr().err
        assert f"held by a running cnnlab train (pid {held.train.pid})" in err, err
    else:  # a subprocess in an empty folder: its exit, peak RSS and time measured
        code, err, rss, seconds = _measured(argv(held), tmp_path)
        assert rss < RSS_BOUND and seconds < SECONDS_BOUND, (rss, seconds)
        assert "empty" in err, err
        assert list(tmp_path.iterdir()) == [], "it wrote into the current folder"
    lines = err.strip().splitlines()
    assert code == 2 and 1 <= len(lines) <= 3 and "Traceback" not in err, (code, err)
    assert _snapshot(held.run) == held.snapshot  # nothing written, nothing lost


def test_a_reader_is_not_refused(held: Held, capsys: pytest.CaptureFixture[str]) -> None:
    """predict reads a held run (written atomically): it answers, and writes nothing."""
    assert main(["predict", str(held.run), str(held.image)]) == 0
    assert capsys.readouterr().out.strip()
    assert _snapshot(held.run) == held.snapshot


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def _weights(run: Path, name: str) -> dict[str, torch.Tensor]:
    state = torch.load(io.BytesIO((run / name).read_bytes()), weights_only=False)
    return dict(state["model"])


TIMED = ("train_seconds", "seconds_per_epoch")


def test_the_held_train_finishes_as_its_undisturbed_twin(held: Held) -> None:
    """Run after the table (file order): the train, released, ends as if never disturbed."""
    held.go.touch()
    for proc in (held.train, held.twin_train):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    names = {"config.json", "model.json", "best.pt", "last.pt", "metrics.json", "history.csv"}
    assert names <= {p.name for p in held.run.iterdir()}
    assert {p.name for p in held.run.iterdir()} == {p.name for p in held.twin.iterdir()}
    assert (held.run / "model.json").read_bytes() == (held.twin / "model.json").read_bytes()
    assert _history(held.run) == _history(held.twin) and len(_history(held.run)) == EPOCHS
    for name in ("best.pt", "last.pt"):
        a, b = _weights(held.run, name), _weights(held.twin, name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (fileio.read_json(r / "metrics.json") for r in (held.run, held.twin))
    assert {k: v for k, v in ma.items() if k not in TIMED} == {
        k: v for k, v in mb.items() if k not in TIMED
    }
    config = fileio.read_json(held.run / "config.json")
    assert config["model"] == fileio.read_json(held.run / "model.json")


def test_a_refusal_names_whichever_command_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The holder is named whoever it is; a lock file holding anything else is not echoed."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"not read: the lock is refused first")
    with runs.writing([run / "report.html"], "report"):
        assert main(["evaluate", str(run)]) == 2
    assert f"held by a running cnnlab report (pid {os.getpid()})" in capsys.readouterr().err
    assert (run / runs.LOCK).read_text() == ""  # emptied on release
    with (run / runs.LOCK).open("r+") as f:
        import fcntl

        f.write("\x1b[2J 1 cnnlab rm -rf\n")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["shift", str(run)]) == 2
    err = capsys.readouterr().err
    assert "held by a running cnnlab command;" in err and "\x1b" not in err, err


def test_best_val_accuracy_is_the_accuracy_when_stopping_watches_val_loss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A time-series run (early stopping on val_loss): best_val_accuracy used to hold minus
    the best val_loss; it is now the best validation accuracy, and the monitor is named."""
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    x = (rng.normal(size=(60, 32)) + 0.8 * y[:, None]).astype(np.float32)
    np.savez(tmp_path / "ts.npz", x_train=x, y_train=y)
    run = tmp_path / "run"
    argv = ["train", "--model", "fcn1d_small", "--data", f"npz:{tmp_path / 'ts.npz'}"]
    assert main([*argv, "--epochs", "3", "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    metrics = fileio.read_json(run / "metrics.json")
    history = runs.read_history(run / "history.csv")
    assert metrics["monitor"] == "val_loss"
    assert metrics["best_val_accuracy"] == max(r["val_accuracy"] for r in history)
    assert 0 <= metrics["best_val_accuracy"] <= 1
    assert metrics["best_val_loss"] == pytest.approx(min(r["val_loss"] for r in history))

"""Issue 21, class 2: every file cnnlab reads goes through one bounded reader.

One table, one row per reproduction: a run-folder file (model.json, config.json,
metrics.json, best.pt) or a user's file (--model YAML, .npz, .ts, an image, an --array
.npy, a .keras file) replaced by a FIFO, by a symlink to /dev/zero or by a 3 GiB sparse
file, then read by the real CLI in a subprocess. Each row must exit 2 with at most 3
stderr lines, no traceback, the refusal naming the file; finish inside a timeout (a FIFO
must not hang the open); stay under a peak RSS bound (``ru_maxrss`` of the command,
measured by a small wrapper process through ``RUSAGE_CHILDREN``); and leave every other
file of the run folder as it was. The bounds are safety limits, not timing assertions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import cnnlab
from cnnlab import fileio
from cnnlab.data import Splits
from cnnlab.errors import CnnlabError

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60  # a FIFO that blocked the open would hang here: generous, a safety limit
MAX_RSS_BYTES = 1536 << 20  # 1.5 GiB; the issue's runs passed 3.9 GB
SPARSE_BYTES = 3 << 30  # a 3 GiB sparse file costs no disk

# The command: synthetic digits instead of MNIST, and serve never listens (exit 99 if it
# got that far, which a damaged run must not).
RUNNER = f"""
import json, sys
sys.path.insert(0, {str(REPO / "tests")!r})
from conftest import synthetic_mnist
from cnnlab import data
data.load_mnist = lambda *a, **k: synthetic_mnist()
import cnnlab.serving.serve as serving
def listen(*a, **k):
    sys.exit(99)
serving.serve = listen
from cnnlab.cli.main import main
sys.exit(main(json.loads(sys.argv[1])))
"""
# The wrapper: runs the command as its child and writes the child's peak RSS (KiB).
MEASURE = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""

# ------------------------------------------------------------------ the three damages


def fifo(path: Path) -> None:
    os.mkfifo(path)


def dev_zero(path: Path) -> None:
    os.symlink("/dev/zero", path)


def sparse(path: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(SPARSE_BYTES)


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "fifo": (fifo, "is a FIFO (named pipe), not a regular file"),
    "/dev/zero": (dev_zero, "is a character device, not a regular file"),
    "sparse 3 GiB": (sparse, "is 3 GiB; "),
}

# ------------------------------------------------------------------ the commands

Argv = Callable[[Path, Path], list[str]]
COMMANDS: dict[str, Argv] = {
    "predict --array": lambda run, tmp: ["predict", str(run), "--array", str(tmp / "x.npy")],
    "serve": lambda run, tmp: ["serve", str(run), "--port", "0"],
    "export": lambda run, tmp: ["export-numpy", str(run), "--out", str(tmp / "m.npz")],
    "train --resume": lambda run, tmp: ["train", "--resume", str(run), "--quiet"],
    "predict": lambda run, tmp: ["predict", str(run), str(tmp / "digit.png")],
    "explain": lambda run, tmp: ["explain", str(run), "--index", "0", "--out", str(tmp / "ex")],
    "report": lambda run, tmp: ["report", str(run), "--no-verify", "--out", str(tmp / "r.html")],
    "evaluate": lambda run, tmp: ["evaluate", str(run)],
    "compare": lambda run, tmp: ["compare", str(run), "--out", str(tmp / "cmp")],
    "summary --model": lambda run, tmp: ["summary", "--model", str(tmp / "net.yaml")],
    "train --data npz": lambda run, tmp: [
        *("train", "--data", f"npz:{tmp / 'own.npz'}", "--epochs", "1", "--quiet"),
        *("--out", str(tmp / "out")),
    ],
    "train --data ucr": lambda run, tmp: [
        *("train", "--data", "ucr:Tiny", "--data-dir", str(tmp / "data"), "--epochs", "1"),
        *("--quiet", "--out", str(tmp / "out")),
    ],
    "import-keras": lambda run, tmp: [
        "import-keras",
        str(tmp / "net.keras"),
        "--out",
        str(tmp / "imp"),
    ],
}

# (the file damaged, relative to the run folder or, for "tmp/...", to the test's folder;
#  the commands that read it, as the issue reproduced them)
READS: list[tuple[str, tuple[str, ...]]] = [
    ("model.json", ("predict --array", "serve", "export", "train --resume")),
    ("model.json", ("predict", "explain", "report")),
    ("config.json", ("evaluate", "compare")),
    ("metrics.json", ("evaluate", "compare")),
    ("best.pt", ("predict", "evaluate", "serve")),
    ("tmp/net.yaml", ("summary --model",)),
    ("tmp/x.npy", ("predict --array",)),
    ("tmp/digit.png", ("predict",)),
    ("tmp/own.npz", ("train --data npz",)),
    ("tmp/data/ucr/Tiny/Tiny_TRAIN.ts", ("train --data ucr",)),
    ("tmp/net.keras", ("import-keras",)),
]
ROWS = [
    pytest.param(target, command, damage, id=f"{target.removeprefix('tmp/')}:{damage}:{command}")
    for target, commands in READS
    for command in commands
    for damage in DAMAGES
]


@pytest.fixture(scope="module")
def pristine_run(tmp_path_factory: pytest.TempPathFactory, tiny_splits: Splits) -> Path:
    """One finished case-1 run (1 epoch on the synthetic data), copied by every row."""
    from cnnlab.train.loop import TrainConfig, fit

    run = tmp_path_factory.mktemp("pristine") / "run"
    run.mkdir()
    fit(TrainConfig(epochs=1), tiny_splits, run, progress=False, log=lambda _m: None)
    return run


def _user_files(tmp: Path) -> None:
    """Good versions of every user file a row may damage: only the damage makes it fail."""
    from cnnlab.data.preprocess import to_png

    image = np.zeros((28, 28), dtype=np.float32)
    image[6:22, 12:16] = 1.0
    (tmp / "digit.png").write_bytes(to_png(image))
    np.save(tmp / "x.npy", np.zeros((1, 28, 28, 1), dtype=np.float32))
    (tmp / "net.yaml").write_text("input_shape: [28, 28, 1]\nlayers: [{Flatten: null}]\n")
    rng = np.random.default_rng(0)
    np.savez(
        tmp / "own.npz",
        x_train=rng.integers(0, 255, (20, 8, 8), dtype=np.uint8),
        y_train=np.arange(20) % 2,
    )
    ts = tmp / "data" / "ucr" / "Tiny"
    ts.mkdir(parents=True)
    body = "@problemName Tiny\n@univariate true\n@classLabel true a b\n@data\n"
    for split in ("TRAIN", "TEST"):
        (ts / f"Tiny_{split}.ts").write_text(body + "1,2,3,4:a\n4,3,2,1:b\n" * 4)
    (tmp / "net.keras").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip


def _snapshot(folder: Path, skip: str) -> dict[str, str]:
    """SHA-256 of every file in ``folder`` but the damaged one."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.name != skip and p.is_file() and not p.is_symlink()
    }


def _run(argv: list[str], tmp: Path) -> tuple[int, str, int]:
    """(exit code, stderr, peak RSS in bytes) of the CLI in a subprocess, killed at the
    timeout with its whole process group (a hung FIFO reader included)."""
    rss_file = tmp / "rss.txt"
    cmd = [sys.executable, "-c", MEASURE, str(rss_file), sys.executable, "-c", RUNNER]
    # the cnnlab under test, whatever relative PYTHONPATH pytest was started with
    src = str(Path(cnnlab.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [*cmd, json.dumps(argv)],
        cwd=tmp,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{argv[0]} still running after {TIMEOUT_S} s (blocked on a FIFO?)")
    return proc.returncode, err.decode(errors="replace"), int(rss_file.read_text()) * 1024


@pytest.mark.parametrize(("target", "command", "damage"), ROWS)
def test_bad_file_is_refused_in_one_line(
    target: str,
    command: str,
    damage: str,
    pristine_run: Path,
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    shutil.copytree(pristine_run, run, copy_function=os.link)  # hard links: fast
    _user_files(tmp_path)
    path = tmp_path / target.removeprefix("tmp/") if target.startswith("tmp/") else run / target
    path.unlink()
    make, expected = DAMAGES[damage]
    if target == "tmp/own.npz" and damage == "sparse 3 GiB":
        # npz: data has no size cap (inputs past 256 MiB are read by rows, never whole):
        # the zeros are refused as not a zip, after reading only the file's end
        expected = "is not a readable .npz file"
    make(path)
    before = _snapshot(run, path.name)

    code, err, rss = _run(COMMANDS[command](run, tmp_path), tmp_path)

    lines = err.strip().splitlines()
    assert code == 2, err
    assert 1 <= len(lines) <= 3, err
    assert "Traceback" not in err, err
    assert path.name in err and expected in err, err
    assert rss < MAX_RSS_BYTES, f"peak RSS {rss / 2**20:.0f} MiB"
    after = _snapshot(run, path.name)  # nothing in the run folder lost or changed:
    assert {name: after.get(name) for name in before} == before
    assert set(after) - set(before) <= {".lock"}  # train --resume's lock, empty
    assert path.is_symlink() or path.exists()  # the damaged entry itself left alone


def test_table_covers_the_issue() -> None:
    """Every reproduction of the issue's class 2 is a row, with all three damages."""
    issue = {
        ("model.json", c)
        for c in ("predict --array", "serve", "export", "train --resume", "predict")
    }
    issue |= {("model.json", "explain"), ("model.json", "report")}
    issue |= {(f, c) for f in ("config.json", "metrics.json") for c in ("evaluate", "compare")}
    rows = {(t, c) for t, commands in READS for c in commands}
    assert issue <= rows
    assert len(ROWS) == 3 * len(rows)


# ------------------------------------------------------------------ the reader itself


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_reader_refuses_before_reading(damage: str, tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    make, expected = DAMAGES[damage]
    make(path)
    with pytest.raises(CnnlabError) as info:
        fileio.read_json(path)
    assert expected in str(info.value)


def test_size_message_names_the_figure_and_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    sparse(path)
    with pytest.raises(CnnlabError, match=r"model\.json is 3 GiB; a JSON record is at most 16 MiB"):
        fileio.read_json(path)


def test_a_file_larger_than_it_claims_is_cut_off(tmp_path: Path) -> None:
    """/proc files report size 0 but hold bytes: the read, not fstat, must stop them."""
    kind = fileio.FileKind("a tiny file", 8)
    text = Path("/proc/self/status")
    if not text.exists() or text.stat().st_size != 0:
        pytest.skip("no /proc with zero-sized files here")
    with pytest.raises(CnnlabError, match=r"is over 8 bytes; a tiny file is at most 8 bytes"):
        fileio.read_bounded(text, kind)
    good = tmp_path / "ok"
    good.write_bytes(b"12345678")
    assert fileio.read_bounded(good, kind) == b"12345678"


def test_a_symlink_to_a_regular_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "real.json").write_text('{"a": 1}')
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    assert fileio.read_json(tmp_path / "link.json") == {"a": 1}

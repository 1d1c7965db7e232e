"""Issue 21, class 3: memory that valid-looking inputs claim, bounded before allocation.

One table, a row per reproduction and its variants, each run as the real CLI in a
subprocess whose peak RSS (``RUSAGE_CHILDREN``) and wall time are bounded (safety limits,
not timings). A refused row expects exit 2, at most 3 stderr lines, no traceback, the
figure and the limit named, and its folders as they were; an accepted row expects exit 0.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data.base import Splits

SRC = Path(__file__).resolve().parents[2] / "src"
MAX_RSS = 1.5e9  # bytes: the stated bound on every row's peak (unbounded, rows took 3.9 GB+)
SMALL_RSS = 0.7e9  # a refusal before parsing; predict on a 536 MB file (it held 2.9 GB)
MAX_SECONDS = 120  # a hang or a quadratic blow-up fails here, not a slow machine
needs_sktime = pytest.mark.skipif(
    importlib.util.find_spec("sktime") is None, reason="sktime (the .ts reader) not installed"
)
HEADER = (
    "@problemName {name}\n@timeStamps false\n@univariate {uni}\n{dims}@equalLength false\n"
    "@classLabel true a b\n@data\n"
)


def _write_ts(path: Path, lengths: list[int], channels: int = 1) -> None:
    """A .ts file of series of ``lengths`` (values 1), classes a and b in turn."""
    dims = "" if channels == 1 else f"@dimensions {channels}\n"
    uni = "true" if channels == 1 else "false"
    with path.open("w") as f:
        f.write(HEADER.format(name=path.parent.name, uni=uni, dims=dims))
        for i, n in enumerate(lengths):
            series = ",".join(["1"] * n)
            f.write(":".join([series] * channels) + (":a\n" if i % 2 else ":b\n"))


def _ucr(root: Path, name: str, train: list[int], test: list[int], channels: int = 1) -> None:
    folder = root / "ucr" / name
    folder.mkdir(parents=True)
    _write_ts(folder / f"{name}_TRAIN.ts", train, channels)
    _write_ts(folder / f"{name}_TEST.ts", test, channels)


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` and its digest: what "nothing lost" compares. A run's
    ``.lock`` is left out where it is empty: a writer takes the lock before it is refused."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and p.stat().st_size < 1 << 26
        and not (p.name == ".lock" and p.stat().st_size == 0)
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Datasets (.ts bombs and an ordinary one), a run of a 1024x1024 network, arrays."""
    from cnnlab.train.loop import TrainConfig, fit

    root = tmp_path_factory.mktemp("budget")
    short = [10] * 300
    _ucr(root, "Bomb5M", short[:299] + [5_000_000], [10] * 20)
    _ucr(root, "Bomb20M", [10] * 19_999 + [20_000_000], [10] * 20)
    _ucr(root, "BombMulti", [10] * 99 + [3_000_000], [10] * 20, channels=3)
    _ucr(root, "Long", [1_000_000] * 8, [1_000_000] * 2)
    _ucr(root, "Small", [50] * 20, [50] * 10)
    rng = np.random.default_rng(0)
    side = 1024

    def xs(n: int) -> np.ndarray:
        return rng.integers(0, 256, (n, side, side, 1), dtype=np.uint8)

    def ys(n: int) -> np.ndarray:
        return np.arange(n, dtype=np.int64) % 2

    run = root / "run"
    run.mkdir()
    model = f"Input({side},{side},1) MaxPooling2D(256) Flatten Dense(2,softmax)"
    config = TrainConfig(model=model, epochs=1, seed=1)
    fit(config, Splits(xs(4), ys(4), xs(2), ys(2), xs(2), ys(2)), run, progress=False, log=str)
    # 512 MiB of uint8 inputs, inside --array's documented limit; sparse, so quick to make
    big = np.lib.format.open_memmap(root / "x512.npy", "w+", np.uint8, (511, side, side, 1))
    big[::50] = 200
    big.flush()
    del big
    np.save(root / "x4.npy", xs(4))
    return root


@dataclass(frozen=True)
class Row:
    name: str
    args: list[str]  # after "cnnlab"; {root} is the world's folder
    refused: tuple[str, ...] | None  # words the one line must hold; None: accepted
    max_rss: float = MAX_RSS  # tighter where the point is a peak far under the file's size


ROWS = [
    # .ts padding bombs: refused from the streamed value counts, before sktime parses
    Row(
        "ts-5M",
        ["data-train", "ucr:Bomb5M"],
        ("padding 320 series", "5,000,000", "6.4 GB"),
        SMALL_RSS,
    ),
    Row(
        "ts-20M",
        ["data-train", "ucr:Bomb20M"],
        ("padding 20,020 series", "20,000,000", "1,601.6 GB"),
        SMALL_RSS,
    ),
    Row(
        "ts-multichannel",
        ["data-train", "ucr:BombMulti"],
        ("padding 120 series", "9,000,000", "4.3 GB"),
        SMALL_RSS,
    ),
    Row(
        "ts-small-limit",
        ["data-train", "ucr:Small", "--max-memory-gb", "1e-7"],
        ("parsing", "100 bytes"),
    ),
    # networks that fit one example but not a batch (of 16: the series recipe's batch for
    # ucr:Small's 20 series would be 2)
    Row(
        "conv2d-190000",
        [
            "train",
            "--model",
            "Input(28,28,1) Conv2D(190000,3) GlobalAveragePooling2D Dense(2,softmax)",
            "--batch-size",
            "16",
        ],
        ("training model on batches of 16", "--batch-size"),
    ),
    Row(
        "conv1d-wide",
        [
            "train",
            "--model",
            "Input(1000,1) Conv1D(100000,3) GlobalAveragePooling1D Dense(2,softmax)",
            "--batch-size",
            "16",
        ],
        ("training model on batches", "GB"),
    ),
    Row(
        "conv3d-wide",
        [
            "train",
            "--model",
            "Input(8,40,40,1) Conv3D(10000,3) GlobalAveragePooling3D Dense(2,softmax)",
            "--batch-size",
            "16",
        ],
        ("training model on batches", "GB"),
    ),
    Row(
        "small-net-batch-limit",
        [
            "train",
            "--model",
            "Input(50,1) Conv1D(8,3) Flatten Dense(2,softmax)",
            "--batch-size",
            "16",
            "--max-memory-gb",
            "1e-4",
        ],
        ("on batches of 16", "--batch-size"),
    ),
    Row("fcn1d-small-1e6", ["train", "--model", "fcn1d_small", "--data", "ucr:Long"], ("GB",)),
    # receptive: linear in the input length
    Row(
        "receptive-60000",
        [
            "receptive",
            "--model",
            "Input(60000,1) Conv1D(1,3) "
            "MaxPooling1D(2) Conv1D(1,3) GlobalAveragePooling1D Dense(2,softmax)",
        ],
        None,
    ),
    Row(
        "receptive-1e6",
        [
            "receptive",
            "--model",
            "Input(1000000,1) Conv1D(1,3) GlobalAveragePooling1D Dense(2,softmax)",
        ],
        None,
    ),
    Row(
        "receptive-2d",
        [
            "receptive",
            "--model",
            "Input(4000,4000,1) Conv2D(1,3,dilation_rate=2) GlobalMaxPooling2D Dense(2,softmax)",
        ],
        None,
    ),
    # predict --array: a chunk at a time over the mapped file
    Row("array-512MiB", ["predict", "{root}/run", "--array", "{root}/x512.npy"], None, SMALL_RSS),
    Row("array-small", ["predict", "{root}/run", "--array", "{root}/x4.npy", "--json"], None),
    Row(
        "array-limit",
        ["predict", "{root}/run", "--array", "{root}/x4.npy", "--max-memory-gb", "1e-5"],
        ("predicting with", "chunks of 1", "MB", "10,000 bytes", "--max-memory-gb"),
    ),
    Row("evaluate-limit", ["evaluate", "{root}/run", "--max-memory-gb", "1e-5"], ("evaluating",)),
]


def _argv(row: Row, root: Path) -> list[str]:
    args = [a.replace("{root}", str(root)) for a in row.args]
    if args[0] == "data-train":  # a dataset loaded as train loads it, on a tiny network
        data = args[1]
        args = ["train", "--data", data, "--model", "fcn1d_small", *args[2:]]
    if args[0] == "train":
        args += ["--data-dir", str(root), "--epochs", "1", "--out", str(root / "out")]
        if "--data" not in args:
            args += ["--data", "ucr:Small"]
    return args


_SCRIPT = (
    "import resource, subprocess, sys\n"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout={t})\n"
    "sys.stdout.write(p.stdout[-4000:]); sys.stderr.write(p.stderr)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
    "sys.exit(p.returncode)\n"
)


def _run(argv: list[str], cwd: Path) -> tuple[int, str, str, int]:
    """(exit code, stdout, stderr, peak RSS in bytes) of ``cnnlab argv`` in a fresh process;
    measured by a parent of its own, so that this test process's peak does not count."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    cmd = [sys.executable, "-m", "cnnlab.cli", *argv]
    script = _SCRIPT.format(t=MAX_SECONDS)
    p = subprocess.run(
        [sys.executable, "-c", script, *cmd],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=MAX_SECONDS + 30,
    )
    out, _, rss = p.stdout.rstrip("\n").rpartition("\n")
    return p.returncode, out, p.stderr, int(rss)


@needs_sktime
@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_memory_budget(row: Row, world: Path) -> None:
    before = _tree(world / "run")
    code, _out, err, rss = _run(_argv(row, world), world)
    assert rss < row.max_rss, f"peak RSS {rss / 1e9:.2f} GB"
    assert "Traceback" not in err, err[-2000:]
    assert _tree(world / "run") == before  # a run folder is as its last good write left it
    assert not (world / "out").exists()  # a refused train leaves no folder behind
    if row.refused is None:
        assert code == 0, err[-2000:]
        return
    lines = err.strip().splitlines()
    assert code == 2 and 1 <= len(lines) <= 3, err
    assert "needs" in lines[-1] and "the limit is" in lines[-1], lines[-1]
    for word in row.refused:
        assert word in lines[-1], lines[-1]


def test_array_predictions_match_the_whole_array(world: Path) -> None:
    """Chunked predictions equal the ones the whole array gives at once."""
    from cnnlab.cli.npy import array_probs, open_npy
    from cnnlab.serving.predict import Predictor

    predictor = Predictor.from_run(world / "run")
    x = open_npy(world / "x4.npy")
    whole = predictor.predict_array(np.load(world / "x4.npy"))
    assert isinstance(x, np.memmap)
    limit = int(0.05e9)  # room for two inputs' maps (12.6 MB each, x 2): chunks of 2
    np.testing.assert_allclose(array_probs(predictor, x, limit), whole, atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_value_counts_across_chunk_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """One count per case, whatever the reads cut: values = ',' and ':' on the line."""
    from cnnlab.data import ts_budget

    lengths = [3, 1, 40, 2, 17]
    path = tmp_path / "X_TRAIN.ts"
    _write_ts(path, lengths, channels=2)
    with path.open("a") as f:
        f.write("\n\n1,2,3:4,5,6:a")  # blank lines hold no case; the last has no newline
    monkeypatch.setattr(ts_budget, "CHUNK", chunk)
    counts = ts_budget.value_counts(path, 1 << 20)
    assert counts.tolist() == [2 * n for n in lengths] + [6]


@needs_sktime
def test_training_fits_its_evaluation_chunk_to_the_limit(world: Path, tmp_path: Path) -> None:
    """A batch that fits but an evaluation chunk of 1,000 that would not (38 MB against
    10 MB): the run trains, evaluating fewer series at a time, and says how many."""
    import json

    out = tmp_path / "run"
    argv = ["train", "--model", "fcn1d_small", "--data", "ucr:Small", "--epochs", "1"]
    argv += ["--data-dir", str(world), "--max-memory-gb", "0.01", "--out", str(out)]
    code, _out, err, _rss = _run(argv, world)
    assert code == 0, err[-2000:]
    chunk = json.loads((out / "config.json").read_text())["config"]["eval_batch_size"]
    assert 1 < chunk < 1000

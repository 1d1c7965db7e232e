"""Seconds per epoch of ``fcn1d`` on JapaneseVowels: cnnlab against the chapter's Keras stack.

The same network (Wang et al. 2017's FCN: three Conv1D + BatchNormalization + ReLU blocks of
128, 256, 128 filters with kernels 8, 5, 3, ``same``; global average pooling; Dense softmax),
the same data and split (cnnlab's loader: JapaneseVowels padded to 29 steps, the validation
quarter drawn stratified with seed 42 from TRAIN), batch 16, Adam, a training pass plus a
validation pass per epoch, timed as Keras prints it; the median over the epochs after the
first. Each side is a separate process, one after the other.

Usage (cnnlab's venv): python benchmarks/bench_fcn1d.py [--epochs 5] [--out DIR]
``run_bench.py`` calls :func:`run` and adds the row to ``bench.md``. The Keras side runs this
same file with ``--keras-worker`` in ``benchmarks/.venv-keras``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KERAS_PY = HERE / ".venv-keras" / "bin" / "python"
CNNLAB = Path(sys.executable).with_name("cnnlab")
DATASET = "JapaneseVowels"
BATCH = 16


def median_after_first(seconds: list[float]) -> float:
    """The typical epoch: the median of those after the first (tracing, warm-up)."""
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def keras_worker(npz: Path, epochs: int, out: Path) -> None:
    """Train fcn1d in Keras on the arrays of ``npz``; write the epoch seconds to ``out``."""
    import tensorflow as tf
    from tensorflow import keras
    from tensorflow.keras import layers

    tf.random.set_seed(42)
    d = np.load(npz)
    k = int(d["classes"])
    model = keras.Sequential([keras.Input(d["x_train"].shape[1:])])
    for filters, kernel in ((128, 8), (256, 5), (128, 3)):
        model.add(layers.Conv1D(filters, kernel, padding="same"))
        model.add(layers.BatchNormalization(momentum=0.9))
        model.add(layers.ReLU())
    model.add(layers.GlobalAveragePooling1D())
    model.add(layers.Dense(k, activation="softmax"))
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    seconds: list[float] = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            seconds.append(time.perf_counter() - self.start)

    hot = keras.utils.to_categorical
    model.fit(
        d["x_train"],
        hot(d["y_train"], k),
        batch_size=BATCH,
        epochs=epochs,
        validation_data=(d["x_val"], hot(d["y_val"], k)),
        callbacks=[EpochTimer()],
        verbose=2,
    )
    info = {"tensorflow": tf.__version__, "keras": keras.__version__}
    info["params"] = model.count_params()
    out.write_text(json.dumps({"epoch_seconds": seconds, **info}, indent=2))


def _arrays(work: Path) -> Path:
    from cnnlab.data.datasets import load_dataset

    ds = load_dataset(f"ucr:{DATASET}", None, 42)
    s = ds.splits
    path = work / "japanese_vowels.npz"
    np.savez(path, x_train=s.x_train, y_train=s.y_train, x_val=s.x_val, y_val=s.y_val,
             classes=len(ds.classes))  # fmt: skip
    return path


def _call(cmd: list[str], log: Path) -> None:
    print(f"$ {' '.join(map(str, cmd))}", flush=True)
    with log.open("w") as out:
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    if rc != 0:
        tail = log.read_text()[-2000:]
        raise SystemExit(f"bench_fcn1d: {cmd[0]} failed ({rc}); log {log}:\n{tail}")


def run(epochs: int, work: Path) -> dict[str, Any]:
    """Both sides, one after the other; seconds per epoch and the ratio cnnlab / Keras."""
    from cnnlab.train import runs

    work.mkdir(parents=True, exist_ok=True)
    if not KERAS_PY.exists():
        raise SystemExit(f"bench_fcn1d: {KERAS_PY} missing; `make bench` creates it")
    keras_json = work / "keras_fcn1d.json"
    worker = [str(KERAS_PY), str(Path(__file__).resolve()), "--keras-worker", str(_arrays(work))]
    _call([*worker, "--epochs", str(epochs), "--out", str(keras_json)], work / "keras_fcn1d.log")
    keras = json.loads(keras_json.read_text())
    run_dir = work / "cnnlab_fcn1d"
    cmd = [str(CNNLAB), "train", "--model", "fcn1d", "--data", f"ucr:{DATASET}", "--epochs",
           str(epochs), "--patience", str(epochs), "--batch-size", str(BATCH), "--seed", "42",
           "--quiet", "--out", str(run_dir)]  # fmt: skip
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    _call(cmd, work / "cnnlab_fcn1d.log")
    mine = [float(r["seconds"]) for r in runs.read_history(run_dir / "history.csv")]
    k, c = median_after_first(keras["epoch_seconds"]), median_after_first(mine)
    return {
        "dataset": DATASET,
        "epochs": epochs,
        "batch_size": BATCH,
        "keras": keras | {"seconds_per_epoch": k},
        "cnnlab": {"epoch_seconds": mine, "seconds_per_epoch": c},
        "ratio": c / k,
        "threads": os.cpu_count(),
    }


def row(r: dict[str, Any]) -> str:
    """The bench.md row: seconds per epoch on each side and the ratio."""
    return (
        f"| fcn1d on {r['dataset']}, s/epoch (batch {r['batch_size']}, {r['epochs']} epochs) "
        f"| {r['keras']['seconds_per_epoch']:.3f} | {r['cnnlab']['seconds_per_epoch']:.3f} "
        f"| {r['ratio']:.2f} |"
    )


def markdown(r: dict[str, Any]) -> str:
    """A small table: the header and :func:`row`."""
    return "| measurement | Keras/TF | cnnlab | ratio |\n|---|---:|---:|---:|\n" + row(r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--keras-worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.keras_worker is not None:
        keras_worker(args.keras_worker, args.epochs, args.out)
        return
    r = run(args.epochs, HERE / ".work" / "fcn1d")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_fcn1d.json").write_text(json.dumps(r, indent=2))
    print(markdown(r))


if __name__ == "__main__":
    main()

"""Seconds per epoch of ``fcn1d`` or ``resnet1d`` on JapaneseVowels: cnnlab against Keras.

The same network (Wang et al. 2017's FCN: three Conv1D + BatchNormalization + ReLU blocks of
128, 256, 128 filters with kernels 8, 5, 3, ``same``; global average pooling; Dense softmax;
or their ResNet, ``--model resnet1d``: three residual blocks of 64, 128, 128 filters, each
Conv1D 8, 5, 3 + BatchNormalization, a 1x1 Conv1D + BatchNormalization shortcut where the
width changes, BatchNormalization alone where not, Add, ReLU; built in Keras' functional
API as cnnlab's ``resnet1d`` graph is), the same data and split (cnnlab's loader:
JapaneseVowels padded to 29 steps, the validation quarter drawn stratified with seed 42 from
TRAIN), batch 16, Adam, a training pass plus a validation pass per epoch, timed as Keras
prints it; the median over the epochs after the first of each process. Each side is a
separate process; the two are interleaved (``--rounds``, alternating which goes first) and
the load average is recorded around each.

Usage (cnnlab's venv): python benchmarks/bench_fcn1d.py [--model fcn1d] [--epochs 5]
    [--rounds 2] [--out DIR]
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

# The environment as given, before importing cnnlab sets its OpenMP wait policy: each side
# runs in it (plus what the side names), so Keras and an older cnnlab see no cnnlab setting.
GIVEN_ENV = dict(os.environ)
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KERAS_PY = HERE / ".venv-keras" / "bin" / "python"
CNNLAB = Path(sys.executable).with_name("cnnlab")
DATASET = "JapaneseVowels"
BATCH = 16
MODELS = ("fcn1d", "resnet1d")


def keras_network(model: str, shape: tuple[int, ...], classes: int) -> Any:
    """``fcn1d`` or ``resnet1d`` in Keras, layer for layer as cnnlab's templates (BN momentum
    0.9, as cnnlab's series networks)."""
    from tensorflow import keras
    from tensorflow.keras import layers

    def conv_bn(h: Any, filters: int, kernel: int) -> Any:
        h = layers.Conv1D(filters, kernel, padding="same")(h)
        return layers.BatchNormalization(momentum=0.9)(h)

    inputs = keras.Input(shape)
    h = inputs
    if model == "fcn1d":
        for filters, kernel in ((128, 8), (256, 5), (128, 3)):
            h = layers.ReLU()(conv_bn(h, filters, kernel))
    else:
        width = shape[-1]
        for filters in (64, 128, 128):
            x = layers.ReLU()(conv_bn(h, filters, 8))
            x = layers.ReLU()(conv_bn(x, filters, 5))
            x = conv_bn(x, filters, 3)
            if width != filters:
                short = conv_bn(h, filters, 1)
            else:
                short = layers.BatchNormalization(momentum=0.9)(h)
            h, width = layers.ReLU()(layers.Add()([x, short])), filters
    h = layers.GlobalAveragePooling1D()(h)
    return keras.Model(inputs, layers.Dense(classes, activation="softmax")(h))


def keras_worker(npz: Path, epochs: int, out: Path, model_name: str = "fcn1d") -> None:
    """Train the network in Keras on the arrays of ``npz``; write the epoch seconds to ``out``."""
    import tensorflow as tf
    from tensorflow import keras

    tf.random.set_seed(42)
    d = np.load(npz)
    k = int(d["classes"])
    model = keras_network(model_name, d["x_train"].shape[1:], k)
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


def _call(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    print(f"$ {' '.join(map(str, cmd))}", flush=True)
    with log.open("w") as out:
        env = GIVEN_ENV | (env or {})
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    if rc != 0:
        tail = log.read_text()[-2000:]
        raise SystemExit(f"bench_fcn1d: {cmd[0]} failed ({rc}); log {log}:\n{tail}")


# libgomp's own default wait (300,000 spins), pinned explicitly for the spinning row
# (the default row sets no policy either): set --rounds to see the noise between them.
SPINNING = {"GOMP_SPINCOUNT": "300000"}


def _keras(worker: list[str], epochs: int, work: Path, tag: str, model: str) -> list[float]:
    out = work / f"keras_{model}_{tag}.json"
    cmd = [*worker, "--model", model, "--epochs", str(epochs), "--out", str(out)]
    _call(cmd, work / f"keras_{model}_{tag}.log")
    keras: dict[str, Any] = json.loads(out.read_text())
    (work / f"keras_{model}.json").write_text(json.dumps(keras))
    return [float(v) for v in keras["epoch_seconds"]]


def _cnnlab(
    epochs: int, work: Path, tag: str, model: str, env: dict[str, str] | None = None
) -> list[float]:
    import shutil

    from cnnlab.train import runs

    run_dir = work / f"cnnlab_{model}_{tag}"
    cmd = [str(CNNLAB), "train", "--model", model, "--data", f"ucr:{DATASET}", "--epochs",
           str(epochs), "--patience", str(epochs), "--batch-size", str(BATCH), "--seed", "42",
           "--quiet", "--out", str(run_dir)]  # fmt: skip
    if run_dir.exists():
        shutil.rmtree(run_dir)
    _call(cmd, work / f"cnnlab_{model}_{tag}.log", env)
    return [float(r["seconds"]) for r in runs.read_history(run_dir / "history.csv")]


def run(
    epochs: int,
    work: Path,
    rounds: int = 2,
    spinning: bool = True,
    other: Path | None = None,
    model: str = "fcn1d",
) -> dict[str, Any]:
    """Keras and cnnlab interleaved, ``rounds`` times (the order alternates, so a drift of
    the machine's speed falls on both); seconds per epoch (the median of each process's
    epochs after its first, over every round) and the ratio cnnlab / Keras. ``spinning``
    adds cnnlab with libgomp's default wait policy to every round; ``other`` (a checkout of
    another commit) adds cnnlab imported from ``other/src``: before and after a change."""
    work.mkdir(parents=True, exist_ok=True)
    if not KERAS_PY.exists():
        raise SystemExit(f"bench_fcn1d: {KERAS_PY} missing; `make bench` creates it")
    worker = [str(KERAS_PY), str(Path(__file__).resolve()), "--keras-worker", str(_arrays(work))]
    sides: dict[str, list[list[float]]] = {
        "keras": [], "cnnlab": [], "cnnlab_spinning": [], "cnnlab_other": []
    }  # fmt: skip
    loads = [os.getloadavg()[0]]
    for r in range(rounds):
        order = ["keras", "cnnlab"] if r % 2 == 0 else ["cnnlab", "keras"]
        extra = (["cnnlab_spinning"] if spinning else []) + (["cnnlab_other"] if other else [])
        for side in order + extra:
            if side == "keras":
                sides[side].append(_keras(worker, epochs, work, f"r{r}", model))
            else:
                env = SPINNING if side == "cnnlab_spinning" else None
                if side == "cnnlab_other":
                    env = {"PYTHONPATH": str(Path(other or ".").resolve() / "src")}
                sides[side].append(_cnnlab(epochs, work, f"{side}_r{r}", model, env))
            loads.append(os.getloadavg()[0])
    keras = json.loads((work / f"keras_{model}.json").read_text())
    per = {k: [t for run in v for t in run[1:]] for k, v in sides.items() if v}
    med = {k: statistics.median(v) for k, v in per.items()}
    out: dict[str, Any] = {
        "model": model,
        "dataset": DATASET,
        "epochs": epochs,
        "rounds": rounds,
        "batch_size": BATCH,
        "keras": {k: keras[k] for k in ("tensorflow", "keras", "params")}
        | {"epoch_seconds": sides["keras"], "seconds_per_epoch": med["keras"]},
        "cnnlab": {"epoch_seconds": sides["cnnlab"], "seconds_per_epoch": med["cnnlab"]},
        "ratio": med["cnnlab"] / med["keras"],
        "threads": os.cpu_count(),
        "load_average_1min": loads,
    }
    for side, env in (("cnnlab_spinning", SPINNING), ("cnnlab_other", {"src": str(other)})):
        if sides[side]:
            out[side] = {
                "epoch_seconds": sides[side],
                "seconds_per_epoch": med[side],
                "ratio": med[side] / med["keras"],
                "env": env,
            }
    return out


def row(r: dict[str, Any]) -> str:
    """The bench.md row: seconds per epoch on each side and the ratio."""
    return (
        f"| {r.get('model', 'fcn1d')} on {r['dataset']}, s/epoch "
        f"(batch {r['batch_size']}, {r['epochs']} epochs) "
        f"| {r['keras']['seconds_per_epoch']:.3f} | {r['cnnlab']['seconds_per_epoch']:.3f} "
        f"| {r['ratio']:.2f} |"
    )


def markdown(r: dict[str, Any]) -> str:
    """A small table: the header, :func:`row`, and the spinning row when measured."""
    out = "| measurement | Keras/TF | cnnlab | ratio |\n|---|---:|---:|---:|\n" + row(r)
    for side, what in (("cnnlab_spinning", "libgomp's spinning wait"), ("cnnlab_other", "")):
        if side in r:
            what = what or f"cnnlab from {r[side]['env']['src']}"
            out += (
                f"\n| the same, {what} | {r['keras']['seconds_per_epoch']:.3f} | "
                f"{r[side]['seconds_per_epoch']:.3f} | {r[side]['ratio']:.2f} |"
            )
    loads = ", ".join(f"{v:.2f}" for v in r.get("load_average_1min", []))
    return out + f"\n\nload average (1 min) before and after each process: {loads}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=MODELS, default="fcn1d")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2, help="Keras and cnnlab, interleaved")
    ap.add_argument("--no-spinning", action="store_true", help="skip the spinning-wait row")
    ap.add_argument("--other", type=Path, default=None, help="also cnnlab from OTHER/src")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--keras-worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.keras_worker is not None:
        keras_worker(args.keras_worker, args.epochs, args.out, args.model)
        return
    work = HERE / ".work" / args.model
    r = run(args.epochs, work, args.rounds, not args.no_spinning, args.other, args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "bench_fcn1d.json" if args.model == "fcn1d" else f"bench_{args.model}.json"
    (args.out / name).write_text(json.dumps(r, indent=2))
    print(markdown(r))


if __name__ == "__main__":
    main()

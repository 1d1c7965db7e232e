"""The chapter's cases in Keras/TensorFlow, timed: the reference ``make bench`` compares with.

Runs in its own virtual environment (``benchmarks/.venv-keras``: tensorflow-cpu, keras,
scikit-learn; TensorFlow is never a cnnlab dependency) and imports nothing from cnnlab.
The code is the chapter's (section 14.3, Case 1, 2 or 3 by ``--case``): the same seeds,
scaling, stratified split, model, ``compile``, callbacks and
``fit(batch_size=32, validation_data=...)``. The only changes: MNIST is read from
``$CNNLAB_DATA/mnist`` (the IDX files, parsed here) instead of ``keras.datasets`` (no
download), ``--epochs`` can cap the run, and a callback records the wall time of every
epoch (training plus validation, as Keras prints it).

``--model-file X.keras`` trains that file's network (freshly initialised) with the same
recipe instead (the keras-zoo row).

Usage: python keras_chapter.py --json OUT.json [--case 1] [--model-file X.keras]
[--epochs 200] [--data DIR] [--workdir DIR]
Writes seconds per epoch, the run's training duration, peak resident memory
(``ru_maxrss``), epochs run and the test accuracy of the best (lowest val_loss) model.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import resource
import struct
import time
from pathlib import Path

import numpy as np


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a uint8 array."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_data(folder: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """What ``keras.datasets.mnist.load_data()`` returns, from local files."""

    def find(name: str) -> Path:
        for cand in (folder / f"{name}.gz", folder / name):
            if cand.is_file():
                return cand
        raise SystemExit(f"keras_chapter: {name} not found in {folder}")

    return (
        (read_idx(find("train-images-idx3-ubyte")), read_idx(find("train-labels-idx1-ubyte"))),
        (read_idx(find("t10k-images-idx3-ubyte")), read_idx(find("t10k-labels-idx1-ubyte"))),
    )


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--data", type=Path, default=None, help="folder holding mnist/")
    ap.add_argument("--workdir", type=Path, default=Path("."), help="where best_model.keras goes")
    ap.add_argument("--case", type=int, choices=(1, 2, 3), default=1, help="the chapter's case")
    ap.add_argument(
        "--model-file", type=Path, default=None,
        help="a .keras file: its network, freshly initialised, instead of a case",
    )  # fmt: skip
    args = ap.parse_args()
    data_dir = args.data or Path(os.environ.get("CNNLAB_DATA", "."))

    # --- the chapter's code, from here on ---
    from sklearn.model_selection import train_test_split
    from tensorflow import keras
    from tensorflow.keras import layers

    seed_value = 42
    random.seed(seed_value)
    np.random.seed(seed_value)  # noqa: NPY002 (the chapter's own call; the split uses it)
    import tensorflow as tf

    tf.random.set_seed(seed_value)

    (X_train_val, y_train_val), (X_test, y_test) = load_data(data_dir / "mnist")
    X_train_val, X_test = X_train_val.astype("float32") / 255, X_test.astype("float32") / 255
    X_train_val = X_train_val[:, :, :, np.newaxis]
    X_test = X_test[:, :, :, np.newaxis]
    X_train, X_val, y_train, y_val = train_test_split(
        X_train_val, y_train_val, stratify=y_train_val, test_size=0.25
    )
    y_train_1_hot = keras.utils.to_categorical(y_train, num_classes=10)
    y_val_1_hot = keras.utils.to_categorical(y_val, num_classes=10)
    y_test_1_hot = keras.utils.to_categorical(y_test, num_classes=10)

    if args.model_file is not None:  # the same network, with fresh weights
        mnist_model = keras.models.clone_model(keras.models.load_model(str(args.model_file)))
    elif args.case == 1:
        mnist_model = keras.Sequential(
            [
                layers.Conv2D(16, 3, activation="relu", input_shape=X_train[0].shape),
                layers.MaxPooling2D(),
                layers.Conv2D(64, 3, activation="relu"),
                layers.MaxPooling2D(),
                layers.Flatten(),
                layers.Dropout(0.25),
                layers.Dense(32, activation="relu"),
                layers.Dropout(0.25),
                layers.Dense(10, activation="softmax"),
            ]
        )
    elif args.case == 2:
        mnist_model = keras.Sequential(
            [
                layers.Conv2D(32, 3, activation="relu", input_shape=X_train[0].shape),
                layers.MaxPooling2D(),
                layers.Conv2D(10, 3, activation="relu"),
                layers.MaxPooling2D(),
                layers.GlobalAveragePooling2D(),
                layers.Softmax(),
            ]
        )
    else:
        mnist_model = keras.Sequential(
            [
                layers.Conv2D(16, 3, activation="relu", input_shape=X_train[0].shape),
                layers.MaxPooling2D(),
                layers.Conv2D(64, 3, activation="relu"),
                layers.MaxPooling2D(),
                layers.GlobalAveragePooling2D(),
                layers.Dense(10, activation="softmax"),
            ]
        )
    mnist_model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            seconds.append(time.perf_counter() - self.start)

    seconds: list[float] = []
    best_path = args.workdir / "best_model.keras"
    my_callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=5),
        keras.callbacks.ModelCheckpoint(
            filepath=str(best_path), monitor="val_loss", save_best_only=True, verbose=1
        ),
        EpochTimer(),
    ]
    start = time.time()
    history = mnist_model.fit(
        x=X_train,
        y=y_train_1_hot,
        batch_size=32,
        epochs=args.epochs,
        validation_data=(X_val, y_val_1_hot),
        callbacks=my_callbacks,
        verbose=2,
    )
    end = time.time()
    training_duration = end - start
    print(f"training duration = {training_duration:.3f}")
    best_mnist_model = keras.models.load_model(str(best_path))
    loss, accuracy = best_mnist_model.evaluate(X_test, y_test_1_hot, verbose=0)
    print(f"Test accuracy of the model with the lowest loss (the best model)= {accuracy:.4f}")
    # --- end of the chapter's code ---

    result = {
        "stack": f"Keras {keras.__version__} on TensorFlow {tf.__version__}",
        "model": str(args.model_file.name) if args.model_file else f"case{args.case}",
        "python": platform.python_version(),
        "epochs_run": len(history.history["loss"]),
        "epoch_seconds": seconds,
        "training_duration": training_duration,
        "test_accuracy": float(accuracy),
        "test_loss": float(loss),
        "val_accuracy": [float(v) for v in history.history["val_accuracy"]],
        "peak_rss_mib": peak_rss_mib(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The RGB networks of ``profile_step.py`` in Keras/TensorFlow: milliseconds per training step.

Runs in ``benchmarks/.venv-keras`` and imports nothing from cnnlab. Each network is built
here in Keras code, layer for layer what ``profile_step.py`` builds in cnnlab:

- ``cifar_cnn``: Keras' classic CIFAR-10 example, 32x32x3 (1,250,858 weights);
- ``vgg_bn``: three blocks of Conv 3x3 ``same`` + BatchNormalization + ReLU + MaxPooling
  (32, 64, 128 maps), global average pooling, 64x64x3;
- ``resnet_small``: cnnlab's residual template at 32x32x3 (a 3x3 stem of 16 maps, three
  residual blocks of two Conv + BatchNormalization, 16/32/64 maps).

Each is compiled as the chapter compiles (Adam, lr 1e-3, epsilon 1e-7, cross-entropy,
accuracy) and trained with ``fit(batch_size=32)`` on random images; a step is an epoch's
time over its batches, the median of the epochs after the first.

Usage: python keras_rgb.py --json OUT.json [--nets cifar_cnn vgg_bn resnet_small]
[--batches 60] [--epochs 3]

``--fit-npz DATA.npz`` instead trains one network (``--nets NAME``) for ``--epochs`` on an
``.npz`` of uint8 images the way a Keras user's script does (``bench_rgb_memory.py`` measures
its peak memory from outside): pixels to float32 / 255, a stratified 75/25 split of the
training images (seeded, as the chapter's recipe), ``fit(batch_size=32)`` with the
validation data, then the test accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

SHAPES = {"cifar_cnn": (32, 32, 3), "vgg_bn": (64, 64, 3), "resnet_small": (32, 32, 3)}


def build(name: str) -> Any:
    from tensorflow import keras
    from tensorflow.keras import layers as kl

    inp = keras.Input(SHAPES[name])
    if name == "cifar_cnn":
        h = kl.Conv2D(32, 3, padding="same", activation="relu")(inp)
        h = kl.Conv2D(32, 3, activation="relu")(h)
        h = kl.Dropout(0.25)(kl.MaxPooling2D(2)(h))
        h = kl.Conv2D(64, 3, padding="same", activation="relu")(h)
        h = kl.Conv2D(64, 3, activation="relu")(h)
        h = kl.Dropout(0.25)(kl.MaxPooling2D(2)(h))
        h = kl.Dropout(0.5)(kl.Dense(512, activation="relu")(kl.Flatten()(h)))
    elif name == "vgg_bn":
        h = inp
        for filters in (32, 64, 128):
            h = kl.BatchNormalization()(kl.Conv2D(filters, 3, padding="same")(h))
            h = kl.MaxPooling2D(2)(kl.Activation("relu")(h))
        h = kl.GlobalAveragePooling2D()(h)
    else:

        def conv_bn(x: Any, filters: int, kernel: int, strides: int = 1) -> Any:
            x = kl.Conv2D(filters, kernel, strides=strides, padding="same")(x)
            return kl.BatchNormalization()(x)

        h = kl.ReLU()(conv_bn(inp, 16, 3))
        width = 16
        for b, filters in enumerate((16, 32, 64)):
            stride = 1 if b == 0 else 2
            x = conv_bn(kl.ReLU()(conv_bn(h, filters, 3, stride)), filters, 3)
            short = h if stride == 1 and width == filters else conv_bn(h, filters, 1, stride)
            h, width = kl.ReLU()(kl.Add()([x, short])), filters
        h = kl.GlobalAveragePooling2D()(h)
    out = kl.Dense(10, activation="softmax")(h)
    model = keras.Model(inp, out)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3, epsilon=1e-7),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def step_ms(name: str, batches: int, epochs: int) -> dict[str, Any]:
    from tensorflow import keras

    rng = np.random.default_rng(0)
    x = rng.random((32 * batches, *SHAPES[name]), dtype=np.float32)
    y = rng.integers(0, 10, 32 * batches)
    model = build(name)
    seconds: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            seconds.append(time.perf_counter() - self.t)

    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=[Timer()])
    per_epoch = statistics.median(seconds[1:] if len(seconds) > 1 else seconds)
    return {"step_ms": per_epoch / batches * 1e3, "params": int(model.count_params())}


def fit_npz(name: str, path: Path, epochs: int) -> dict[str, Any]:
    """The chapter's recipe on ``path``'s images: what a Keras user's training holds."""
    from sklearn.model_selection import train_test_split

    with np.load(path) as f:
        x, y, x_test, y_test = (f[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    x, x_test = x.astype("float32") / 255, x_test.astype("float32") / 255
    x_tr, x_val, y_tr, y_val = train_test_split(x, y, test_size=0.25, random_state=42, stratify=y)
    model = build(name)
    model.fit(x_tr, y_tr, validation_data=(x_val, y_val), batch_size=32, epochs=epochs,
              verbose=0)  # fmt: skip
    _, acc = model.evaluate(x_test, y_test, batch_size=32, verbose=0)
    return {"test_accuracy": float(acc), "params": int(model.count_params())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--nets", nargs="+", default=list(SHAPES))
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--fit-npz", type=Path, default=None, help="train one net on these images")
    args = ap.parse_args()
    import tensorflow as tf

    out: dict[str, Any] = {"stack": f"TensorFlow {tf.__version__}", "load": os.getloadavg()}
    if args.fit_npz is not None:
        out["nets"] = {n: fit_npz(n, args.fit_npz, args.epochs) for n in args.nets}
    else:
        out["nets"] = {n: step_ms(n, args.batches, args.epochs) for n in args.nets}
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

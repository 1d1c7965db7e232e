"""``cnnlab train --case N`` with the engine and thread count as arguments (for run_bench.py).

Usage: python cnnlab_train.py OUT_DIR [--case 1] [--epochs 3] [--engine fast|plain]
[--threads 0] [--uint8]. Loads and prepares MNIST as ``cnnlab train`` does, trains into
OUT_DIR (a run folder: history.csv, metrics.json, ...) and prints the metrics.

``--uint8`` keeps the split images as uint8 (the same split; the fast engine scales each
batch to the same float32 values on the device): the data path that would bring the peak
memory of ``cnnlab train`` down by about 150 MiB, measured here before the CLI takes it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cnnlab import data
from cnnlab.train import ENGINES, TrainConfig, fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--case", default="1")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--engine", choices=ENGINES, default="fast")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--uint8", action="store_true", help="keep the images uint8 in memory")
    args = ap.parse_args()
    config = TrainConfig(
        case=args.case, epochs=args.epochs, engine=args.engine, threads=args.threads
    )
    mnist = data.load_mnist()
    if args.uint8:
        train_idx, val_idx = data.split_indices(mnist.y_train, config.seed, config.val_fraction)
        y = mnist.y_train.astype(np.int64)
        splits = data.Splits(
            x_train=mnist.x_train[train_idx][..., np.newaxis],
            y_train=y[train_idx],
            x_val=mnist.x_train[val_idx][..., np.newaxis],
            y_val=y[val_idx],
            x_test=mnist.x_test[..., np.newaxis],
            y_test=mnist.y_test.astype(np.int64),
        )
    else:
        splits = data.prepare(mnist, config.seed, config.val_fraction)
    del mnist  # as in `cnnlab train`, the raw arrays are gone once the splits exist
    args.out.mkdir(parents=True, exist_ok=True)
    metrics = fit(config, splits, args.out, progress=False)
    print(metrics)


if __name__ == "__main__":
    main()

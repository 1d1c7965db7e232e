"""``cnnlab train --case N`` with the engine, thread count and kernels as arguments.

Usage: python cnnlab_train.py OUT_DIR [--case 1] [--epochs 3] [--engine fast|plain]
[--threads 0] [--no-native]. Loads and prepares MNIST as ``cnnlab train`` does (uint8
images in memory), trains into OUT_DIR (a run folder: history.csv, metrics.json, ...) and
prints the metrics. ``--no-native`` runs the fast engine's Case 1 step in PyTorch
operations instead of cnnlab's C++ kernels (``TrainConfig(native=False)``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnlab import data
from cnnlab.train.loop import ENGINES, TrainConfig, fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--case", default="1")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--engine", choices=ENGINES, default="fast")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-native", action="store_true", help="no C++ kernels: PyTorch ops")
    args = ap.parse_args()
    config = TrainConfig(
        model=f"case{args.case}",
        epochs=args.epochs,
        engine=args.engine,
        threads=args.threads,
        native=not args.no_native,
    )
    splits = data.prepare(data.load_mnist(), config.seed, config.val_fraction, scaled=False)
    args.out.mkdir(parents=True, exist_ok=True)
    metrics = fit(config, splits, args.out, progress=False)
    print(metrics)


if __name__ == "__main__":
    main()

"""Peak training memory of the RGB networks: ``cnnlab train`` against the same network in Keras.

Issue 23's memory goal: peak training memory at most 0.5x of Keras' on every row. The rows
are ``profile_step.py``'s RGB networks (``cifar_cnn`` and ``resnet_small`` on 32x32x3,
``vgg_bn`` on 64x64x3). Both sides train one epoch on the same ``.npz`` of random uint8
images (10 classes; by default CIFAR-10's size at 32x32, 50,000 + 10,000), the chapter's
recipe: a stratified 75/25 split, batch 32, Adam, then the test accuracy.

- cnnlab: ``cnnlab train --model NET.json --data npz:DATA --epochs 1`` (pixels stay uint8,
  scaled batch by batch);
- Keras: ``keras_rgb.py --fit-npz DATA`` in ``benchmarks/.venv-keras``, the Keras user's
  script (``astype("float32") / 255``, ``train_test_split``, ``fit``, ``evaluate``).

Each is a fresh process; its peak resident memory is ``ru_maxrss`` from ``wait4``, measured
from outside the same way for both (:func:`run_bench.measure`). Memory moves less with the
machine's load than seconds do, but it moves (cifar_cnn: 746 MiB at load 3.4, 614 quiet,
against Keras' 2,771 and 2,769); the seconds need a quiet machine.
Results: ``benchmarks/results/bench_rgb_memory.json`` and ``.md``.

Usage: python benchmarks/bench_rgb_memory.py [--nets cifar_cnn vgg_bn resnet_small]
       [--train 50000] [--test 10000] [--train-64 20000] [--test-64 4000] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from profile_step import RGB_NAMES, rgb_networks
from run_bench import HERE, KERAS_PY, measure

from cnnlab import fileio
from cnnlab.models.files import save_description

CNNLAB = Path(sys.executable).with_name("cnnlab")
OUT = HERE / "results" / "bench_rgb_memory"
GOAL = 0.5


def images(path: Path, shape: tuple[int, ...], n_train: int, n_test: int) -> Path:
    """A random uint8 image dataset in ``path`` (written once), ten balanced classes."""
    if not path.exists():
        rng = np.random.default_rng(0)
        arrays = {
            "x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
            "y_train": np.arange(n_train) % 10,
            "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
            "y_test": np.arange(n_test) % 10,
        }
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    return path


def row(name: str, data: Path, n_images: int, work: Path) -> dict[str, Any]:
    """One network: both sides' peak memory, wall seconds and test accuracy."""
    desc = rgb_networks()[name]
    net = work / f"{name}.json"
    save_description(desc, net)
    run = work / f"run_{name}"
    cmd = [str(CNNLAB), "train", "--model", str(net), "--data", f"npz:{data}", "--epochs", "1",
           "--quiet", "--out", str(run)]  # fmt: skip
    shutil.rmtree(run, ignore_errors=True)  # a fresh run each time
    ours = measure(cmd, work / f"cnnlab_{name}.log")
    ours["test_accuracy"] = json.loads((run / "metrics.json").read_text())["test_accuracy"]
    keras_json = work / f"keras_{name}.json"
    keras_cmd = [str(KERAS_PY), str(HERE / "keras_rgb.py"), "--json", str(keras_json), "--nets",
                 name, "--fit-npz", str(data), "--epochs", "1"]  # fmt: skip
    theirs = measure(keras_cmd, work / f"keras_{name}.log")
    theirs |= json.loads(keras_json.read_text())["nets"][name]
    return {
        "data": data.name,
        "n_images": n_images,
        "cnnlab": ours,
        "keras": theirs,
        "ratio": ours["peak_rss_mib"] / theirs["peak_rss_mib"],
    }


def markdown(rows: dict[str, Any]) -> str:
    lines = [
        "| network | x_train images | cnnlab peak MiB | Keras peak MiB | ratio | goal <= 0.5x "
        "| cnnlab s | Keras s |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for name, r in rows.items():
        ok = "met" if r["ratio"] <= GOAL else "NOT met"
        lines.append(
            f"| {name} | {r['n_images']:,} | {r['cnnlab']['peak_rss_mib']:.0f} | "
            f"{r['keras']['peak_rss_mib']:.0f} | {r['ratio']:.2f}x | {ok} | "
            f"{r['cnnlab']['wall_seconds']:.0f} | {r['keras']['wall_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="+", default=list(RGB_NAMES), choices=RGB_NAMES)
    ap.add_argument("--train", type=int, default=50_000, help="32x32 training images")
    ap.add_argument("--test", type=int, default=10_000)
    ap.add_argument("--train-64", type=int, default=20_000, help="64x64 training images")
    ap.add_argument("--test-64", type=int, default=4_000)
    ap.add_argument("--work", type=Path, default=HERE / ".work" / "rgb_memory")
    args = ap.parse_args()
    if not KERAS_PY.exists():
        raise SystemExit("bench_rgb_memory: benchmarks/.venv-keras is missing (make bench)")
    args.work.mkdir(parents=True, exist_ok=True)
    rows: dict[str, Any] = {}
    for name in args.nets:
        shape = rgb_networks()[name].input_shape
        n, t = (args.train_64, args.test_64) if shape[0] == 64 else (args.train, args.test)
        data = images(args.work / f"rgb_{shape[0]}_{n}_{t}.npz", shape, n, t)
        rows[name] = row(name, data, n, args.work)
        print(markdown({name: rows[name]}).splitlines()[-1], flush=True)
    result = {"load_average_at_end": os.getloadavg(), "rows": rows}
    fileio.write_json(OUT.with_suffix(".json"), result)  # atomic: a killed run keeps the old
    fileio.write_text(OUT.with_suffix(".md"), markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()

"""Test accuracy of the 1-D and 3-D networks over seeds, through ``cnnlab train``.

- ``fcn1d`` on the shared UCR/UEA datasets (GunPoint, JapaneseVowels, BasicMotions), the
  default time-series recipe (:mod:`cnnlab.train.recipes`), one run per seed;
- ``moving3d`` against its per-frame baseline ``perframe2d`` on moving digits, with their
  parameter counts.

Seeds are the outer loop, so an interrupted run still has every dataset at the first seeds;
the run folders go under ``benchmarks/.work/timeseries/``;
``results.json`` is rewritten after each run (rows of datasets not in this run are kept)
and ``timeseries_accuracy.md`` holds the table (mean, sample standard deviation, min and
max over the finished seeds).

Usage: nice -n 10 python benchmarks/timeseries_accuracy.py [--seeds 5] [--out DIR]
    [--datasets GunPoint JapaneseVowels BasicMotions] [--clip-epochs N] [--no-clips]
``CNNLAB_DATA`` must name the folder holding ``ucr/`` (and ``mnist/`` for the clips).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CNNLAB = Path(sys.executable).with_name("cnnlab")
DATASETS = ("JapaneseVowels", "BasicMotions", "GunPoint")
PUBLISHED = {"GunPoint": 100.0, "JapaneseVowels": 99.3, "BasicMotions": None}
CLIP_MODELS = ("moving3d", "perframe2d")


def train(model: str, data: str, seed: int, out: Path, extra: list[str]) -> dict[str, Any]:
    """One ``cnnlab train`` run (skipped when its metrics.json exists); its metrics."""
    metrics = out / "metrics.json"
    if not metrics.is_file():
        cmd = [str(CNNLAB), "train", "--model", model, "--data", data, "--seed", str(seed)]
        cmd += [*extra, "--quiet", "--out", str(out)]
        print(f"$ {' '.join(cmd)}", flush=True)
        with (out.parent / f"{out.name}.log").open("w") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    result: dict[str, Any] = json.loads(metrics.read_text())
    return result


def summary(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation, min and max, in percent."""
    pct = [100 * v for v in values]
    sd = statistics.stdev(pct) if len(pct) > 1 else 0.0
    mean = statistics.fmean(pct)
    return {"n": len(pct), "mean": mean, "sd": sd, "min": min(pct), "max": max(pct)}


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    """The markdown table of every (model, dataset) with at least one finished seed."""
    lines = [
        "| model | data | seeds | test accuracy % (mean ± sd) | min-max | published | "
        "params | epochs run (mean) | best val_loss (mean) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, runs in results.items():
        if not runs:
            continue
        model, data = key.split("@", 1)
        s = summary([r["test_accuracy"] for r in runs])
        name = data.removeprefix("ucr:")
        pub = PUBLISHED.get(name)
        epochs = statistics.fmean(r["epochs_run"] for r in runs)
        val_loss = statistics.fmean(r["best_val_loss"] for r in runs)
        lines.append(
            f"| {model} | {data} | {s['n']} | {s['mean']:.1f} ± {s['sd']:.1f} | "
            f"{s['min']:.1f}-{s['max']:.1f} | {'' if pub is None else pub} | "
            f"{runs[0]['trainable_params']:,} | {epochs:.0f} | {val_loss:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--clip-epochs", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--clip-seeds", type=int, default=None, help="default: --seeds")
    ap.add_argument("--no-clips", action="store_true", help="time series only")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "timeseries")
    ap.add_argument("--work", type=Path, default=HERE / ".work" / "timeseries", help="run folders")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    jobs = [("fcn1d", f"ucr:{d}", []) for d in args.datasets]
    clip_extra = [] if args.clip_epochs is None else ["--epochs", str(args.clip_epochs)]
    if not args.no_clips:
        jobs += [(m, "moving-mnist", clip_extra) for m in CLIP_MODELS]
    # Rows of (model, dataset) pairs not in this run are kept: datasets can run one at a time.
    old = args.out / "results.json"
    results: dict[str, list[dict[str, Any]]] = json.loads(old.read_text()) if old.is_file() else {}
    results.update({f"{m}@{d}": [] for m, d, _ in jobs})
    clip_seeds = args.seeds if args.clip_seeds is None else args.clip_seeds
    start = time.perf_counter()
    for seed in range(args.seeds):
        for model, data, extra in jobs:
            if data == "moving-mnist" and seed >= clip_seeds:
                continue
            name = f"{model}_{data.replace(':', '_')}_seed{seed}"
            metrics = train(model, data, seed, args.work / name, extra)
            results[f"{model}@{data}"].append(metrics | {"seed": seed})
            (args.out / "results.json").write_text(json.dumps(results, indent=2))
            (args.out / "timeseries_accuracy.md").write_text(table(results))
            print(
                f"{model} {data} seed {seed}: test accuracy {metrics['test_accuracy']:.4f} "
                f"({metrics['epochs_run']} epochs; {time.perf_counter() - start:.0f} s so far)",
                flush=True,
            )
    print(table(results), end="")


if __name__ == "__main__":
    main()

"""Test accuracy of fcn1d, resnet1d and MiniRocket on eight archive datasets, over seeds.

- MiniRocket + ridge (:mod:`cnnlab.analysis.series_baselines`), one fit per seed, in this
  process (seconds each); its results go under ``.work/timeseries/minirocket_*.json``;
- ``fcn1d`` and ``resnet1d`` through ``cnnlab train`` with the time-series recipe
  (:mod:`cnnlab.train.recipes`: the published protocol), one run per seed;
- optionally ``moving3d`` against its per-frame baseline ``perframe2d`` on moving digits.

The eight datasets are those sktime ships (``--data ucr:NAME`` reads them where sktime
keeps them). Published figures: ``hfawaz/dl-4-tsc`` (Ismail Fawaz et al. 2019) at commit
e0233ef, ``results/results-ucr-128.csv`` (UCR 2018 archive, mean and sample sd of its 5
runs) and, for JapaneseVowels, ``results/results-mts-avg-std.csv``; BasicMotions is in
neither. Seeds are the outer loop and finished runs are skipped, so the command resumes
where it stopped and an interrupted table has every dataset at the first seeds.

Usage: nice -n 15 python benchmarks/timeseries_accuracy.py [--seeds 5] [--datasets ...]
    [--models fcn1d resnet1d] [--clips] [--out DIR]
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
# Ordered by the CNNs' cost (series x length x epochs): the cheapest finish first.
DATASETS = ("ItalyPowerDemand", "ArrowHead", "GunPoint", "BasicMotions", "JapaneseVowels",
            "OSULeaf", "ACSF1", "PLAID")  # fmt: skip
MODELS = ("fcn1d", "resnet1d")
# (mean, sd) test accuracy %, from dl-4-tsc (see the docstring); None: not published there.
PUBLISHED: dict[str, dict[str, tuple[float, float] | None]] = {
    "ACSF1": {"fcn1d": (89.8, 1.6), "resnet1d": (91.6, 2.6)},
    "ArrowHead": {"fcn1d": (84.3, 1.3), "resnet1d": (83.8, 2.4)},
    "BasicMotions": {"fcn1d": None, "resnet1d": None},
    "GunPoint": {"fcn1d": (100.0, 0.0), "resnet1d": (99.1, 0.8)},
    "ItalyPowerDemand": {"fcn1d": (96.3, 0.1), "resnet1d": (96.2, 0.3)},
    "JapaneseVowels": {"fcn1d": (99.3, 0.2), "resnet1d": (99.2, 0.3)},
    "OSULeaf": {"fcn1d": (97.9, 0.5), "resnet1d": (98.0, 0.6)},
    "PLAID": {"fcn1d": (90.4, 0.8), "resnet1d": (94.0, 0.5)},
}
CLIP_MODELS = ("moving3d", "perframe2d")


def train(
    model: str, data: str, seed: int, out: Path, extra: list[str], run: bool = True
) -> dict[str, Any] | None:
    """One ``cnnlab train`` run (skipped when its metrics.json exists); its metrics. None
    where it has not run and ``run`` is False (``--report``)."""
    metrics = out / "metrics.json"
    if not metrics.is_file() and not run:
        return None
    if not metrics.is_file():
        cmd = [str(CNNLAB), "train", "--model", model, "--data", data, "--seed", str(seed)]
        cmd += [*extra, "--quiet", "--out", str(out)]
        print(f"$ {' '.join(cmd)}", flush=True)
        with (out.parent / f"{out.name}.log").open("w") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    result: dict[str, Any] = json.loads(metrics.read_text())
    config = json.loads((out / "config.json").read_text())["config"]
    return result | {"val_fraction": config["val_fraction"], "batch_size": config["batch_size"]}


def minirocket(name: str, seed: int, work: Path) -> dict[str, Any]:
    """MiniRocket on TRAIN, scored on TEST (cached in ``work``); the result's fields."""
    path = work / f"minirocket_{name}_seed{seed}.json"
    if not path.is_file():
        from cnnlab.analysis.series_baselines import SeriesBaselineConfig, minirocket
        from cnnlab.data.ucr import load_ucr

        d = load_ucr(name)
        r = minirocket(d.x_train, d.y_train, d.x_test, d.y_test, SeriesBaselineConfig(seed=seed))
        r["train_seconds"] = r["fit_seconds"]
        path.write_text(json.dumps(r, indent=2))
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def summary(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation, min and max, in percent."""
    pct = [100 * v for v in values]
    sd = statistics.stdev(pct) if len(pct) > 1 else 0.0
    return {"n": len(pct), "mean": statistics.fmean(pct), "sd": sd, "min": min(pct),
            "max": max(pct)}  # fmt: skip


def _cell(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return "not run"
    s = summary([r["test_accuracy"] for r in runs])
    if s["n"] == 1:
        return f"{s['mean']:.1f} (1 seed)"
    return f"{s['mean']:.1f} ± {s['sd']:.1f} ({s['n']})"


def _secs(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return ""
    v = statistics.fmean(r["train_seconds"] for r in runs)
    return f"{v:.2f}" if v < 1 else f"{v:.0f}"


def _pub(pub: tuple[float, float] | None, runs: list[dict[str, Any]]) -> str:
    """The published figure, marked where 5 measured seeds are 2 points or more below."""
    if pub is None:
        return "-"
    text = f"{pub[0]:.1f} ± {pub[1]:.1f}"
    if len(runs) >= 5:
        mean = summary([r["test_accuracy"] for r in runs])["mean"]
        text += " (goal met)" if mean >= pub[0] - 2 else " (**2+ below**)"
    return text


def table(results: dict[str, list[dict[str, Any]]], datasets: list[str]) -> str:
    """One row per dataset: the CNNs beside their published figures and MiniRocket."""
    lines = [
        "| data | fcn1d % (seeds) | published FCN | resnet1d % (seeds) | published ResNet "
        "| MiniRocket % (seeds) | train s: fcn1d / resnet1d / MiniRocket | best here |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in datasets:
        runs = {m: results.get(f"{m}@ucr:{name}", []) for m in (*MODELS, "minirocket")}
        means = {m: summary([r["test_accuracy"] for r in v])["mean"] for m, v in runs.items() if v}
        best = max(means, key=lambda m: means[m]) if len(means) > 1 else "-"  # one: no contest
        if best != "-" and sum(v == means[best] for v in means.values()) > 1:
            best = "tie: " + ", ".join(m for m, v in means.items() if v == means[best])
        if best != "-" and any(len(runs[m]) < 5 for m in means):
            best += " (fewer than 5 seeds somewhere)"
        pub = PUBLISHED.get(name, {})
        secs = " / ".join(_secs(runs[m]) or "-" for m in (*MODELS, "minirocket"))
        lines.append(
            f"| {name} | {_cell(runs['fcn1d'])} | {_pub(pub.get('fcn1d'), runs['fcn1d'])} "
            f"| {_cell(runs['resnet1d'])} | {_pub(pub.get('resnet1d'), runs['resnet1d'])} "
            f"| {_cell(runs['minirocket'])} | {secs} | {best} |"
        )
    return "\n".join(lines) + "\n"


def runs_table(results: dict[str, list[dict[str, Any]]]) -> str:
    """Every trained (model, dataset): seeds, accuracy range, parameters, epochs."""
    lines = [
        "| model | data | seeds | test accuracy % (mean ± sd) | min-max | params "
        "| epochs run (mean) | best epoch (mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, runs in results.items():
        model, data = key.split("@", 1)
        if not runs or model == "minirocket":
            continue
        s = summary([r["test_accuracy"] for r in runs])
        lines.append(
            f"| {model} | {data} | {s['n']} | {s['mean']:.1f} ± {s['sd']:.1f} | "
            f"{s['min']:.1f}-{s['max']:.1f} | {runs[0]['trainable_params']:,} | "
            f"{statistics.fmean(r['epochs_run'] for r in runs):.0f} | "
            f"{statistics.fmean(r['best_epoch'] for r in runs):.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--models", nargs="*", default=list(MODELS), help="CNNs to train")
    ap.add_argument("--no-minirocket", action="store_true")
    ap.add_argument("--report", action="store_true", help="no training: the finished runs' table")
    ap.add_argument("--clips", action="store_true", help="also moving3d and perframe2d")
    ap.add_argument("--clip-epochs", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "timeseries")
    ap.add_argument("--work", type=Path, default=HERE / ".work" / "timeseries", help="run folders")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    jobs = [(m, f"ucr:{d}", []) for d in args.datasets for m in args.models]
    clip_extra = [] if args.clip_epochs is None else ["--epochs", str(args.clip_epochs)]
    if args.clips:
        jobs += [(m, "moving-mnist", clip_extra) for m in CLIP_MODELS]
    # Rows of (model, dataset) pairs not in this run are kept: datasets can run one at a time.
    old = args.out / "results.json"
    results: dict[str, list[dict[str, Any]]] = json.loads(old.read_text()) if old.is_file() else {}
    for key in [k for k in results if k.split("@")[0] in MODELS]:
        if any(r.get("val_fraction") != 0 for r in results[key]):  # an earlier recipe's rows
            del results[key]
    results.update({f"{m}@{d}": [] for m, d, _ in jobs})

    def save() -> None:
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
        text = table(results, list(DATASETS)) + "\n" + runs_table(results)
        (args.out / "timeseries_accuracy.md").write_text(text)

    start = time.perf_counter()
    if not args.no_minirocket:  # cheap: every dataset and seed first
        for name in args.datasets:
            key = f"minirocket@ucr:{name}"
            results[key] = [minirocket(name, s, args.work) | {"seed": s} for s in range(args.seeds)]
            print(f"MiniRocket {name}: {_cell(results[key])}", flush=True)
        save()
    for seed in range(args.seeds):
        for model, data, extra in jobs:
            name = f"{model}_{data.replace(':', '_')}_seed{seed}"
            metrics = train(model, data, seed, args.work / name, extra, not args.report)
            if metrics is None:
                continue
            results[f"{model}@{data}"].append(metrics | {"seed": seed})
            save()
            print(
                f"{model} {data} seed {seed}: test accuracy {metrics['test_accuracy']:.4f} "
                f"({metrics['epochs_run']} epochs; {time.perf_counter() - start:.0f} s so far)",
                flush=True,
            )
    print(table(results, list(DATASETS)), end="")


if __name__ == "__main__":
    main()

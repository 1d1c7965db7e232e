"""The time-series recipe chosen by cross-validation within TRAIN (TEST is never read).

Each dataset's TRAIN file is cut into ``--folds`` stratified folds (seeded); each fold in
turn is held out and a network trains on the rest under each candidate recipe:

- ``holdout``: the earlier recipe: a quarter of the rest held out for early stopping on
  its val_loss (patience 200, at most 1000 epochs), batch 16;
- ``published``: the published protocol (Wang et al. 2017, dl-4-tsc): all of the rest,
  batches of min(N/10, 16), 1500 epochs, the model of lowest training loss kept.

Both halve the learning rate when the training loss stalls for 50 epochs (to 1e-4). The
score is the accuracy on the held-out folds, over all TRAIN series. Results go to
``results/timeseries/recipe_cv.json`` (finished folds are skipped on a rerun) and
``recipe_cv.md``.

Usage: nice -n 15 python benchmarks/timeseries_recipe_cv.py [--datasets ArrowHead
    JapaneseVowels] [--model fcn1d] [--folds 3] [--epochs-scale 1.0]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data.base import Splits
from cnnlab.data.splits import split_indices
from cnnlab.data.ucr import load_ucr
from cnnlab.models.registry import resolve_for
from cnnlab.train.config import TrainConfig
from cnnlab.train.loop import fit
from cnnlab.train.recipes import TIME_SERIES, TIME_SERIES_HOLDOUT, settings

HERE = Path(__file__).resolve().parent
RECIPES = {"holdout": TIME_SERIES_HOLDOUT, "published": TIME_SERIES}


def folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` stratified folds of the indices of ``y`` (class by class, shuffled, dealt)."""
    rng = np.random.RandomState(seed)
    out: list[list[int]] = [[] for _ in range(k)]
    start = 0
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        for j, i in enumerate(idx):
            out[(start + j) % k].append(int(i))
        start += len(idx)  # deal the next class from where this one stopped
    return [np.array(sorted(f), dtype=np.int64) for f in out]


def one_fold(
    model: str, name: str, recipe: str, x: np.ndarray, y: np.ndarray, held: np.ndarray,
    seed: int, work: Path, scale: float,
) -> dict[str, Any]:  # fmt: skip
    """Train on TRAIN less ``held`` under ``recipe``; accuracy on ``held``."""
    rest = np.setdiff1d(np.arange(len(y)), held)
    kw = settings("series", n_train=len(rest)) | dict(RECIPES[recipe].overrides)
    if recipe == "published":
        kw["batch_size"] = settings("series", n_train=len(rest))["batch_size"]
    else:
        kw["batch_size"] = TIME_SERIES.overrides["batch_size"]
    kw["epochs"] = max(1, round(kw["epochs"] * scale))
    kw["patience"] = min(kw["patience"], kw["epochs"])
    if kw["val_fraction"]:
        tr, va = split_indices(y[rest], seed, kw["val_fraction"], what="TRAIN")
        tr, va = rest[tr], rest[va]
    else:
        tr = va = rest  # the published protocol: "validation" is the training rows
    splits = Splits(x[tr], y[tr], x[va], y[va], x[held], y[held])
    config = TrainConfig(model=model, data=f"ucr:{name}", seed=seed, threads=1, **kw)
    desc = resolve_for(model, x.shape[1:], int(y.max()) + 1)
    shutil.rmtree(work, ignore_errors=True)  # an interrupted fold starts again
    work.mkdir(parents=True)
    start = time.perf_counter()
    m = fit(config, splits, work, description=desc, progress=False, log=lambda _: None)
    return {"held": len(held), "accuracy": m["test_accuracy"], "epochs": m["epochs_run"],
            "best_epoch": m["best_epoch"], "seconds": time.perf_counter() - start}  # fmt: skip


def markdown(results: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    lines = [
        "| data (model) | recipe | folds | CV accuracy % (all TRAIN series) "
        "| per fold % | epochs run (mean) | s per fold |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, by_recipe in results.items():
        for recipe, rows in by_recipe.items():
            if not rows:
                continue
            hits = sum(r["accuracy"] * r["held"] for r in rows)
            n = sum(r["held"] for r in rows)
            per = ", ".join(f"{100 * r['accuracy']:.0f}" for r in rows)
            lines.append(
                f"| {key} | {recipe} | {len(rows)} | {100 * hits / n:.1f} | {per} "
                f"| {statistics.fmean(r['epochs'] for r in rows):.0f} "
                f"| {statistics.fmean(r['seconds'] for r in rows):.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["ArrowHead", "JapaneseVowels"])
    ap.add_argument("--model", default="fcn1d")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--only-folds", type=int, nargs="+", default=None, help="e.g. 2: one process a fold"
    )
    ap.add_argument("--epochs-scale", type=float, default=1.0, help="quick checks: < 1")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "timeseries")
    ap.add_argument("--work", type=Path, default=HERE / ".work" / "recipe_cv")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "recipe_cv.json"
    results: dict[str, dict[str, list[dict[str, Any]]]] = (
        json.loads(path.read_text()) if path.is_file() else {}
    )
    for name in args.datasets:
        data = load_ucr(name)  # TRAIN only is used below
        key = f"{name} ({args.model})"
        by_recipe = results.setdefault(key, {r: [] for r in RECIPES})
        for f, held in enumerate(folds(data.y_train, args.folds, args.seed)):
            if args.only_folds is not None and f not in args.only_folds:
                continue
            for recipe in RECIPES:
                if any(r.get("fold") == f for r in by_recipe[recipe]):
                    continue  # finished on an earlier run
                work = args.work / f"{name}_{args.model}_{recipe}_fold{f}"
                row = one_fold(args.model, name, recipe, data.x_train, data.y_train, held,
                               args.seed, work, args.epochs_scale)  # fmt: skip
                by_recipe[recipe].append(row | {"fold": f})
                by_recipe[recipe].sort(key=lambda r: r["fold"])
                path.write_text(json.dumps(results, indent=2))
                (args.out / "recipe_cv.md").write_text(markdown(results))
                print(f"{key} fold {f} {recipe}: {row}", flush=True)
    print(markdown(results), end="")


if __name__ == "__main__":
    main()

"""The chapter's starting point: hand-crafted features in conventional classifiers.

Before CNNs, one extracted features by a fixed recipe and trained a classifier on them. Two
such baselines, trained on the same stratified split as the CNNs (the chapter's 75/25 split of
the 60,000 training images, seed 42) and scored on the same 10,000 test images:

- HOG (histogram of oriented gradients, scikit-image) + logistic regression (scikit-learn);
- k-nearest neighbours on the raw pixels (scikit-learn, exhaustive "brute" search).

On a UCR/UEA dataset (``ucr:NAME``) the baselines are the time series' own, fitted on all
of TRAIN and scored on TEST (:mod:`cnnlab.analysis.series_baselines`): MiniRocket + ridge
and 1-nearest neighbour with the Euclidean distance or DTW.

Results are cached as JSON, so reports read them instead of retraining.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cnnlab import fileio
from cnnlab.analysis.series_baselines import SeriesBaselineConfig, run_series_baselines
from cnnlab.data import Splits
from cnnlab.errors import CnnlabError
from cnnlab.extras import extra, require

FORMAT = "cnnlab-baselines-1"


@dataclass(frozen=True)
class BaselineConfig:
    """Everything that decides the baselines' results; stored in the cache file."""

    seed: int = 42  # the split's seed: the same as the CNN runs'
    hog_orientations: int = 9
    # 4x4-pixel cells (7x7 of them), 2x2-cell blocks (6x6, L2-Hys): 1,296 features. Chosen
    # over 7x7-pixel cells (324 features) by validation accuracy: 96.6% vs 95.1% (5k images).
    hog_cell: int = 4
    hog_block: int = 2
    logreg_c: float = 1.0
    logreg_max_iter: int = 1000
    knn_k: int = 3
    limit_train: int | None = None  # use only the first N training images (quick checks)

    def __post_init__(self) -> None:
        for name in ("hog_orientations", "hog_cell", "hog_block", "logreg_max_iter", "knn_k"):
            if getattr(self, name) < 1:
                raise CnnlabError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.limit_train is not None and self.limit_train < self.knn_k:
            raise CnnlabError(f"limit_train must be at least knn_k={self.knn_k}")
        if not self.logreg_c > 0:
            raise CnnlabError(f"logreg_c must be positive, got {self.logreg_c}")


def hog_features(images: NDArray[Any], config: BaselineConfig) -> NDArray[np.float32]:
    """HOG descriptor of each image: (N, H, W) or (N, H, W, 1) -> (N, F) float32."""
    with extra("baselines", "HOG features"):
        from skimage.feature import hog

    imgs = images[..., 0] if images.ndim == 4 else images
    feats = [
        hog(
            img,
            orientations=config.hog_orientations,
            pixels_per_cell=(config.hog_cell, config.hog_cell),
            cells_per_block=(config.hog_block, config.hog_block),
            block_norm="L2-Hys",
            feature_vector=True,
        )
        for img in imgs
    ]
    if not feats:
        raise CnnlabError("no images to extract HOG features from")
    return np.asarray(feats, dtype=np.float32)


def _accuracy(pred: NDArray[Any], y: NDArray[Any]) -> float:
    return float(np.mean(pred == y))


def _hog_logreg(config: BaselineConfig, s: Splits) -> dict[str, Any]:
    with extra("baselines", "the HOG + logistic regression baseline"):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    f_train = hog_features(s.x_train, config)
    f_val, f_test = hog_features(s.x_val, config), hog_features(s.x_test, config)
    feature_s = time.perf_counter() - start
    clf = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=config.logreg_c, max_iter=config.logreg_max_iter),
    )
    start = time.perf_counter()
    clf.fit(f_train, s.y_train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    pred_test = clf.predict(f_test)
    predict_s = time.perf_counter() - start
    lr = clf[-1]
    return {
        "key": "hog_logreg",
        "name": "HOG + logistic regression",
        "features": int(f_train.shape[1]),
        "params": int(lr.coef_.size + lr.intercept_.size),
        "feature_seconds": feature_s,
        "fit_seconds": fit_s,
        "predict_seconds": predict_s,
        "iterations": int(np.max(lr.n_iter_)),
        "converged": bool(np.max(lr.n_iter_) < config.logreg_max_iter),
        "val_accuracy": _accuracy(clf.predict(f_val), s.y_val),
        "test_accuracy": _accuracy(pred_test, s.y_test),
        "test_predictions": pred_test.astype(int).tolist(),
    }


def _knn_pixels(config: BaselineConfig, s: Splits) -> dict[str, Any]:
    with extra("baselines", "the kNN baseline"):
        from sklearn.neighbors import KNeighborsClassifier

    def flat(x: NDArray[np.floating]) -> NDArray[np.float32]:
        return np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)  # (N, 784)

    clf = KNeighborsClassifier(n_neighbors=config.knn_k, algorithm="brute", n_jobs=-1)
    start = time.perf_counter()
    clf.fit(flat(s.x_train), s.y_train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    pred_test = clf.predict(flat(s.x_test))
    predict_s = time.perf_counter() - start
    return {
        "key": "knn_pixels",
        "name": f"k-nearest neighbours (k={config.knn_k}) on pixels",
        "features": int(np.prod(s.x_train.shape[1:])),
        "params": 0,  # no learned parameters: it stores the training set instead
        "stored_values": int(s.x_train.size),
        "feature_seconds": 0.0,
        "fit_seconds": fit_s,
        "predict_seconds": predict_s,
        "val_accuracy": _accuracy(clf.predict(flat(s.x_val)), s.y_val),
        "test_accuracy": _accuracy(pred_test, s.y_test),
        "test_predictions": pred_test.astype(int).tolist(),
    }


def _limit(splits: Splits, n: int | None) -> Splits:
    if n is None:
        return splits
    return Splits(
        splits.x_train[:n],
        splits.y_train[:n],
        splits.x_val,
        splits.y_val,
        splits.x_test,
        splits.y_test,
    )


def run_baselines(
    config: BaselineConfig, splits: Splits, log: Any = print, data: str = "mnist"
) -> dict[str, Any]:
    """Train and score both baselines on ``splits`` (of the dataset ``data`` names);
    returns the JSON-ready results."""
    s = _limit(splits, config.limit_train)
    methods = []
    fns = (_hog_logreg, _knn_pixels)
    for i, fn in enumerate(fns, 1):
        key = fn.__name__.strip("_")
        log(f"[{i}/{len(fns)}] baseline {key}: {len(s.x_train):,} training images ...")
        start = time.perf_counter()
        methods.append(fn(config, s))
        took = time.perf_counter() - start
        log(f"[{i}/{len(fns)}] baseline {key}: test accuracy "
            f"{methods[-1]['test_accuracy']:.4f}, done in {took:.1f} s")  # fmt: skip
    return {
        "format": FORMAT,
        "config": asdict(config),
        "data": data,
        "n_train": len(s.x_train),
        "n_val": len(s.x_val),
        "n_test": len(s.x_test),
        "methods": methods,
    }


def save(results: dict[str, Any], path: Path) -> None:
    fileio.write_json(Path(path), results)


def load(path: Path) -> dict[str, Any]:
    """Read a cache file written by :func:`save`; CnnlabError if it is not one."""
    results = fileio.read_json(Path(path))
    if not isinstance(results, dict) or results.get("format") != FORMAT:
        raise CnnlabError(f"{path} is not a cnnlab baselines file")
    return results


def data_of(results: dict[str, Any]) -> str:
    """The dataset the baselines were made on (files from before it was recorded: MNIST,
    the only data ``cnnlab baselines`` has trained them on)."""
    data = results.get("data", "mnist")
    return data if isinstance(data, str) else "mnist"


def run_series(
    config: SeriesBaselineConfig, name: str, data_dir: Path | None = None, log: Any = print
) -> dict[str, Any]:
    """The series baselines on UCR/UEA dataset ``name``: fitted on TRAIN, scored on TEST."""
    from cnnlab.data.ucr import load_ucr

    ts = load_ucr(name, data_dir)
    methods = run_series_baselines(config, ts.x_train, ts.y_train, ts.x_test, ts.y_test, log=log)
    return {
        "format": FORMAT,
        "config": asdict(config),
        "data": f"ucr:{ts.name}",
        "n_train": len(ts.y_train),
        "n_val": 0,
        "n_test": len(ts.y_test),
        "methods": methods,
    }


def series_command(
    data: str,
    out: Path,
    data_dir: Path | None,
    runs: list[Path],
    seed: int,
    force: bool,
    log: Any = print,
) -> tuple[str, Path]:
    """``cnnlab baselines --data ucr:NAME``: fit (or read the cache), write the JSON and the
    Markdown table beside it; returns (the table, the JSON's path)."""
    kind, _, name = data.partition(":")
    if kind != "ucr" or not name:
        raise CnnlabError(f"cnnlab baselines takes --data mnist or ucr:NAME, not {data!r}")
    rows = cnn_rows(runs, f"ucr:{name}")  # checked before any work
    config = SeriesBaselineConfig(seed=seed)
    path = Path(out) / f"baselines_ucr_{name}.json"
    results = None if force else cached(path, config, log=log)
    if results is not None and results.get("data") != f"ucr:{name}":
        results = None
    if results is None:
        require("timeseries", "cnnlab baselines --data ucr:NAME")  # sktime, numba
        require("baselines", "cnnlab baselines --data ucr:NAME")  # scikit-learn
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CnnlabError(f"cannot create {path.parent}: {exc.strerror or exc}") from exc
        results = run_series(config, name, data_dir, log=log)
        save(results, path)
    else:
        log(f"using cached results in {path} (--force to fit again)")
    table = markdown_table(results, rows)
    fileio.write_text(path.with_suffix(".md"), table)
    return table, path


def cnn_rows(run_dirs: list[Path], data: str) -> list[dict[str, Any]]:
    """Rows for :func:`markdown_table` from finished ``cnnlab train`` runs on ``data``."""
    rows = []
    for run in run_dirs:
        config = fileio.read_json(Path(run) / "config.json")
        metrics = fileio.read_json(Path(run) / "metrics.json")
        trained_on = config.get("config", {}).get("data") if isinstance(config, dict) else None
        if trained_on != data:
            raise CnnlabError(f"{run} was trained on {trained_on!r}, not {data}")
        if not isinstance(metrics, dict) or metrics.get("test_accuracy") is None:
            raise CnnlabError(f"{run}/metrics.json holds no test accuracy")
        rows.append({
            "name": f"{metrics.get('model', 'CNN')} ({Path(run).name})",
            "params": metrics.get("trainable_params"),
            "test_accuracy": float(metrics["test_accuracy"]),
            "train_seconds": metrics.get("train_seconds"),
        })  # fmt: skip
    return rows


def cached(
    path: Path, config: BaselineConfig | SeriesBaselineConfig, log: Any = None
) -> dict[str, Any] | None:
    """The cached results at ``path`` if they were made with ``config``, else None; a
    damaged file is None too, with one warning line to ``log`` (so it is made again)."""
    if not Path(path).is_file():
        return None
    try:
        results = load(path)
    except CnnlabError as exc:
        if log is not None:
            log(f"warning: {exc}; training the baselines again")
        return None
    return results if results.get("config") == asdict(config) else None


def _count(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def markdown_table(results: dict[str, Any], cnn_rows: list[dict[str, Any]] | None = None) -> str:
    """Baselines, then optionally CNN runs, as one Markdown table.

    ``cnn_rows``: dicts with name, params, test_accuracy and, if known, train_seconds and
    predict_seconds. A baseline's "fit s" includes extracting the HOG features of all images
    (MiniRocket's: transforming TRAIN; numba's compile on a first call is not in it).
    """

    def secs(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}" if v < 10 else f"{v:.0f}"

    lines = [
        "| method | features | learned params | fit s | predict s (test set) "
        "| test accuracy | test errors |",
        "|---|---|---|---|---|---|---|",
    ]
    n_test = results["n_test"]
    for m in results["methods"]:
        params = f"{m['params']:,}" if m["params"] else "0 (stores the training set)"
        kind = {"hog_logreg": "HOG", "knn_pixels": "pixels"}.get(m["key"], m.get("feature_kind"))
        feats = f"{m['features']} ({kind})"
        err = round((1 - m["test_accuracy"]) * n_test)
        fit_s = m.get("feature_seconds", 0.0) + m["fit_seconds"]
        lines.append(
            f"| {m['name']} | {feats} | {params} | {secs(fit_s)} "
            f"| {secs(m['predict_seconds'])} | {100 * m['test_accuracy']:.2f}% | {err} |"
        )
    for r in cnn_rows or []:
        err = round((1 - r["test_accuracy"]) * n_test)
        lines.append(
            f"| {r['name']} | learned (embedded) | {_count(r.get('params'))} "
            f"| {secs(r.get('train_seconds'))} | {secs(r.get('predict_seconds'))} "
            f"| {100 * r['test_accuracy']:.2f}% | {err} |"
        )
    return "\n".join(lines) + "\n"

"""Time-series baselines whose features are never trained: MiniRocket, and nearest neighbours.

- MiniRocket (Dempster et al. 2021): about 10,000 features from fixed convolution kernels
  (84 kernels of length 9 with weights -1 and 2, at several dilations; biases drawn from
  the training series' own convolution outputs), each pooled as the proportion of positive
  values, then a ridge classifier with its penalty chosen by leave-one-out cross-validation
  on TRAIN (scikit-learn's RidgeClassifierCV). sktime's implementation, compiled by numba.
- 1-nearest neighbour with the Euclidean distance (scikit-learn) and with dynamic time
  warping (sktime, numba; a Sakoe-Chiba window of 10% of the length).

Each is fitted on all of TRAIN and scored on TEST, as the archive's baselines are. The
series are cnnlab's: channels last, zero-padded at the end to one length.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cnnlab.errors import CnnlabError
from cnnlab.extras import extra

METHODS = ("minirocket", "knn_euclidean", "knn_dtw")
RIDGE_ALPHAS = np.logspace(-3, 3, 10)  # Dempster et al.'s grid


@dataclass(frozen=True)
class SeriesBaselineConfig:
    """What decides the series baselines' results; stored in the cache file."""

    seed: int = 42  # MiniRocket's random state (the biases' draw)
    num_kernels: int = 10_000  # MiniRocket's default: 9,996 features
    dtw_window: float = 0.1  # Sakoe-Chiba band, a fraction of the length
    # DTW costs (train x test pairs) x length x band cells: past this many it is skipped
    # (PLAID: 537 x 537 x 1,345 x 269 = 1e11), with a line saying so
    dtw_max_cells: int = 5_000_000_000

    def __post_init__(self) -> None:
        if self.num_kernels < 84:
            raise CnnlabError(f"num_kernels must be at least 84, got {self.num_kernels}")
        if not 0 < self.dtw_window <= 1:
            raise CnnlabError(f"dtw_window must be in (0, 1], got {self.dtw_window}")


def _channels_first(x: NDArray[Any]) -> NDArray[np.float64]:
    """(N, T, C) -> (N, C, T) float64, sktime's numpy3D layout."""
    return np.ascontiguousarray(np.transpose(x, (0, 2, 1)), dtype=np.float64)


def minirocket(
    x_train: NDArray[Any],
    y_train: NDArray[Any],
    x_test: NDArray[Any],
    y_test: NDArray[Any],
    config: SeriesBaselineConfig,
) -> dict[str, Any]:
    """MiniRocket features + ridge: fitted on (x_train, y_train), scored on the test set."""
    with extra("timeseries", "the MiniRocket baseline"):
        import numba  # noqa: F401  (sktime names a missing numba less plainly)
        from sktime.transformations.rocket import MiniRocket, MiniRocketMultivariate
    with extra("baselines", "the MiniRocket baseline"):
        from sklearn.linear_model import RidgeClassifierCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

    if x_train.shape[1] < 9:
        raise CnnlabError(f"MiniRocket needs series of at least 9 steps, got {x_train.shape[1]}")
    cls = MiniRocket if x_train.shape[2] == 1 else MiniRocketMultivariate
    xtr, xte = _channels_first(x_train), _channels_first(x_test)
    # numba compiles on the first call of a process: timed apart, on two series
    start = time.perf_counter()
    cls(num_kernels=84, random_state=0).fit(xtr[:2]).transform(xtr[:2])
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    transform = cls(num_kernels=config.num_kernels, random_state=config.seed).fit(xtr)
    f_train = np.asarray(transform.transform(xtr))
    clf = make_pipeline(StandardScaler(with_mean=False), RidgeClassifierCV(alphas=RIDGE_ALPHAS))
    clf.fit(f_train, y_train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    pred = clf.predict(np.asarray(transform.transform(xte)))
    predict_s = time.perf_counter() - start
    ridge = clf[-1]
    return {
        "key": "minirocket",
        "name": "MiniRocket + ridge",
        "features": int(f_train.shape[1]),
        "feature_kind": "random kernels, PPV",
        "params": int(ridge.coef_.size + ridge.intercept_.size),
        "alpha": float(ridge.alpha_),
        "compile_seconds": compile_s,
        "fit_seconds": fit_s,
        "predict_seconds": predict_s,
        "test_accuracy": float(np.mean(pred == y_test)),
    }


def knn_euclidean(
    x_train: NDArray[Any],
    y_train: NDArray[Any],
    x_test: NDArray[Any],
    y_test: NDArray[Any],
    config: SeriesBaselineConfig,
) -> dict[str, Any]:
    """1-nearest neighbour, Euclidean distance over all steps and channels."""
    with extra("baselines", "the kNN baseline"):
        from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(n_neighbors=1, algorithm="brute")
    start = time.perf_counter()
    clf.fit(x_train.reshape(len(x_train), -1), y_train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    pred = clf.predict(x_test.reshape(len(x_test), -1))
    predict_s = time.perf_counter() - start
    return {
        "key": "knn_euclidean",
        "name": "1-NN, Euclidean distance",
        "features": int(np.prod(x_train.shape[1:])),
        "feature_kind": "steps",
        "params": 0,
        "compile_seconds": 0.0,
        "fit_seconds": fit_s,
        "predict_seconds": predict_s,
        "test_accuracy": float(np.mean(pred == y_test)),
    }


def dtw_cells(n_train: int, n_test: int, length: int, window: float) -> int:
    """The DTW cells 1-NN fills: one band of the length x length matrix per pair."""
    return n_train * n_test * length * max(1, int(window * length) * 2 + 1)


def knn_dtw(
    x_train: NDArray[Any],
    y_train: NDArray[Any],
    x_test: NDArray[Any],
    y_test: NDArray[Any],
    config: SeriesBaselineConfig,
) -> dict[str, Any]:
    """1-nearest neighbour, dynamic time warping within a Sakoe-Chiba band."""
    with extra("timeseries", "the DTW baseline"):
        import numba  # noqa: F401
        from sktime.classification.distance_based import KNeighborsTimeSeriesClassifier

    clf = KNeighborsTimeSeriesClassifier(
        n_neighbors=1, distance="dtw", distance_params={"window": config.dtw_window}
    )
    xtr, xte = _channels_first(x_train), _channels_first(x_test)
    start = time.perf_counter()
    clf.fit(xtr, y_train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    pred = np.asarray(clf.predict(xte))
    predict_s = time.perf_counter() - start  # includes numba's compile on a first call
    return {
        "key": "knn_dtw",
        "name": f"1-NN, DTW (window {config.dtw_window:g})",
        "features": int(np.prod(x_train.shape[1:])),
        "feature_kind": "steps",
        "params": 0,
        "compile_seconds": 0.0,
        "fit_seconds": fit_s,
        "predict_seconds": predict_s,
        "test_accuracy": float(np.mean(pred == y_test)),
    }


FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "minirocket": minirocket,
    "knn_euclidean": knn_euclidean,
    "knn_dtw": knn_dtw,
}


def run_series_baselines(
    config: SeriesBaselineConfig,
    x_train: NDArray[Any],
    y_train: NDArray[Any],
    x_test: NDArray[Any],
    y_test: NDArray[Any],
    methods: tuple[str, ...] = METHODS,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Fit each method on TRAIN, score it on TEST; DTW past ``dtw_max_cells`` is skipped."""
    out = []
    for i, key in enumerate(methods, 1):
        if key not in FUNCTIONS:
            raise CnnlabError(f"unknown series baseline {key!r}; known: {', '.join(METHODS)}")
        n, t = len(x_train), x_train.shape[1]
        cells = dtw_cells(n, len(x_test), t, config.dtw_window)
        if key == "knn_dtw" and cells > config.dtw_max_cells:
            log(f"[{i}/{len(methods)}] baseline {key}: skipped, {cells:.1e} DTW cells "
                f"(over {config.dtw_max_cells:.0e})")  # fmt: skip
            continue
        log(f"[{i}/{len(methods)}] baseline {key}: {n:,} training series ...")
        result = FUNCTIONS[key](x_train, y_train, x_test, y_test, config)
        log(f"[{i}/{len(methods)}] baseline {key}: test accuracy "
            f"{result['test_accuracy']:.4f}, fit {result['fit_seconds']:.1f} s")  # fmt: skip
        out.append(result)
    return out

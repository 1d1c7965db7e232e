"""Hand-crafted-feature baselines on tiny synthetic data: features, classifiers, cache, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnlab.analysis import baselines
from cnnlab.analysis.baselines import (
    BaselineConfig,
    cached,
    hog_features,
    markdown_table,
    run_baselines,
)
from cnnlab.cli import main
from cnnlab.data import MNIST, Splits
from cnnlab.errors import CnnlabError


@pytest.fixture(scope="module")
def results(tiny_splits: Splits) -> dict[str, object]:
    return run_baselines(BaselineConfig(), tiny_splits, log=lambda _m: None)


def test_hog_features_shape_and_properties() -> None:
    config = BaselineConfig()
    x = np.zeros((3, 28, 28, 1), dtype=np.float32)
    x[1, 4:24, 12:15] = 1.0  # a vertical bar
    x[2] = 0.5 * x[1]  # the same bar, half as bright
    f = hog_features(x, config)
    # 7x7 cells of 4x4 pixels -> 6x6 blocks of 2x2 cells, 9 orientations each.
    assert f.shape == (3, 6 * 6 * 2 * 2 * 9) and f.dtype == np.float32
    assert not f[0].any()  # no gradients, no features
    np.testing.assert_allclose(f[2], f[1], atol=1e-5)  # block normalisation: contrast-free
    # A vertical edge has horizontal gradients: orientation bin 0 (0 degrees) dominates.
    assert f[1].reshape(-1, 9).sum(0).argmax() == 0


def test_results_structure_and_accuracy(results: dict[str, object], tiny_splits: Splits) -> None:
    methods = {m["key"]: m for m in results["methods"]}  # type: ignore[attr-defined]
    assert set(methods) == {"hog_logreg", "knn_pixels"}
    assert results["n_train"] == len(tiny_splits.x_train)
    assert results["n_test"] == len(tiny_splits.x_test)
    for m in methods.values():
        assert len(m["test_predictions"]) == len(tiny_splits.x_test)
        acc = np.mean(np.array(m["test_predictions"]) == tiny_splits.y_test)
        assert m["test_accuracy"] == pytest.approx(acc)
        assert m["test_accuracy"] > 0.5  # ten classes: chance is 0.1
    assert methods["hog_logreg"]["features"] == 1296
    assert methods["hog_logreg"]["params"] == 1296 * 10 + 10


def test_knn_matches_a_numpy_reference(results: dict[str, object], tiny_splits: Splits) -> None:
    k = BaselineConfig().knn_k
    a = tiny_splits.x_train.reshape(len(tiny_splits.x_train), -1).astype(np.float64)
    b = tiny_splits.x_test.reshape(len(tiny_splits.x_test), -1).astype(np.float64)
    d = ((b[:, None, :] - a[None, :, :]) ** 2).sum(-1)  # (n_test, n_train)
    nearest = np.argsort(d, axis=1, kind="stable")[:, :k]
    votes = tiny_splits.y_train[nearest]
    # Majority vote, ties to the smallest label (as scikit-learn's mode does).
    expected = np.array([np.bincount(v, minlength=10).argmax() for v in votes])
    knn = next(m for m in results["methods"] if m["key"] == "knn_pixels")  # type: ignore[attr-defined]
    np.testing.assert_array_equal(knn["test_predictions"], expected)


def test_cache_roundtrip(results: dict[str, object], tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    baselines.save(results, path)
    assert cached(path, BaselineConfig()) == results
    assert cached(path, BaselineConfig(knn_k=5)) is None  # another config: retrain
    assert cached(tmp_path / "missing.json", BaselineConfig()) is None
    (tmp_path / "x.json").write_text('{"format": "something else"}')
    with pytest.raises(CnnlabError, match="not a cnnlab baselines file"):
        baselines.load(tmp_path / "x.json")


def test_markdown_table_with_cnn_rows(results: dict[str, object]) -> None:
    md = markdown_table(
        results, [{"name": "CNN case1", "params": 61002, "test_accuracy": 0.99, "train_seconds": 5}]
    )
    lines = md.strip().splitlines()
    assert len(lines) == 2 + 3
    assert lines[2].startswith("| HOG + logistic regression | 1296 (HOG) | 12,970 |")
    errors = round(0.01 * results["n_test"])  # type: ignore[operator]
    assert lines[4] == f"| CNN case1 | learned (embedded) | 61,002 | 5.0 | - | 99.00% | {errors} |"


def test_config_is_checked() -> None:
    with pytest.raises(CnnlabError, match="knn_k"):
        BaselineConfig(knn_k=0)
    with pytest.raises(CnnlabError, match="logreg_c"):
        BaselineConfig(logreg_c=0)


def test_cli_baselines_caches(
    synthetic_data: MNIST,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "b"
    assert main(["baselines", "--out", str(out), "--limit-train", "100"]) == 0
    first = capsys.readouterr().out
    assert "| HOG + logistic regression |" in first and (out / "baselines.md").is_file()
    assert baselines.load(out / "baselines.json")["n_train"] == 100
    assert main(["baselines", "--out", str(out), "--limit-train", "100"]) == 0
    assert "using cached results" in capsys.readouterr().out

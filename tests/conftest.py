"""Shared fixtures: seeds, tiny synthetic data, real MNIST (when present), a tiny trained run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data import MNIST, Splits, locate, prepare

REPO = Path(__file__).resolve().parents[1]


def _default_data_dir() -> Path | None:
    env = os.environ.get("CNNLAB_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (cand / "mnist").is_dir():
            return cand
    return None


@pytest.fixture
def global_random_seed() -> int:
    """One seed for every test that draws random numbers; fixed so failures reproduce.

    Seeds torch's global RNG (model initialisation, dropout); NumPy code should take
    ``np.random.default_rng(global_random_seed)``.
    """
    torch.manual_seed(0)
    return 0


def synthetic_mnist(n_train: int = 240, n_test: int = 60, seed: int = 0) -> MNIST:
    """A tiny, learnable stand-in for MNIST: each class is a bright bar at its own place.

    uint8 (N, 28, 28) images with noise and a random jitter of the bar, labels 0-9.
    """
    rng = np.random.default_rng(seed)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 10
        rng.shuffle(y)
        x = rng.integers(0, 40, size=(n, 28, 28)).astype(np.float64)
        for i, label in enumerate(y):
            r = 3 + 2 * int(label) + int(rng.integers(-1, 2))
            c = int(rng.integers(4, 12))
            x[i, r : r + 2, c : c + 14] = 255
        return x.astype(np.uint8), y.astype(np.uint8)

    x_tr, y_tr = make(n_train)
    x_te, y_te = make(n_test)
    return MNIST(x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)


@pytest.fixture(scope="session")
def tiny_mnist() -> MNIST:
    return synthetic_mnist()


@pytest.fixture(scope="session")
def tiny_splits(tiny_mnist: MNIST) -> Splits:
    return prepare(tiny_mnist, seed=42)


@pytest.fixture(scope="session")
def mnist_data_dir() -> Path:
    """The folder holding the real mnist/ files ($CNNLAB_DATA or ../shared/data)."""
    d = _default_data_dir()
    if d is None or locate("train-images-idx3-ubyte", d) is None:
        pytest.skip("real MNIST not found: set CNNLAB_DATA to a folder holding mnist/")
    return d


@pytest.fixture(scope="session")
def mnist(mnist_data_dir: Path) -> MNIST:
    from cnnlab.data import load_mnist

    return load_mnist(mnist_data_dir, allow_download=False)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_splits: Splits) -> dict[str, Path]:
    """Finished 2-epoch runs of each case on the synthetic data: {"case1": run_dir, ...}.

    Read-only for tests: copy a run folder before changing anything in it.
    """
    from cnnlab.train.loop import TrainConfig, fit

    out = {}
    for case in ("case1", "case2", "case3"):
        run_dir = tmp_path_factory.mktemp(case)
        fit(
            TrainConfig(model=case, epochs=2, seed=42),
            tiny_splits,
            run_dir,
            progress=False,
            log=lambda _msg: None,
        )
        out[case] = run_dir
    return out


@pytest.fixture
def synthetic_data(monkeypatch: pytest.MonkeyPatch, tiny_mnist: MNIST) -> MNIST:
    """Commands run in-process load the synthetic stand-in instead of MNIST."""
    from cnnlab import data

    monkeypatch.setattr(data, "load_mnist", lambda *a, **k: tiny_mnist)
    return tiny_mnist

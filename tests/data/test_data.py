"""MNIST files: where they are found, verification, download fallback, the chapter's split."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data import mnist as data
from cnnlab.errors import CnnlabError

NAME = "t10k-labels-idx1-ubyte"


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $CNNLAB_DATA and an empty user cache under tmp_path."""
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def test_search_order_env_then_cache(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(data.DATA_ENV, str(isolated / "shared"))
    dirs = data.search_dirs()
    assert dirs == [isolated / "shared" / "mnist", isolated / "cache" / "cnnlab" / "mnist"]
    assert data.search_dirs(isolated / "explicit")[0] == isolated / "explicit" / "mnist"
    cache = dirs[1]
    cache.mkdir(parents=True)
    (cache / NAME).write_bytes(b"x")
    assert data.locate(NAME) == cache / NAME
    (dirs[0]).mkdir(parents=True)
    (dirs[0] / f"{NAME}.gz").write_bytes(b"x")
    assert data.locate(NAME) == dirs[0] / f"{NAME}.gz"


def test_corrupt_file_is_refused_with_name_and_fix(isolated: Path) -> None:
    bad = isolated / f"{NAME}.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07"))
    with pytest.raises(CnnlabError, match=rf"{NAME}.gz failed verification.*delete it"):
        data.load_verified(bad, NAME)


def test_missing_without_download(isolated: Path) -> None:
    with pytest.raises(CnnlabError, match=f"MNIST file {NAME} not found"):
        data.resolve(NAME, allow_download=False)


def test_download_falls_back_verifies_and_writes_atomically(
    isolated: Path, mnist_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = (mnist_data_dir / "mnist" / f"{NAME}.gz").read_bytes()
    calls: list[str] = []

    def fake_fetch(url: str, dest: Path) -> None:
        calls.append(url)
        if url.startswith(data.MIRRORS[0]):
            raise OSError("mirror down")
        dest.write_bytes(good)

    monkeypatch.setattr(data, "_fetch", fake_fetch)
    path = data.resolve(NAME)
    cache = isolated / "cache" / "cnnlab" / "mnist"
    assert path == cache / f"{NAME}.gz"
    assert [p.name for p in cache.iterdir()] == [f"{NAME}.gz"]  # no temp file left behind
    assert len(calls) == 2
    assert data.sha256(gzip.decompress(path.read_bytes())) == data.MNIST_FILES[NAME]


def test_download_with_wrong_content_leaves_nothing(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "_fetch", lambda url, dest: dest.write_bytes(gzip.compress(b"no")))
    with pytest.raises(CnnlabError, match=f"could not download {NAME}.gz.*SHA-256 mismatch"):
        data.resolve(NAME)
    assert list((isolated / "cache" / "cnnlab" / "mnist").iterdir()) == []


def test_verify_reports_each_file(isolated: Path, mnist_data_dir: Path) -> None:
    shutil.copytree(mnist_data_dir / "mnist", isolated / "d" / "mnist")
    (isolated / "d" / "mnist" / "t10k-images-idx3-ubyte.gz").unlink()
    (isolated / "d" / "mnist" / f"{NAME}.gz").write_bytes(gzip.compress(b"corrupt"))
    report = {name: status for name, _path, status in data.verify(isolated / "d")}
    assert report["train-images-idx3-ubyte"] == "ok"
    assert report["t10k-images-idx3-ubyte"].startswith("missing")
    assert report[NAME].startswith("FAILED")


@pytest.mark.mnist
def test_load_mnist_from_read_only_folder(mnist_data_dir: Path) -> None:
    m = data.load_mnist(mnist_data_dir, allow_download=False)
    assert m.x_train.shape == (60_000, 28, 28) and m.x_test.shape == (10_000, 28, 28)
    assert m.x_train.dtype == np.uint8 and m.y_train.max() == 9
    assert np.bincount(m.y_test).tolist()[:3] == [980, 1135, 1032]  # published class counts


@pytest.mark.mnist
def test_split_is_the_chapters(mnist: data.MNIST) -> None:
    from sklearn.model_selection import train_test_split

    # The chapter: np.random.seed(42) then train_test_split on the arrays, no random_state.
    np.random.seed(42)  # noqa: NPY002 - the chapter's own legacy global seeding
    x = np.arange(60_000)[:, None]
    x_tr, x_va, _y_tr, y_va = train_test_split(
        x, mnist.y_train, stratify=mnist.y_train, test_size=0.25
    )
    train_idx, val_idx = data.split_indices(mnist.y_train, seed=42)
    np.testing.assert_array_equal(train_idx, x_tr[:, 0])
    np.testing.assert_array_equal(val_idx, x_va[:, 0])
    assert len(train_idx) == 45_000 and len(val_idx) == 15_000
    # Stratified: class shares agree to within one image per class.
    counts = np.bincount(mnist.y_train)
    assert np.all(np.abs(np.bincount(y_va) - counts * 0.25) <= 1)


def test_prepare_scales_and_splits(tiny_mnist: data.MNIST) -> None:
    s = data.prepare(tiny_mnist, seed=3)
    n = len(tiny_mnist.y_train)
    assert s.x_train.shape == (n - n // 4, 28, 28, 1) and s.x_val.shape == (n // 4, 28, 28, 1)
    assert s.x_train.dtype == np.float32 and 0 <= s.x_train.min() and s.x_train.max() <= 1
    np.testing.assert_allclose(s.x_test[..., 0] * 255, tiny_mnist.x_test, atol=1e-4)
    assert s.y_train.dtype == np.int64
    again = data.prepare(tiny_mnist, seed=3)
    np.testing.assert_array_equal(s.y_val, again.y_val)
    other = data.prepare(tiny_mnist, seed=4)
    assert not np.array_equal(s.x_val, other.x_val)

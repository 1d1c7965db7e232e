"""fashion-mnist, kmnist and cifar10 on tiny files in the published formats, made here.

The checksum tables are pointed at the tiny files; the network is never used (downloads
go through a stand-in for the fetch).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data import DataOptions, cifar, idx_sets, store
from cnnlab.data.datasets import load_dataset
from cnnlab.data.splits import split_indices
from cnnlab.errors import CnnlabError


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $CNNLAB_DATA, an empty user cache; returns an empty data folder."""
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


def idx_gz(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def tiny_idx_set(folder: Path, n_train: int = 40, n_test: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": (np.arange(n_test) % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        (folder / name).write_bytes(idx_gz(array))
    return arrays


def table(folder: Path) -> dict[str, tuple[int, str]]:
    return {
        name: (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for name in idx_sets.NAMES
        for p in [folder / name]
    }


@pytest.mark.parametrize(
    ("source", "dataset"),
    [
        (idx_sets.FashionMnistSource, idx_sets.FASHION_MNIST),
        (idx_sets.KmnistSource, idx_sets.KMNIST),
    ],
)
def test_idx_sets_read_verified_files(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, source: type, dataset: idx_sets.IdxSet
) -> None:
    arrays = tiny_idx_set(isolated / dataset.name)
    monkeypatch.setattr(source, "dataset", replace(dataset, files=table(isolated / dataset.name)))
    options = DataOptions(data_dir=isolated, allow_download=False, seed=3)
    ds = load_dataset(dataset.name, options)
    assert ds.classes == list(dataset.classes) and len(ds.classes) == 10
    assert ds.kind == "images" and ds.pixels and ds.input_shape == (28, 28, 1)
    np.testing.assert_array_equal(ds.splits.x_test[..., 0], arrays["t10k-images-idx3-ubyte.gz"])
    y = arrays["train-labels-idx1-ubyte.gz"]
    train, val = split_indices(y, 3, 0.25)  # the chapter's split
    np.testing.assert_array_equal(
        ds.splits.x_val[..., 0], arrays["train-images-idx3-ubyte.gz"][val]
    )
    np.testing.assert_array_equal(ds.splits.y_train, y[train])


def test_published_checksum_tables_are_whole() -> None:
    for dataset in (idx_sets.FASHION_MNIST, idx_sets.KMNIST):
        assert sorted(dataset.files) == sorted(idx_sets.NAMES)
        for size, digest in dataset.files.values():
            assert size > 5000 and len(digest) == 64 and int(digest, 16) >= 0
    assert idx_sets.FASHION_MNIST.classes[0] == "T-shirt/top"
    assert idx_sets.KMNIST.classes == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    assert cifar.CHECKSUM == (170_052_171, cifar.CHECKSUM[1]) and len(cifar.CHECKSUM[1]) == 64


def test_a_changed_file_fails_verification(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = isolated / "kmnist"
    tiny_idx_set(folder)
    monkeypatch.setattr(
        idx_sets.KmnistSource, "dataset", replace(idx_sets.KMNIST, files=table(folder))
    )
    raw = bytearray((folder / idx_sets.NAMES[3]).read_bytes())
    raw[-9] ^= 1  # same size, other content
    (folder / idx_sets.NAMES[3]).write_bytes(bytes(raw))
    with pytest.raises(CnnlabError, match=r"t10k-labels-idx1-ubyte.gz failed verification: SHA"):
        load_dataset("kmnist", DataOptions(data_dir=isolated, allow_download=False))
    (folder / idx_sets.NAMES[3]).write_bytes(bytes(raw) + b"x")
    with pytest.raises(CnnlabError, match=r"failed verification: .* bytes, expected .*; delete"):
        load_dataset("kmnist", DataOptions(data_dir=isolated, allow_download=False))


def test_a_missing_set_is_downloaded_verified_into_the_cache(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = tmp_path / "published"
    tiny_idx_set(made)
    good = replace(idx_sets.FASHION_MNIST, files=table(made))
    monkeypatch.setattr(idx_sets.FashionMnistSource, "dataset", good)
    calls: list[str] = []

    def fetch(url: str, dest: Path, max_bytes: int, **_: object) -> None:
        calls.append(url)
        if url.startswith(good.mirrors[0]):
            raise OSError("mirror down")
        dest.write_bytes((made / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(store, "fetch", fetch)
    ds = load_dataset("fashion-mnist", DataOptions(data_dir=isolated))
    assert ds.splits.counts()["test"] == 12 and len(calls) == 8  # each file: two mirrors
    cache = tmp_path / "cache" / "cnnlab" / "fashion-mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(idx_sets.NAMES)  # no .part left
    monkeypatch.setattr(store, "fetch", lambda url, dest, max_bytes: dest.write_bytes(b"bad"))
    for p in cache.iterdir():
        p.unlink()
    with pytest.raises(CnnlabError, match=r"could not download fashion-mnist train-images.*3 byt"):
        load_dataset("fashion-mnist", DataOptions(data_dir=isolated))
    assert list(cache.iterdir()) == []


CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """CIFAR-10's binary records: a label byte, then the red, green and blue planes."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # (n, 3072)
    return np.concatenate([labels[:, None].astype(np.uint8), planes], axis=1).tobytes()


def tiny_cifar(
    path: Path, extra: dict[str, bytes] | None = None, skip: str | None = None
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (5 * 8 + 6, 32, 32, 3), dtype=np.uint8)
    y = (np.arange(len(x)) % 10).astype(np.uint8)
    members = {f"data_batch_{k + 1}.bin": records(x[8 * k : 8 * k + 8], y[8 * k : 8 * k + 8])
               for k in range(5)}  # fmt: skip
    members["test_batch.bin"] = records(x[40:], y[40:])
    members["batches.meta.txt"] = ("\n".join(CLASSES) + "\n\n").encode()
    members["readme.html"] = b"<html>CIFAR</html>"
    members.update(extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            if name == skip:
                continue
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return {"x_train": x[:40], "y_train": y[:40], "x_test": x[40:], "y_test": y[40:]}


def use(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(cifar, "CHECKSUM", (path.stat().st_size, digest))


def test_cifar10_binary_records(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = isolated / "cifar10" / cifar.ARCHIVE
    want = tiny_cifar(path)
    use(monkeypatch, path)
    ds = load_dataset("cifar10", DataOptions(data_dir=isolated, allow_download=False))
    assert ds.classes == CLASSES and ds.input_shape == (32, 32, 3) and ds.pixels
    np.testing.assert_array_equal(ds.splits.x_test, want["x_test"])
    np.testing.assert_array_equal(ds.splits.y_test, want["y_test"])
    train, val = split_indices(want["y_train"], 42, 0.25)
    np.testing.assert_array_equal(ds.splits.x_train, want["x_train"][train])
    np.testing.assert_array_equal(ds.splits.x_val, want["x_train"][val])
    # one pixel by hand: record 0 of test_batch, row 2, column 5, green
    data = tarfile.open(path).extractfile("cifar-10-batches-bin/test_batch.bin").read()  # type: ignore[union-attr]
    assert ds.splits.x_test[0, 2, 5, 1] == data[1 + 1024 + 2 * 32 + 5]


def symlink_member(path: Path) -> None:
    tiny_cifar(path, skip="test_batch.bin")
    with tarfile.open(path, "r:gz") as src:
        members = [(m, src.extractfile(m).read() if m.isreg() else None) for m in src]  # type: ignore[union-attr]
    with tarfile.open(path, "w:gz") as tar:
        for m, data in members:
            tar.addfile(m, io.BytesIO(data) if data is not None else None)
        link = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)


CIFAR_BAD = {
    "a member is a link": (symlink_member, "test_batch.bin is not a regular file"),
    "a member is missing": (
        lambda p: tiny_cifar(p, skip="test_batch.bin"),
        "holds no test_batch.bin",
    ),
    "the python version": (
        lambda p: tiny_cifar(p, skip="data_batch_3.bin", extra={"data_batch_3": b"\x80\x04."}),
        "holds no data_batch_3.bin: not the CIFAR-10 binary version",
    ),
    "a ragged batch": (
        lambda p: tiny_cifar(p, extra={"data_batch_2.bin": b"\x01" * 3074}),
        "not whole 3073-byte records",
    ),
    "an oversized member": (
        lambda p: tiny_cifar(p, extra={"batches.meta.txt": b"x\n" * 5000}),
        "batches.meta.txt is not the expected file",
    ),
    "a label past the classes": (
        lambda p: tiny_cifar(p, extra={"batches.meta.txt": b"cat\ndog\n"}),
        r"a label is 9, but batches.meta.txt names 2 classes",
    ),
    "not a tar": (lambda p: p.write_bytes(gzip.compress(b"hello")), "not a readable tar.gz"),
}


@pytest.mark.parametrize("case", list(CIFAR_BAD))
def test_cifar10_archives_are_read_as_data_only(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    make, message = CIFAR_BAD[case]
    path = isolated / "cifar10" / cifar.ARCHIVE
    path.parent.mkdir(parents=True)
    make(path)
    use(monkeypatch, path)
    with pytest.raises(CnnlabError, match=message) as info:
        load_dataset("cifar10", DataOptions(data_dir=isolated, allow_download=False))
    assert "\n" not in str(info.value)


def test_cifar10_checksum_is_checked_before_opening(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = isolated / "cifar10" / cifar.ARCHIVE
    tiny_cifar(path)
    opened: list[object] = []
    monkeypatch.setattr(cifar, "read_archive", lambda p: opened.append(p))
    with pytest.raises(CnnlabError, match=r"failed verification: .* bytes, expected 170,052,171"):
        load_dataset("cifar10", DataOptions(data_dir=isolated, allow_download=False))
    assert not opened
    (isolated / "cifar10" / "cifar-10-python.tar.gz").write_bytes(b"pickles")
    path.unlink()
    with pytest.raises(CnnlabError, match=r"CIFAR-10 archive cifar-10-binary.tar.gz not found"):
        load_dataset("cifar10", DataOptions(data_dir=isolated, allow_download=False))

"""MNIST: find, download, verify and load it; the chapter's preprocessing and split.

Where the files are looked for, in order:
1. ``$CNNLAB_DATA/mnist/`` (may be read-only; CI points it at the shared canonical copy);
2. the user cache, ``~/.cache/cnnlab/mnist/`` by default.
Missing files are downloaded into the cache, verified against the SHA-256 of their
decompressed bytes, and only then moved into place.

Files are read without trusting them: only regular files, inflated no further than the
known size of the MNIST file (a gzip bomb stops there), and a name taken by a directory,
a FIFO or a dangling symlink is reported as what it is, not as missing.
"""

from __future__ import annotations

import hashlib
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.data import store
from cnnlab.data.base import DataOptions, Dataset, Source, Splits, register_source
from cnnlab.data.idx import describe_mode, parse_idx, read_bytes
from cnnlab.data.splits import split_indices, split_record
from cnnlab.data.store import DATA_ENV
from cnnlab.errors import CnnlabError

__all__ = ["DATA_ENV", "MNIST", "Splits", "load_mnist", "prepare", "split_indices"]

MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# Decompressed sizes: an IDX header (16 or 8 bytes) and 28x28 images or one-byte labels.
MNIST_SIZES: dict[str, int] = {
    "train-images-idx3-ubyte": 16 + 60_000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60_000,
    "t10k-images-idx3-ubyte": 16 + 10_000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10_000,
}
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
DIGITS = [str(d) for d in range(10)]


def default_cache_dir() -> Path:
    return store.default_cache_dir("mnist")


def search_dirs(data_dir: Path | None = None) -> list[Path]:
    """Folders searched for the MNIST files, most preferred first (:mod:`cnnlab.data.store`)."""
    return store.search_dirs("mnist", data_dir)


def locate(name: str, data_dir: Path | None = None) -> Path | None:
    """The first path for ``name`` (gzipped or raw) in the search folders that exists in any
    form: a directory or a dangling symlink there is found too, and refused when read."""
    return store.locate("mnist", [f"{name}.gz", name], data_dir)


def path_kind(path: Path) -> str | None:
    """None for a regular file (or a symlink to one); else what ``path`` is, for messages."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "a dangling symbolic link" if path.is_symlink() else "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return None if stat.S_ISREG(mode) else describe_mode(mode)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_FIX = "delete it so that cnnlab downloads a fresh copy, or replace it with the original MNIST file"


def load_verified(path: Path, name: str) -> bytes:
    """Decompressed bytes of ``path``, refused unless their SHA-256 is MNIST's.

    Inflation stops past the MNIST file's known size, so memory stays within that size.
    """
    kind = path_kind(path)
    if kind is not None:
        raise CnnlabError(f"{path} is {kind}, not an MNIST file: {_FIX}")
    try:
        data = read_bytes(path, MNIST_SIZES[name])
    except CnnlabError as exc:
        raise CnnlabError(f"{exc}; {_FIX}") from None
    digest = sha256(data)
    if digest != MNIST_FILES[name]:
        raise CnnlabError(
            f"{path} failed verification: SHA-256 of its content is {digest[:16]}..., "
            f"expected {MNIST_FILES[name][:16]}...; {_FIX}"
        )
    return data


def _fetch(url: str, dest: Path) -> None:
    """Download ``url`` into ``dest``, at most a little over the MNIST file's size."""
    size = MNIST_SIZES.get(url.rsplit("/", 1)[-1].removesuffix(".gz"), 64 * 1024 * 1024)
    # gzip never grows data by more than a few bytes per block
    store.fetch(url, dest, size + size // 100 + 65536)


def download(name: str, cache_dir: Path | None = None, data_dir: Path | None = None) -> Path:
    """Download ``name`` into the cache, verify it, and move it into place atomically.

    ``data_dir``: the ``--data-dir`` that lacked it, for the error's hint.
    """
    folder = cache_dir or default_cache_dir()

    def check(tmp: Path) -> None:
        if sha256(read_bytes(tmp, MNIST_SIZES[name])) != MNIST_FILES[name]:
            raise ValueError("SHA-256 mismatch")

    return store.download(
        [mirror + f"{name}.gz" for mirror in MIRRORS],
        folder / f"{name}.gz",
        max_bytes=MNIST_SIZES[name] * 2,
        check=check,
        what=f"{name}.gz",
        hint=store.missing_hint("mnist", "the MNIST files", data_dir)
        if cache_dir is None
        else f"put the MNIST files in {folder} or set {DATA_ENV} to a folder holding mnist/",
        fetcher=lambda url, dest: _fetch(url, dest),  # looked up now: tests replace _fetch
    )


def resolve(name: str, data_dir: Path | None = None, *, allow_download: bool = True) -> Path:
    path = locate(name, data_dir)
    if path is not None:
        return path
    if not allow_download:
        where = ", ".join(str(d) for d in search_dirs(data_dir))
        raise CnnlabError(f"MNIST file {name} not found (looked in {where})")
    return download(name, data_dir=data_dir)


@dataclass(frozen=True)
class MNIST:
    """The raw dataset: uint8 images (N, 28, 28) and uint8 labels (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _load(name: str, data_dir: Path | None, allow_download: bool) -> np.ndarray:
    path = resolve(name, data_dir, allow_download=allow_download)
    return parse_idx(load_verified(path, name), source=str(path))


def load_mnist(data_dir: Path | None = None, *, allow_download: bool = True) -> MNIST:
    """Load and verify the four MNIST files (downloading them if needed)."""
    arrays = {name: _load(name, data_dir, allow_download) for name in MNIST_FILES}
    mnist = MNIST(
        x_train=arrays["train-images-idx3-ubyte"],
        y_train=arrays["train-labels-idx1-ubyte"],
        x_test=arrays["t10k-images-idx3-ubyte"],
        y_test=arrays["t10k-labels-idx1-ubyte"],
    )
    for split, x, y, n in (
        ("train", mnist.x_train, mnist.y_train, 60_000),
        ("test", mnist.x_test, mnist.y_test, 10_000),
    ):
        if x.shape != (n, 28, 28) or y.shape != (n,) or x.dtype != np.uint8:
            raise CnnlabError(f"MNIST {split} set has unexpected shape {x.shape} / {y.shape}")
    return mnist


def verify(data_dir: Path | None = None) -> list[tuple[str, Path | None, str]]:
    """(name, path, status) for each file that would be used; nothing is downloaded."""
    report: list[tuple[str, Path | None, str]] = []
    for name in MNIST_FILES:
        path = locate(name, data_dir)
        if path is None:
            report.append((name, None, "missing (will be downloaded on first use)"))
            continue
        try:
            load_verified(path, name)
            report.append((name, path, "ok"))
        except CnnlabError as exc:
            report.append((name, path, f"FAILED: {exc}"))
    return report


def scale(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) -> float32 (N, H, W, 1) in [0, 1], as the chapter does."""
    return (images.astype(np.float32) / 255)[..., np.newaxis]


def prepare(
    mnist: MNIST, seed: int = 42, val_fraction: float = 0.25, *, scaled: bool = True
) -> Splits:
    """The chapter's preprocessing: scale, add a channel axis, stratified split.

    ``scaled=False`` keeps the images uint8 (a quarter of the memory); the training engine
    and :func:`cnnlab.engine.inference.evaluate` divide each batch by 255, which gives the float32
    values :func:`scale` gives, bit for bit.
    """
    train_idx, val_idx = split_indices(mnist.y_train, seed, val_fraction)
    y = mnist.y_train.astype(np.int64)
    convert = scale if scaled else (lambda images: images[..., np.newaxis])
    # Split the uint8 images, then convert: no float copy of all 60k images.
    return Splits(
        x_train=convert(mnist.x_train[train_idx]),
        y_train=y[train_idx],
        x_val=convert(mnist.x_train[val_idx]),
        y_val=y[val_idx],
        x_test=convert(mnist.x_test),
        y_test=mnist.y_test.astype(np.int64),
    )


@register_source("mnist")
class MnistSource(Source):
    """The chapter's digits: MNIST's train and t10k files, 28x28x1 uint8."""

    summary = "the chapter's digits"
    order = 0

    def load(self, options: DataOptions) -> Dataset:
        import cnnlab.data as data  # the package: tests stand in for its load_mnist

        mnist = data.load_mnist(options.data_dir, allow_download=options.allow_download)
        splits = data.prepare(mnist, options.seed, options.val_fraction, scaled=False)
        record = {
            "source": "mnist",
            "files": "MNIST IDX files, SHA-256 verified",
            "val_split": split_record(options.seed, options.val_fraction),
            "test_split": {"drawn": False, "from": "the t10k files"},
            "counts": splits.counts(),
        }
        return Dataset(
            self.spec, splits, list(DIGITS), "MNIST digits, 28x28x1", "images", True, record
        )

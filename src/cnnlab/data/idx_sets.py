"""``fashion-mnist`` and ``kmnist``: MNIST's format and shape (28x28x1 uint8), other pictures.

Both ship the four gzipped IDX files MNIST does. They are looked for in
``<data>/fashion-mnist/`` or ``<data>/kmnist/`` (:mod:`cnnlab.data.store`), downloaded into
the cache when missing, and every file is checked against its published size and SHA-256
(of the .gz as published) before a byte of it is parsed. The split is the chapter's:
validation drawn, stratified and seeded, from the training files; the t10k files are the
test set.

Checksums: TensorFlow Datasets' ``url_checksums/fashion_mnist.txt`` and
``url_checksums/kmnist.txt`` (tensorflow/datasets, commit 333639b3), which list each URL,
its size in bytes and its SHA-256; the same sums appear in torchvision-style loaders and in
the datasets' own pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from cnnlab.data import store
from cnnlab.data.base import DataOptions, Dataset, Source, register_source
from cnnlab.data.idx import parse_idx, read_bytes
from cnnlab.data.mnist import MNIST, prepare
from cnnlab.data.splits import split_record
from cnnlab.errors import CnnlabError

IMAGES = 28 * 28
NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@dataclass(frozen=True)
class IdxSet:
    """A dataset published as MNIST's four gzipped IDX files."""

    name: str  # the spec, and the folder under the data root
    title: str
    mirrors: tuple[str, ...]  # f"{mirror}{file}" is a file's URL
    files: dict[str, tuple[int, str]]  # file -> (size in bytes, SHA-256) of the .gz
    classes: tuple[str, ...]
    counts: tuple[int, int]  # (train, test) examples in the published files


FASHION_MNIST = IdxSet(
    "fashion-mnist",
    "Fashion-MNIST (Zalando article images)",
    (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    {  # tensorflow/datasets url_checksums/fashion_mnist.txt
        NAMES[0]: (26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        NAMES[1]: (29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        NAMES[2]: (4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        NAMES[3]: (5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    },
    (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    (60_000, 10_000),
)

KMNIST = IdxSet(
    "kmnist",
    "Kuzushiji-MNIST (cursive hiragana)",
    (
        "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
    ),
    {  # tensorflow/datasets url_checksums/kmnist.txt
        NAMES[0]: (18165135, "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4"),
        NAMES[1]: (29497, "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17"),
        NAMES[2]: (3041136, "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5"),
        NAMES[3]: (5120, "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c"),
    },
    # kmnist_classmap.csv: お き す つ な は ま や れ を (U+304A ... U+3092), romanised
    ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    (60_000, 10_000),
)


def _fix(path: Path, dataset: IdxSet) -> str:
    return (
        f"delete {path} so that cnnlab downloads a fresh copy, or replace it with the "
        f"original {dataset.name} file"
    )


def resolve(dataset: IdxSet, file: str, data_dir: Path | None, allow_download: bool) -> Path:
    """The verified path of one of the dataset's files (downloaded into the cache if missing)."""
    size, digest = dataset.files[file]
    path = store.locate(dataset.name, [file], data_dir)
    if path is None:
        if not allow_download:
            where = ", ".join(str(d) for d in store.search_dirs(dataset.name, data_dir))
            raise CnnlabError(f"{dataset.name} file {file} not found (looked in {where})")
        folder = store.default_cache_dir(dataset.name)
        return store.download(
            [mirror + file for mirror in dataset.mirrors],
            folder / file,
            max_bytes=size,
            check=lambda tmp: store.check_file(tmp, size, digest),
            what=f"{dataset.name} {file}",
            hint=store.missing_hint(dataset.name, f"the {dataset.name} files", data_dir),
        )
    if not path.is_file():
        raise CnnlabError(f"{path} is not a regular file: {_fix(path, dataset)}")
    try:
        store.check_file(path, size, digest)
    except ValueError as exc:
        raise CnnlabError(f"{path} failed verification: {exc}; {_fix(path, dataset)}") from None
    except OSError as exc:
        raise CnnlabError(f"cannot read {path}: {exc.strerror or exc}") from None
    return path


def load_idx_set(
    dataset: IdxSet, data_dir: Path | None = None, *, allow_download: bool = True
) -> MNIST:
    """The four files, verified and parsed: uint8 images (N, 28, 28), uint8 labels (N,)."""
    arrays = []
    for file in NAMES:
        path = resolve(dataset, file, data_dir, allow_download)
        images = "images" in file
        n = dataset.counts[0 if file.startswith("train") else 1]
        cap = 16 + n * IMAGES if images else 8 + n
        arrays.append(parse_idx(read_bytes(path, cap), source=str(path)))
    x_train, y_train, x_test, y_test = arrays
    for split, x, y in (("train", x_train, y_train), ("t10k", x_test, y_test)):
        if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
            raise CnnlabError(
                f"{dataset.name} {split} images have shape {x.shape}, not (N, 28, 28)"
            )
        if y.shape != (len(x),) or y.dtype != np.uint8:
            raise CnnlabError(f"{dataset.name} {split} labels do not match its {len(x)} images")
        if y.size and int(y.max()) >= len(dataset.classes):
            raise CnnlabError(f"{dataset.name} {split} labels go up to {int(y.max())}")
    return MNIST(x_train, y_train, x_test, y_test)


class IdxSetSource(Source):
    """A standard set in MNIST's format; subclasses name the :class:`IdxSet`."""

    dataset: ClassVar[IdxSet]

    def load(self, options: DataOptions) -> Dataset:
        data = load_idx_set(self.dataset, options.data_dir, allow_download=options.allow_download)
        splits = prepare(data, options.seed, options.val_fraction, scaled=False)
        record = {
            "source": self.dataset.name,
            "files": "IDX files, size and SHA-256 verified",
            "val_split": split_record(options.seed, options.val_fraction),
            "test_split": {"drawn": False, "from": "the t10k files"},
            "counts": splits.counts(),
        }
        what = f"{self.dataset.title}, 28x28x1"
        classes = list(self.dataset.classes)
        return Dataset(self.spec, splits, classes, what, "images", True, record)


@register_source("fashion-mnist")
class FashionMnistSource(IdxSetSource):
    dataset = FASHION_MNIST
    summary = "Zalando's clothes, 28x28x1"
    order = 10


@register_source("kmnist")
class KmnistSource(IdxSetSource):
    dataset = KMNIST
    summary = "cursive hiragana, 28x28x1"
    order = 20

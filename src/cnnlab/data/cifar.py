"""``cifar10``: CIFAR-10 from its binary version, 32x32x3 uint8, ten classes.

Only ``cifar-10-binary.tar.gz`` is read: the "python version" is pickled, and unpickling
a file runs whatever code it holds, so cnnlab never loads it. The archive is looked for in
``<data>/cifar10/`` (:mod:`cnnlab.data.store`), downloaded into the cache when missing, and
checked against its published size and SHA-256 before it is opened (tensorflow/datasets
``url_checksums/cifar10.txt``, commit 333639b3: 170,052,171 bytes, c4a38c50...).

The archive is read as data: its members are listed without extracting anything; only
the expected names (``data_batch_1.bin`` ... ``data_batch_5.bin``, ``test_batch.bin``,
``batches.meta.txt``) are read, each a regular file of the expected size. A record is one
label byte then 3072 pixel bytes, channel-planar (1024 red, 1024 green, 1024 blue, rows
of 32), which become (32, 32, 3) channels-last.
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from cnnlab import fileio
from cnnlab.data import store
from cnnlab.data.base import DataOptions, Dataset, Source, register_source
from cnnlab.data.splits import split_indices, split_record
from cnnlab.errors import CnnlabError

ARCHIVE = "cifar-10-binary.tar.gz"
URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",)
CHECKSUM = (170_052_171, "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd")
RECORD = 1 + 32 * 32 * 3
PER_BATCH = 10_000
TRAIN = tuple(f"data_batch_{k}.bin" for k in range(1, 6))
TEST = "test_batch.bin"
META = "batches.meta.txt"
MAX_META = 4096
MAX_MEMBERS = 64


def resolve(
    data_dir: Path | None, allow_download: bool, checksum: tuple[int, str] | None = None
) -> Path:
    """The verified archive (downloaded into the cache if missing); ``checksum``: (size,
    SHA-256), :data:`CHECKSUM` by default (looked up at call time: tests stand in for it)."""
    size, digest = checksum or CHECKSUM
    path = store.locate("cifar10", [ARCHIVE], data_dir)
    fix = "delete it so that cnnlab downloads a fresh copy, or replace it with the original"
    if path is None:
        if not allow_download:
            where = ", ".join(str(d) for d in store.search_dirs("cifar10", data_dir))
            raise CnnlabError(f"CIFAR-10 archive {ARCHIVE} not found (looked in {where})")
        folder = store.default_cache_dir("cifar10")
        return store.download(
            URLS,
            folder / ARCHIVE,
            max_bytes=size,
            check=lambda tmp: store.check_file(tmp, size, digest),
            what=ARCHIVE,
            hint=store.missing_hint("cifar10", ARCHIVE, data_dir),
        )
    if not path.is_file():
        raise CnnlabError(f"{path} is not a regular file; {fix}")
    try:
        store.check_file(path, size, digest)
    except ValueError as exc:
        raise CnnlabError(f"{path} failed verification: {exc}; {fix}") from None
    except OSError as exc:
        raise CnnlabError(f"cannot read {path}: {exc.strerror or exc}") from None
    return path


def parse_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Records -> uint8 images (n, 32, 32, 3) channels-last and uint8 labels (n,)."""
    if len(data) % RECORD or not data:
        raise CnnlabError(f"{source} holds {len(data)} bytes, not whole {RECORD}-byte records")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)  # (n, 3073)
    planes = records[:, 1:].reshape(-1, 3, 32, 32)  # (n, C, H, W) as stored
    return np.ascontiguousarray(planes.transpose(0, 2, 3, 1)), records[:, 0].copy()


def read_archive(path: Path) -> dict[str, bytes]:
    """The expected members' bytes, read without extracting anything."""
    wanted = {*TRAIN, TEST, META}
    found: dict[str, bytes] = {}
    try:
        # fileio's reader: a FIFO or device is refused, never waited on; gzip bounds the rest
        with (
            fileio.open_regular(path, fileio.ANY_SIZE) as raw,
            tarfile.open(fileobj=raw, mode="r:gz") as tar,
        ):
            for count, member in enumerate(tar):
                if count >= MAX_MEMBERS:
                    raise CnnlabError(f"{path} holds more than {MAX_MEMBERS} members")
                name = PurePosixPath(member.name).name
                if name not in wanted:
                    continue  # readme.html, the folder: never read
                if not member.isreg():
                    raise CnnlabError(f"{path}: member {member.name} is not a regular file")
                cap = MAX_META if name == META else PER_BATCH * RECORD
                if member.size > cap or name in found:
                    raise CnnlabError(f"{path}: member {member.name} is not the expected file")
                f = tar.extractfile(member)
                assert f is not None  # a regular file
                found[name] = f.read(cap + 1)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise CnnlabError(f"{path} is not a readable tar.gz archive: {exc}") from None
    missing = sorted(wanted - found.keys())
    if missing:
        raise CnnlabError(f"{path} holds no {missing[0]}: not the CIFAR-10 binary version")
    return found


def load_cifar10(
    data_dir: Path | None = None,
    *,
    allow_download: bool = True,
    checksum: tuple[int, str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(x_train, y_train, x_test, y_test, classes): uint8 (N, 32, 32, 3), int64 labels."""
    path = resolve(data_dir, allow_download, checksum)
    members = read_archive(path)
    classes = [line.strip() for line in members[META].decode("ascii", "replace").splitlines()]
    classes = [c for c in classes if c]
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise CnnlabError(f"{path}: {META} does not list distinct class names")
    parts = [parse_batch(members[name], f"{path}:{name}") for name in TRAIN]
    x_train = np.concatenate([x for x, _ in parts])
    y_train = np.concatenate([y for _, y in parts]).astype(np.int64)
    x_test, y = parse_batch(members[TEST], f"{path}:{TEST}")
    y_test = y.astype(np.int64)
    top = int(max(y_train.max(), y_test.max()))
    if top >= len(classes):
        raise CnnlabError(f"{path}: a label is {top}, but {META} names {len(classes)} classes")
    return x_train, y_train, x_test, y_test, classes


@register_source("cifar10")
class Cifar10Source(Source):
    """CIFAR-10's binary version: 50,000 training and 10,000 test images, 32x32x3."""

    summary = "CIFAR-10, 32x32x3"
    order = 30

    def load(self, options: DataOptions) -> Dataset:
        from cnnlab.data.base import Splits

        x_train, y_train, x_test, y_test, classes = load_cifar10(
            options.data_dir, allow_download=options.allow_download
        )
        train, val = split_indices(y_train, options.seed, options.val_fraction)
        splits = Splits(x_train[train], y_train[train], x_train[val], y_train[val], x_test, y_test)
        record = {
            "source": "cifar10",
            "files": f"{ARCHIVE}, size and SHA-256 verified",
            "val_split": split_record(options.seed, options.val_fraction),
            "test_split": {"drawn": False, "from": TEST},
            "counts": splits.counts(),
        }
        what = "CIFAR-10, 32x32x3"
        return Dataset(self.spec, splits, classes, what, "images", True, record)

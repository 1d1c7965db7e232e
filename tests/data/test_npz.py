"""npz:PATH: every rank, integer and string labels, and bad or hostile files as one line."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data import DataOptions, Dataset
from cnnlab.data.datasets import load_dataset
from cnnlab.errors import CnnlabError

OPTS = DataOptions(progress=False)


def write(path: Path, **arrays: object) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def load(path: Path, **changes: object) -> Dataset:
    from dataclasses import replace

    return load_dataset(f"npz:{path}", replace(OPTS, **changes))


def labels(n: int, k: int = 3) -> np.ndarray:
    return np.arange(n) % k


@pytest.mark.parametrize(
    ("shape", "dtype", "kind", "input_shape"),
    [
        ((30, 50), np.float32, "series", (50, 1)),  # (N, L): one channel
        ((30, 50, 2), np.float64, "series", (50, 2)),  # (N, L, C)
        ((30, 8, 9), np.uint8, "images", (8, 9, 1)),  # (N, H, W) uint8: one channel
        ((30, 8, 9, 3), np.uint8, "images", (8, 9, 3)),
        ((30, 8, 9, 3), np.float32, "images", (8, 9, 3)),
        ((30, 4, 6, 6, 1), np.uint8, "clips", (4, 6, 6, 1)),
    ],
)
def test_ranks_give_kinds(
    tmp_path: Path, shape: tuple[int, ...], dtype: type, kind: str, input_shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(0)
    x = (rng.random(shape) * 255).astype(dtype)
    path = write(tmp_path / "d.npz", x_train=x, y_train=labels(30))
    ds = load(path)
    assert ds.kind == kind and ds.input_shape == input_shape
    assert ds.pixels == (dtype == np.uint8)
    assert ds.splits.x_train.dtype == (np.uint8 if dtype == np.uint8 else np.float32)
    assert ds.classes == ["0", "1", "2"]
    # every row of x appears once across the splits, with its label
    flat = x.reshape(30, -1).astype(ds.splits.x_train.dtype)
    seen = []
    for xs, ys in ((ds.splits.x_train, ds.splits.y_train), (ds.splits.x_val, ds.splits.y_val),
                   (ds.splits.x_test, ds.splits.y_test)):  # fmt: skip
        for row, label in zip(xs.reshape(len(xs), -1), ys, strict=True):
            i = int(np.flatnonzero((flat == row).all(axis=1))[0])
            assert label == labels(30)[i]
            seen.append(i)
    assert sorted(seen) == list(range(30))
    assert ds.preprocessing["test_split"]["drawn"] is True
    json.dumps(ds.record())


def test_string_labels_and_given_test_set(tmp_path: Path) -> None:
    names = np.array(["walk", "run", "stand10", "stand2"])
    y = names[np.arange(24) % 4]
    x = np.random.default_rng(1).normal(size=(24, 20, 3))
    path = write(
        tmp_path / "m.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8]
    )  # fmt: skip
    ds = load(path)
    assert ds.classes == ["run", "stand2", "stand10", "walk"]  # natural order
    assert [ds.classes[k] for k in ds.splits.y_test] == y[:8].tolist()
    np.testing.assert_array_equal(ds.splits.x_test, x[:8].astype(np.float32))
    assert ds.preprocessing["test_split"] == {"drawn": False, "from": "x_test, y_test"}
    assert ds.preprocessing["labels"] == "strings"
    ordered = write(tmp_path / "o.npz", x_train=x, y_train=y, class_names=names)
    assert load(ordered).classes == names.tolist()  # class_names' order


def test_integer_labels_with_class_names_and_column_labels(tmp_path: Path) -> None:
    x = np.zeros((12, 5, 5, 1), np.uint8)
    y = (np.arange(12) % 2).reshape(12, 1)  # Keras' (N, 1) labels
    path = write(tmp_path / "c.npz", x_train=x, y_train=y, class_names=np.array(["cat", "dog"]))
    ds = load(path)
    assert ds.classes == ["cat", "dog"] and ds.splits.y_train.dtype == np.int64
    floats = write(tmp_path / "f.npz", x_train=x, y_train=y.astype(np.float64).ravel())
    assert load(floats).classes == ["0", "1"]


def huge_claim(path: Path) -> Path:
    """A stored member whose header claims (10**12, 1000) float64 but holds 16 bytes."""
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 1000), }"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(16)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x_train.npy", npy)
        buf = io.BytesIO()
        np.save(buf, np.zeros(3, np.int64))
        zf.writestr("y_train.npy", buf.getvalue())
    return path


def pickled(path: Path) -> Path:
    np.savez(path, x_train=np.array([{"a": 1}, None], dtype=object), y_train=np.zeros(2))
    return path


def arrays(**members: object) -> object:
    """A maker of an .npz holding ``members``."""
    return lambda path: write(path, **members)


X = np.zeros((4, 3))
Y = labels(4, 2)
NAN = np.array([[0.0, 1], [2, np.nan], [1, 1], [0, 0]])
AB = np.array(["a", "b"])

BAD = {
    "missing": (lambda p: p, "not found"),
    "not a zip": (lambda p: (p.write_text("x_train,y_train\n1,2\n"), p)[1], "not a readable .npz"),
    "no y_train": (arrays(x_train=X), r"has no y_train \(it holds x_train\)"),
    "pickled objects": (pickled, "holds Python objects"),
    "huge claim": (huge_claim, r"declares shape \(1000000000000, 1000\) float64"),
    "int16 inputs": (arrays(x_train=X.astype(np.int16), y_train=Y), "x_train is int16: give uint8"),
    "rank 1": (arrays(x_train=np.zeros(4), y_train=Y), "has shape"),
    "rank 6": (arrays(x_train=np.zeros((4, 1, 1, 1, 1, 1)), y_train=Y), "has shape"),
    "lengths differ": (arrays(x_train=X, y_train=labels(5)), r"y_train has shape \(5,\) for 4"),
    "one-hot": (arrays(x_train=X, y_train=np.eye(4, 2)), "not one-hot rows"),
    "nan": (arrays(x_train=NAN, y_train=Y), r"x_train\[1\] holds NaN or inf"),
    "float64 overflow": (
        arrays(x_train=np.full((4, 2), 1e300), y_train=Y),
        r"x_train\[0\] holds NaN or inf \(in float32\)",
    ),
    "negative label": (arrays(x_train=X, y_train=np.array([0, 1, -1, 0])), "negative label"),
    "label past class_names": (
        arrays(x_train=X, y_train=np.array([0, 1, 2, 0]), class_names=AB),
        "a label is 2, but class_names lists 2 classes",
    ),
    "string not in class_names": (
        arrays(x_train=X, y_train=np.array(["a", "b", "c", "a"]), class_names=AB),
        "label 'c' is not in class_names",
    ),
    "fractional labels": (
        arrays(x_train=X, y_train=np.array([0, 0.5, 1, 0])),
        "non-integer values",
    ),
    "single class": (arrays(x_train=X, y_train=np.zeros(4, int)), "single class"),
    "x_test alone": (
        arrays(x_train=X, y_train=Y, x_test=np.zeros((2, 3))),
        "one of x_test and y_test",
    ),
    "test rows differ": (
        arrays(x_train=X, y_train=Y, x_test=np.zeros((2, 4)), y_test=labels(2, 2)),
        r"x_test has rows of \(4,\), x_train of \(3,\)",
    ),
    "test-only class": (
        arrays(x_train=X, y_train=Y, x_test=np.zeros((3, 3)), y_test=np.array([0, 1, 2])),
        "y_test holds class '2', y_train none",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files_are_one_line(tmp_path: Path, case: str) -> None:
    make, message = BAD[case]
    path = make(tmp_path / "bad.npz")  # type: ignore[operator]
    with pytest.raises(CnnlabError, match=message) as info:
        load(path)
    assert "\n" not in str(info.value)


def test_a_huge_claim_is_refused_without_allocating(tmp_path: Path) -> None:
    import tracemalloc

    path = huge_claim(tmp_path / "h.npz")
    tracemalloc.start()
    with pytest.raises(CnnlabError):
        load(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 << 20, peak


def test_more_than_memory_is_refused_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cnnlab.data import npz

    path = write(tmp_path / "d.npz", x_train=np.zeros((100, 100), np.float32), y_train=labels(100))
    monkeypatch.setattr(npz, "available_memory", lambda: 50_000)
    with pytest.raises(CnnlabError, match=r"needing about 0\.\d GB to load and split"):
        load(path)

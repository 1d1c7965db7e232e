"""RowView: lazy rows of a .npy file, indexed like an array, kept out of resident memory."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data.rows import RowView
from cnnlab.data.scaling import iterate_batches
from cnnlab.errors import CnnlabError

MiB = 1 << 20


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, np.ndarray]:
    array = np.random.default_rng(0).integers(0, 256, (50, 3, 4, 2), dtype=np.uint8)
    path = tmp_path / "a.npy"
    np.save(path, array)
    return path, array


def test_indexing_matches_numpy(saved: tuple[Path, np.ndarray]) -> None:
    path, a = saved
    v = RowView(path)
    assert v.shape == a.shape and v.dtype == a.dtype and len(v) == 50 and v.ndim == 4
    assert v.nbytes == a.nbytes
    for index in (0, 49, -1, -50, np.int64(7)):
        np.testing.assert_array_equal(v[index], a[index])
    for index in (slice(None), slice(3, 9), slice(None, None, -3), slice(40, 200)):
        np.testing.assert_array_equal(v[index], a[index])
    for index in ([5, 5, 0, 49, 12], [[1, 2], [3, 1]], np.arange(50) % 2 == 0):
        np.testing.assert_array_equal(v[np.asarray(index)], a[np.asarray(index)])
    assert v[np.array([], dtype=int)].shape == (0, 3, 4, 2)
    np.testing.assert_array_equal(v[2:5, 1], a[2:5, 1])
    np.testing.assert_array_equal(np.asarray(v), a)
    with pytest.raises(IndexError):
        v[50]
    with pytest.raises(IndexError):
        v[np.array([0.5])]


def test_take_narrows_without_reading(saved: tuple[Path, np.ndarray]) -> None:
    path, a = saved
    rows = np.array([9, 3, 3, 40])
    v = RowView(path).take(rows)
    assert v.shape == (4, 3, 4, 2)
    np.testing.assert_array_equal(np.asarray(v), a[rows])
    np.testing.assert_array_equal(v.take(slice(1, 3))[:], a[rows[1:3]])
    with pytest.raises(CnnlabError, match="outside the 50 rows"):
        RowView(path, rows=np.array([50]))


def test_pickles_without_its_descriptor(saved: tuple[Path, np.ndarray]) -> None:
    path, a = saved
    v = RowView(path).take(np.array([4, 2]))
    v[0]  # opens the file
    w = pickle.loads(pickle.dumps(v))
    np.testing.assert_array_equal(w[:], a[[4, 2]])


def test_damaged_files_are_refused(tmp_path: Path, saved: tuple[Path, np.ndarray]) -> None:
    path, a = saved
    short = tmp_path / "short.npy"
    short.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(CnnlabError, match=r"holds .* bytes, its header declares"):
        RowView(short)
    fortran = tmp_path / "f.npy"
    np.save(fortran, np.asfortranarray(a[:, :, :, 0]))
    with pytest.raises(CnnlabError, match="only C-ordered"):
        RowView(fortran)
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(CnnlabError, match=r"not a readable \.npy file"):
        RowView(tmp_path / "text.npy")


def rss() -> int:
    """This process's resident memory (VmRSS), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_reading_every_row_keeps_resident_memory_flat(tmp_path: Path) -> None:
    """An epoch of shuffled batches over a 96 MiB file: RSS grows by a few batches, where
    a memmap keeps every page it touched (the control shows the measurement works)."""
    n, row = 3072, 32 * 1024  # 96 MiB of rows
    path = tmp_path / "big.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|u1", "fortran_order": False, "shape": (n, row)}
        )
        chunk = np.random.default_rng(0).integers(0, 256, (256, row), dtype=np.uint8)
        for _ in range(n // 256):
            f.write(chunk.tobytes())
    order = np.random.default_rng(1).permutation(n)
    labels = np.zeros(n)
    view = RowView(path)
    start = rss()
    total = 0
    for xb, _ in iterate_batches(view, labels, order, 32):
        total += int(xb[:, 0].sum())
    grew = rss() - start
    assert grew < 12 * MiB, f"RowView: RSS grew {grew / MiB:.1f} MiB"
    mm = np.load(path, mmap_mode="r")
    start = rss()
    for k in order:  # the same epoch through a memmap, row by row
        total += int(mm[k, ::512].sum())
    touched = rss() - start
    del mm
    assert touched > 24 * MiB, f"control: a memmap's RSS grew only {touched / MiB:.1f} MiB"

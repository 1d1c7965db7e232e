"""Lazy rows of a ``.npy`` file: a split that is read batch by batch, never whole.

A :class:`RowView` is a list of row numbers into a C-ordered ``.npy`` file. Indexing it
reads just those rows with ``os.preadv`` straight into a fresh array. Why not
``np.memmap``: every page a memmap touches stays mapped into the process and counts in
its resident memory (RSS) until the map is dropped, so one epoch over a 3 GB cache
leaves a 3 GB process. Read with ``pread``, the pages live in the kernel's page cache,
which the kernel can reclaim at will, and the process holds only the batch it asked for
(benchmarks/bench_folder.py measures both).
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab import fileio
from cnnlab.errors import CnnlabError

MAX_HEADER = 1 << 16
IOV_ROWS = 512  # rows per preadv call: under every system's IOV_MAX (1024 on Linux)


def read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """(shape, dtype, data offset) of a C-ordered ``.npy`` file, checked against its size."""
    try:
        with fileio.open_regular(path, fileio.ANY_SIZE) as f:  # regular files only
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
            size = os.fstat(f.fileno()).st_size
    except (OSError, ValueError) as exc:
        raise CnnlabError(f"{path} is not a readable .npy file: {exc}") from None
    if fortran or dtype.hasobject or offset > MAX_HEADER:
        raise CnnlabError(f"{path}: only C-ordered plain arrays are read lazily")
    need = offset + math.prod(shape) * dtype.itemsize
    if size != need:
        raise CnnlabError(f"{path} holds {size:,} bytes, its header declares {need:,}")
    return tuple(int(s) for s in shape), dtype, offset


class RowView:
    """Rows ``rows`` of the ``.npy`` file at ``path``, read on demand.

    ``.shape``, ``.dtype``, ``.ndim``, ``len()``; ``view[i]`` is one row, ``view[a:b]``,
    ``view[index_array]`` and ``view[bool_mask]`` are arrays (read now);
    :meth:`take` is a narrower view (nothing read). ``np.asarray(view)`` reads every row.
    Safe to share between threads and to pickle into other processes.

    ``layout`` (shape, dtype, data offset) reads an array stored elsewhere than at the
    start of a ``.npy`` file: an ``.npz`` member stored uncompressed (:mod:`.npz_rows`).
    """

    def __init__(
        self,
        path: Path | str,
        rows: np.ndarray | None = None,
        layout: tuple[tuple[int, ...], np.dtype[Any], int] | None = None,
    ) -> None:
        self.path = Path(path)
        if layout is None:
            shape, self.dtype, self.offset = read_npy_header(self.path)
        else:
            shape, self.dtype, self.offset = layout
        if len(shape) < 1:
            raise CnnlabError(f"{self.path} holds a scalar, not rows")
        self._file_rows = shape[0]
        self.row_shape: tuple[int, ...] = shape[1:]
        self.row_bytes = math.prod(self.row_shape) * self.dtype.itemsize
        if rows is None:
            self.rows = np.arange(shape[0], dtype=np.int64)
        else:
            self.rows = np.asarray(rows, dtype=np.int64).reshape(-1)
            if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= shape[0]):
                raise CnnlabError(f"row numbers outside the {shape[0]} rows of {self.path}")
        self._fd: int | None = None
        self._pid = -1
        self._lock = threading.Lock()

    # ---- array-like surface ------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.row_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    @property
    def nbytes(self) -> int:
        return len(self.rows) * self.row_bytes

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"RowView({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def take(self, index: Any) -> RowView:
        """The view of ``self[index]``'s rows, without reading them."""
        view = RowView.__new__(RowView)
        view.__setstate__({**self.__getstate__(), "rows": self.rows[index].reshape(-1)})
        return view

    def with_channel(self) -> RowView:
        """The same rows with a trailing axis of 1 (the same bytes: nothing read)."""
        view = self.take(slice(None))
        view.row_shape = (*self.row_shape, 1)
        return view

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, int | np.integer):
            i = int(index)
            i += len(self.rows) if i < 0 else 0
            if not 0 <= i < len(self.rows):
                raise IndexError(f"row {int(index)} out of range for {len(self.rows)} rows")
            return self._read(self.rows[i : i + 1])[0]
        if isinstance(index, tuple):  # rows first, then within each row in memory
            return self[index[0]][(slice(None), *index[1:])]
        if isinstance(index, slice):
            return self._read(self.rows[index])
        arr = np.asarray(index)
        if arr.dtype == bool:
            if arr.shape != (len(self.rows),):
                raise IndexError(f"boolean index of shape {arr.shape} for {len(self.rows)} rows")
            return self._read(self.rows[arr])
        if arr.dtype.kind not in "iu":
            raise IndexError(f"rows are indexed by int, slice or integer array, not {arr.dtype}")
        return self._read(self.rows[arr.reshape(-1)]).reshape(*arr.shape, *self.row_shape)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self._read(self.rows)
        return out if dtype is None else out.astype(dtype, copy=False)

    # ---- reading -----------------------------------------------------------------------
    def _descriptor(self) -> int:
        """The file, opened once per process (a forked child opens its own)."""
        with self._lock:
            if self._fd is None or self._pid != os.getpid():
                self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                self._pid = os.getpid()
            return self._fd

    def _read(self, file_rows: np.ndarray) -> np.ndarray:
        """Rows ``file_rows`` of the file, in that order: (n, *row_shape)."""
        out = np.empty((len(file_rows), *self.row_shape), dtype=self.dtype)
        if not len(file_rows) or not self.row_bytes:
            return out
        fd = self._descriptor()
        flat = out.reshape(len(file_rows), self.row_bytes // self.dtype.itemsize).view(np.uint8)
        # Sorted, so runs of consecutive rows are read in one call each.
        order = np.argsort(file_rows, kind="stable")
        sorted_rows = file_rows[order]
        breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
        for run in np.split(np.arange(len(order)), breaks):
            first = int(sorted_rows[run[0]])
            targets = [memoryview(flat[k]) for k in order[run]]
            self._read_into(fd, targets, self.offset + first * self.row_bytes)
        return out

    def _read_into(self, fd: int, targets: list[memoryview], offset: int) -> None:
        """Fill ``targets`` (consecutive rows from ``offset``), ``IOV_ROWS`` rows a call."""
        try:
            for first in range(0, len(targets), IOV_ROWS):
                group = targets[first : first + IOV_ROWS]
                at = offset + first * self.row_bytes
                got = os.preadv(fd, group, at) if hasattr(os, "preadv") else 0
                if got != len(group) * self.row_bytes:  # no preadv, or a short read
                    for k, target in enumerate(group):
                        data = os.pread(fd, self.row_bytes, at + k * self.row_bytes)
                        if len(data) != self.row_bytes:
                            raise CnnlabError(f"{self.path} is shorter than its header declares")
                        target[:] = data
        except OSError as exc:
            raise CnnlabError(f"cannot read {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to close with
            pass

    # ---- pickling: the path and the rows, never the descriptor -------------------------
    def __getstate__(self) -> dict[str, Any]:
        keep = ("path", "dtype", "offset", "_file_rows", "row_shape", "row_bytes", "rows")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fd = None
        self._pid = -1
        self._lock = threading.Lock()

"""Large ``.npz`` inputs read by rows (:class:`~cnnlab.data.rows.RowView`), never whole.

An input member (``x_train``, ``x_test``) over :data:`LOAD_WHOLE_BYTES` is not loaded:

- stored uncompressed (``np.savez``), C-ordered, uint8 or float32: a ``.npy`` lies whole
  inside the zip, so its rows are read straight from the ``.npz`` at the member's data
  offset (its local file header, then the ``.npy`` header);
- compressed (``np.savez_compressed``), or floats other than float32: extracted once,
  streamed in bounded chunks (floats converted to float32), into the data cache as a plain
  ``.npy`` named by the file's path, size, time and the member's CRC, then read by rows.

Floats are checked for NaN and inf once, in chunks; the verdict is kept in the cache beside
the extracted files (by the same key), so a second run does not read the whole file again.
Under several processes each rank then reads only its shard of each batch
(:mod:`cnnlab.engine.feed`).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import struct
import zipfile
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np

from cnnlab import fileio
from cnnlab.data.rows import RowView, read_npy_header
from cnnlab.data.store import cache_root
from cnnlab.errors import CnnlabError

# Below this an input member is loaded whole, as before: a split that small moves to the
# device once and its batches are gathered there (engine/feed.py takes an ndarray as "in
# memory", a RowView as "read by rows"), which is faster than reading rows; 256 MiB keeps
# MNIST-sized (47 MB) and CIFAR-10-sized (150 MB) arrays in memory, and bounds what each
# process holds per member, as the folder's cache (always a RowView) never loads more.
LOAD_WHOLE_BYTES = 256 << 20
CHUNK_BYTES = 16 << 20  # what one step of a check or an extraction holds
LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, 22 bytes, name length, extra length
CACHE_VERSION = 1
FLOAT32 = np.dtype("=f4")


def lazy(nbytes: int) -> bool:
    """Whether an input member of ``nbytes`` is read by rows rather than loaded."""
    return nbytes > LOAD_WHOLE_BYTES


def cache_key(path: Path, source: BinaryIO, info: zipfile.ZipInfo) -> str:
    """The file's path, size and time and the member's name and CRC, hashed."""
    st = os.fstat(source.fileno())
    text = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{info.filename}|{info.CRC}"
    return hashlib.sha256(f"{text}|{CACHE_VERSION}".encode()).hexdigest()[:32]


def data_offset(path: Path, source: BinaryIO, info: zipfile.ZipInfo, header: int) -> int:
    """Where a stored member's array data starts in the file (checked to fit in it)."""
    name = info.filename.removesuffix(".npy")
    fd = source.fileno()
    raw = os.pread(fd, LOCAL_HEADER.size, info.header_offset)
    if len(raw) != LOCAL_HEADER.size or raw[:4] != b"PK\x03\x04":
        raise CnnlabError(f"{path}: {name}'s zip header is damaged (no member at its offset)")
    _sig, name_len, extra_len = LOCAL_HEADER.unpack(raw)
    start = info.header_offset + LOCAL_HEADER.size + name_len + extra_len
    if os.pread(fd, 6, start) != b"\x93NUMPY":
        raise CnnlabError(f"{path}: {name}'s data is not where its zip header puts it")
    if start + info.file_size > os.fstat(fd).st_size:
        raise CnnlabError(f"{path}: {name} runs past the end of the file (truncated?)")
    return start + header


def first_bad_row(chunk: np.ndarray) -> int | None:
    """The first row of ``chunk`` holding NaN or inf, if any."""
    finite = np.isfinite(chunk)
    if finite.all():
        return None
    return int(np.flatnonzero(~finite.reshape(len(finite), -1).all(1))[0])


def check_finite(view: RowView, name: str, mark: Path | None) -> None:
    """NaN and inf refused, read ``CHUNK_BYTES`` at a time; once per file (``mark``)."""
    if mark is not None and mark.is_file():
        return
    step = max(1, CHUNK_BYTES // max(1, view.row_bytes))
    for start in range(0, len(view), step):
        bad = first_bad_row(view[start : start + step])
        if bad is not None:
            raise CnnlabError(f"{name}[{start + bad}] holds NaN or inf: cnnlab does not impute")
    if mark is not None:
        try:
            mark.parent.mkdir(parents=True, exist_ok=True)
            fileio.atomic_write(mark, lambda f: f.write(b"finite\n"))
        except (OSError, CnnlabError):
            pass  # a read-only cache: checked again next time


def _read_exactly(f: IO[bytes], n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise CnnlabError(f"{what} is shorter than its header declares")
    return data


def _stream(
    src: IO[bytes], out: IO[bytes], shape: tuple[int, ...], dtype: np.dtype[Any], what: str
) -> None:
    """Copy one member's rows to ``out`` as a C-ordered .npy (floats as float32, checked)."""
    version = np.lib.format.read_magic(src)
    read = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    read(src, max_header_size=10_000)  # already checked by inspect(); skipped here
    target = np.dtype(np.uint8) if dtype == np.uint8 else FLOAT32
    header = {"descr": np.lib.format.dtype_to_descr(target), "fortran_order": False}
    np.lib.format.write_array_header_2_0(out, {**header, "shape": shape})
    row_bytes = math.prod(shape[1:]) * dtype.itemsize
    step = max(1, CHUNK_BYTES // max(1, row_bytes))
    for start in range(0, shape[0], step):
        k = min(step, shape[0] - start)
        raw = _read_exactly(src, k * row_bytes, what)
        chunk = np.frombuffer(raw, dtype=dtype).reshape(k, *shape[1:])
        if dtype.kind == "f":
            with np.errstate(over="ignore"):  # what overflows float32 is refused just below
                chunk = chunk.astype(FLOAT32)
            bad = first_bad_row(chunk)
            if bad is not None:
                raise CnnlabError(
                    f"{what}[{start + bad}] holds NaN or inf (in float32): cnnlab does not impute"
                )
        out.write(np.ascontiguousarray(chunk).tobytes())
    src.read(1)  # at the end: zipfile checks the member's CRC


def extract(
    path: Path, source: BinaryIO, info: zipfile.ZipInfo, shape: tuple[int, ...], dtype: Any
) -> Path:
    """The member as a plain .npy in the data cache, written once (atomically) and reused."""
    name = info.filename.removesuffix(".npy")
    folder = cache_root() / "npz"
    target = folder / f"{cache_key(path, source, info)}-{name}.npy"
    want = np.dtype(np.uint8) if dtype == np.uint8 else FLOAT32
    try:
        if read_npy_header(target)[:2] == (shape, want):
            return target
    except CnnlabError:
        pass  # absent or damaged: written again
    need = math.prod(shape) * want.itemsize
    try:
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise CnnlabError(f"cannot write the data cache {folder}: {exc.strerror or exc}") from None
    if need > free - (64 << 20):
        raise CnnlabError(
            f"{path}: extracting {name} needs {need / 1e9:.1f} GB in {folder}, which has "
            f"{free / 1e9:.1f} GB free"
        )
    from cnnlab.data.folder_cache import locked  # PIL and friends: only when extracting

    try:
        # several processes (torchrun's ranks) on one file: one extracts, the others wait
        with locked(folder / f".{target.name}.lock"):
            with contextlib.suppress(CnnlabError):
                if read_npy_header(target)[:2] == (shape, want):
                    return target  # another process wrote it while this one waited
            source.seek(0)
            with zipfile.ZipFile(source) as zf, zf.open(info) as src:
                fileio.atomic_write(target, lambda out: _stream(src, out, shape, dtype, name))
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        raise CnnlabError(f"{path}: {name} does not extract: {exc}") from None
    return target


def row_view(
    path: Path, source: BinaryIO, name: str, shape: tuple[int, ...], dtype: Any
) -> RowView:
    """A large input member as rows read on demand (see the module's docstring)."""
    try:
        source.seek(0)
        with zipfile.ZipFile(source) as zf:
            info = zf.getinfo(f"{name}.npy")
            with zf.open(info) as f:  # the .npy header's length, and its order
                version = np.lib.format.read_magic(f)
                read = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                _shape, fortran, _dtype = read(f, max_header_size=10_000)
                header = f.tell()
    except (zipfile.BadZipFile, KeyError, EOFError, ValueError, OSError) as exc:
        raise CnnlabError(f"{path}: {name} does not read: {exc}") from None
    if fortran:
        raise CnnlabError(
            f"{path}: {name} is stored in Fortran order, which cannot be read by rows: "
            "save it C-ordered (np.ascontiguousarray)"
        )
    mark = cache_root() / "npz" / f"{cache_key(path, source, info)}-{name}.finite"
    resolved = path.resolve()
    if info.compress_type == zipfile.ZIP_STORED and dtype in (np.uint8, FLOAT32):
        offset = data_offset(path, source, info, header)
        view = RowView(resolved, layout=(shape, np.dtype(dtype), offset))
        if view.dtype.kind == "f":
            check_finite(view, name, mark)
        return view
    # Extraction converts and checks floats as it streams: nothing left to check.
    return RowView(extract(resolved, source, info, shape, dtype))

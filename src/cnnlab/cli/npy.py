"""Reading a .npy array without trusting it (``cnnlab predict RUN_DIR --array X.npy``).

Regular files only (a device or a FIFO is refused before any byte is read), at most
``MAX_ARRAY_BYTES`` actually read, the header checked against the data's length and never
a pickled object (``allow_pickle=False``).

:func:`open_npy` maps the file instead of reading it (the same checks): a caller that
converts it a chunk at a time holds one chunk, not the file and its float32 copy.
"""

from __future__ import annotations

import io
import math
import mmap
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab import budget, fileio
from cnnlab.errors import CnnlabError

if TYPE_CHECKING:
    from cnnlab.serving.predict import Predictor

MAX_ARRAY_BYTES = fileio.NPY_ARRAY.limit
ARRAY_CHUNK = 1024  # inputs predicted at once, at most
ARRAY_CHUNK_BYTES = 64 << 20  # ... and at most about this much of them in float32
HEADER_BYTES = 1 << 16  # numpy's own cap on a header is 10,000 bytes (64 KiB for version 2)


def load_npy(path: Path, max_bytes: int = MAX_ARRAY_BYTES) -> np.ndarray:
    """A numeric array from a .npy file, read defensively; CnnlabError in one line if not."""
    # fileio's bounded reader: regular files only, at most max_bytes + 1 bytes ever read
    if os.path.isdir(path):
        raise CnnlabError(f"{path} is a folder; give a .npy file")
    kind = fileio.FileKind(fileio.NPY_ARRAY.noun, max_bytes)
    return _parse_npy(fileio.read_bounded(Path(path), kind), path)


def open_npy(path: Path, max_bytes: int = MAX_ARRAY_BYTES) -> np.ndarray:
    """The array of a .npy file, memory-mapped read-only; checked as :func:`load_npy`."""
    # fileio's reader: regular files only (a FIFO's open does not wait), size checked
    if os.path.isdir(path):
        raise CnnlabError(f"{path} is a folder; give a .npy file")
    kind = fileio.FileKind(fileio.NPY_ARRAY.noun, max_bytes)
    with fileio.open_regular(Path(path), kind) as f:
        st = os.fstat(f.fileno())
        head = f.read(min(st.st_size, HEADER_BYTES))
        shape, fortran, dtype, offset = _header(head, path)
        expected = math.prod(shape) * dtype.itemsize
        _check_length(st.st_size - offset, expected, shape, dtype, path)
        if expected == 0:  # mmap cannot map nothing
            return np.zeros(shape, dtype)
        try:
            return np.memmap(
                f, dtype, "r", offset, shape, "F" if fortran else "C"
            )  # the map keeps its own reference: closing the file leaves it readable
        except (ValueError, OSError) as exc:
            raise CnnlabError(f"{path}: cannot map the array ({_first_line(exc)})") from None


def _header(data: bytes, path: Path) -> tuple[tuple[int, ...], bool, np.dtype[Any], int]:
    """(shape, Fortran order, dtype, data offset) from a .npy file's first bytes; checked."""
    fmt = np.lib.format
    buf = io.BytesIO(data)
    try:
        version = fmt.read_magic(buf)
    except ValueError:
        raise CnnlabError(f"{path} is not a .npy file (as numpy.save writes)") from None
    try:
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(buf)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(buf)
        else:
            raise CnnlabError(f"{path}: .npy format version {version} is not supported")
    except (ValueError, SyntaxError, TypeError, EOFError) as exc:
        raise CnnlabError(f"{path}: malformed .npy header ({_first_line(exc)})") from None
    if dtype.hasobject:
        raise CnnlabError(f"{path} holds Python objects (a pickled array): refused, not read")
    return tuple(shape), bool(fortran), dtype, buf.tell()


def _check_length(
    have: int, expected: int, shape: tuple[int, ...], dtype: np.dtype[Any], path: Path
) -> None:
    if have != expected:
        raise CnnlabError(
            f"{path}: the data ({have:,} bytes) does not match its header "
            f"({_shape(shape)} of {dtype}, {expected:,} bytes): truncated or damaged"
        )


def _parse_npy(data: bytes, path: Path) -> np.ndarray:
    """The array in ``data``: its header checked first, then numpy.load without pickles."""
    shape, _, dtype, offset = _header(data, path)
    _check_length(len(data) - offset, math.prod(shape) * dtype.itemsize, shape, dtype, path)
    try:
        return np.asarray(np.load(io.BytesIO(data), allow_pickle=False))
    except (ValueError, OSError, EOFError) as exc:
        raise CnnlabError(f"{path}: cannot read the array ({_first_line(exc)})") from None


def chunk_rows(predictor: Predictor, limit: int) -> int:
    """Inputs predicted at once: :data:`ARRAY_CHUNK` or :data:`ARRAY_CHUNK_BYTES`' worth,
    fewer where the network's maps for that many would exceed the budget; refused where
    one input's would."""
    desc = predictor.description
    per_input = math.prod(predictor.input_shape) * budget.FLOAT
    rows = max(1, min(ARRAY_CHUNK, ARRAY_CHUNK_BYTES // per_input))
    return budget.fit_chunk(desc, rows, limit, "predicting with")


def array_probs(predictor: Predictor, x: np.ndarray, limit: int) -> np.ndarray:
    """Probabilities of the inputs in ``x`` (memory-mapped), converted a chunk at a time:
    the float32 copy and the network's maps are one chunk's, never the whole file's."""
    shape = predictor.input_shape
    batch = x.shape[1:] == shape or (shape[-1] == 1 and x.shape[1:] == shape[:-1])
    if not batch or x.ndim == 0:  # one input, or a shape as_batch refuses in its words
        return predictor.predict_array(np.asarray(x))
    budget.check(len(x) * predictor.classes * 4, f"{len(x):,} inputs' probabilities", limit)
    rows = chunk_rows(predictor, limit)
    out = np.empty((len(x), predictor.classes), np.float32)
    mapped = getattr(x, "_mmap", None)  # numpy's mmap object behind a np.memmap
    for i in range(0, len(x), rows):
        out[i : i + rows] = predictor.predict_array(np.asarray(x[i : i + rows]))
        if isinstance(mapped, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
            # the pages read stay counted in this process until dropped; the file is
            # read in order, so none is needed again
            mapped.madvise(mmap.MADV_DONTNEED)
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) if shape else "a scalar"

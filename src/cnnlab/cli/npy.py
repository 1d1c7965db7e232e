"""Reading a .npy array without trusting it (``cnnlab predict RUN_DIR --array X.npy``).

Regular files only (a device or a FIFO is refused before any byte is read), at most
``MAX_ARRAY_BYTES`` actually read, the header checked against the data's length and never
a pickled object (``allow_pickle=False``).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

from cnnlab import fileio
from cnnlab.errors import CnnlabError

MAX_ARRAY_BYTES = fileio.NPY_ARRAY.limit


def load_npy(path: Path, max_bytes: int = MAX_ARRAY_BYTES) -> np.ndarray:
    """A numeric array from a .npy file, read defensively; CnnlabError in one line if not."""
    # fileio's bounded reader: regular files only, at most max_bytes + 1 bytes ever read
    if os.path.isdir(path):
        raise CnnlabError(f"{path} is a folder; give a .npy file")
    kind = fileio.FileKind(fileio.NPY_ARRAY.noun, max_bytes)
    return _parse_npy(fileio.read_bounded(Path(path), kind), path)


def _parse_npy(data: bytes, path: Path) -> np.ndarray:
    """The array in ``data``: its header checked first, then numpy.load without pickles."""
    fmt = np.lib.format
    buf = io.BytesIO(data)
    try:
        version = fmt.read_magic(buf)
    except ValueError:
        raise CnnlabError(f"{path} is not a .npy file (as numpy.save writes)") from None
    try:
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(buf)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(buf)
        else:
            raise CnnlabError(f"{path}: .npy format version {version} is not supported")
    except (ValueError, SyntaxError, TypeError) as exc:
        raise CnnlabError(f"{path}: malformed .npy header ({_first_line(exc)})") from None
    if dtype.hasobject:
        raise CnnlabError(f"{path} holds Python objects (a pickled array): refused, not read")
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - buf.tell() != expected:
        raise CnnlabError(
            f"{path}: the data ({len(data) - buf.tell():,} bytes) does not match its header "
            f"({_shape(shape)} of {dtype}, {expected:,} bytes): truncated or damaged"
        )
    try:
        return np.asarray(np.load(io.BytesIO(data), allow_pickle=False))
    except (ValueError, OSError, EOFError) as exc:
        raise CnnlabError(f"{path}: cannot read the array ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) if shape else "a scalar"

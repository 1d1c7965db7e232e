"""Reader for the IDX format that MNIST ships in (gzipped or raw).

IDX layout: two zero bytes, a dtype code, the number of dimensions, one big-endian
uint32 per dimension, then the data in C order (big-endian for multi-byte types).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from cnnlab.errors import CnnlabError

# IDX dtype codes -> big-endian NumPy dtypes.
_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: Path) -> bytes:
    """The decompressed content of ``path`` (gzip detected by its magic bytes, not the name)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CnnlabError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise CnnlabError(f"{path} is not a valid gzip file ({exc})") from exc


def parse_idx(data: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Parse decompressed IDX bytes into an array, validating magic, dims and length."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise CnnlabError(f"{source} is not an IDX file (bad magic number)")
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise CnnlabError(f"{source}: unknown IDX dtype code 0x{code:02x}")
    if ndim == 0:
        raise CnnlabError(f"{source}: IDX file declares zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CnnlabError(f"{source}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise CnnlabError(
            f"{source}: IDX header declares shape {dims} ({expected} bytes of data) "
            f"but the file holds {len(data) - header} bytes"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    # Native byte order, writable, owning its memory.
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or raw) into a NumPy array."""
    return parse_idx(read_bytes(path), source=str(path))

"""Reader for the IDX format that MNIST ships in (gzipped or raw), and bounded file reads.

IDX layout: two zero bytes, a dtype code, the number of dimensions, one big-endian
uint32 per dimension, then the data in C order (big-endian for multi-byte types).

Files are untrusted: only regular files are opened (a FIFO or a device is refused before
a byte is read, without blocking), every read is bounded by the bytes actually read (not
by ``st_size``), and gzip is inflated chunk by chunk, stopping as soon as the output
passes the size its IDX header declares or the caller's cap: a gzip bomb costs at most
that cap in memory.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cnnlab import fileio
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
CHUNK = 1 << 20
MAX_IDX_BYTES = 1 << 30  # default cap on an IDX file's decompressed size


describe_mode = fileio.describe_mode


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file (symlinks followed); else CnnlabError.

    :func:`cnnlab.fileio.open_regular` (O_NONBLOCK, fstat of the opened descriptor); the
    callers here bound what they read themselves.
    """
    return fileio.open_regular(path, fileio.ANY_SIZE)


def read_limited(path: Path, max_bytes: int) -> bytes:
    """Up to ``max_bytes`` of the regular file ``path``; CnnlabError if it holds more."""
    with open_regular(path) as f:
        try:
            data = f.read(max_bytes + 1)
        except OSError as exc:
            raise CnnlabError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise CnnlabError(f"{path} is larger than the limit of {max_bytes:,} bytes")
    return data


class _Sink:
    """Collects content up to ``max_bytes`` and to what its IDX header declares."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes
        self.limit: int = max_bytes
        self.declared: int | None = None  # what the IDX header declares, once read
        self.header_done = False
        self.chunks: list[bytes] = []
        self.size = 0

    def room(self) -> int:
        """Bytes to ask for next: one past the limit shows that the content is too long."""
        return max(1, min(CHUNK, self.limit + 1 - self.size))

    def add(self, data: bytes) -> None:
        """Keep ``data``; CnnlabError once the content passes its limit."""
        self.chunks.append(data)
        self.size += len(data)
        if not self.header_done and self.size >= 4:
            self._read_header(b"".join(self.chunks)[: 4 + 4 * 255])
        if self.size > self.limit:
            raise self._over()

    def _read_header(self, head: bytes) -> None:
        if head[0] or head[1] or head[2] not in _DTYPES or head[3] == 0:
            self.header_done = True  # no IDX header: max_bytes bounds it, parse_idx refuses it
            return
        header = 4 + 4 * head[3]
        if len(head) >= header:
            dims = struct.unpack_from(f">{head[3]}I", head, 4)
            self.declared = header + math.prod(dims) * np.dtype(_DTYPES[head[2]]).itemsize
            self.limit = min(self.max_bytes, self.declared)
            self.header_done = True

    def _over(self) -> CnnlabError:
        if self.declared is not None and self.declared <= self.max_bytes:
            return CnnlabError(
                f"{self.path} holds more data than its IDX header declares "
                f"({self.declared:,} bytes): refused, a damaged file or a decompression bomb"
            )
        return CnnlabError(
            f"{self.path} inflates to more than {self.max_bytes:,} bytes: refused, "
            "a damaged file or a decompression bomb"
        )


def _gunzip(f: BinaryIO, sink: _Sink, path: Path) -> None:
    """Inflate every gzip member of ``f`` into ``sink``, stopping at its limit."""
    pending = b""
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    while True:
        if not pending:
            pending = f.read(CHUNK)
            if not pending:
                break
        try:
            out = d.decompress(pending, sink.room())
        except zlib.error as exc:
            raise CnnlabError(f"{path} is not a valid gzip file ({exc})") from None
        pending = d.unconsumed_tail
        sink.add(out)
        if d.eof:  # a member ends: another may follow (zero padding after the last is allowed)
            rest = d.unused_data + pending
            pending = rest.lstrip(b"\0")
            while not pending and (more := f.read(CHUNK)):
                pending = more.lstrip(b"\0")
            if not pending:
                return
            if pending[:2] != _GZIP_MAGIC:
                raise CnnlabError(f"{path} is not a valid gzip file (trailing garbage)")
            d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    raise CnnlabError(f"{path} is not a valid gzip file (truncated: the stream ends early)")


def read_bytes(path: Path, max_bytes: int = MAX_IDX_BYTES) -> bytes:
    """The decompressed content of ``path`` (gzip detected by its magic bytes, not the name).

    Reading stops past ``max_bytes`` or past the size the content's IDX header declares,
    with a CnnlabError: memory stays within that bound whatever the file inflates to.
    """
    sink = _Sink(path, max_bytes)
    with open_regular(path) as f:
        try:
            head = f.read(2)
            if head == _GZIP_MAGIC:
                f.seek(0)
                _gunzip(f, sink, path)
            else:
                chunk = head
                while chunk:
                    sink.add(chunk)
                    chunk = f.read(sink.room())
        except OSError as exc:
            raise CnnlabError(f"cannot read {path}: {exc.strerror or exc}") from None
    return b"".join(sink.chunks)


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
    expected = math.prod(dims) * dtype.itemsize
    if len(data) - header != expected:
        raise CnnlabError(
            f"{source}: IDX header declares shape {dims} ({expected} bytes of data) "
            f"but the file holds {len(data) - header} bytes"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    # Native byte order, writable, owning its memory.
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: Path, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an IDX file (gzipped or raw, at most ``max_bytes`` decompressed) into an array."""
    return parse_idx(read_bytes(path, max_bytes), source=str(path))

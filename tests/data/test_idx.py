"""IDX reader: round trips, gzip detection, and every validation error."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data.idx import parse_idx, read_idx
from cnnlab.errors import CnnlabError


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize(
    ("dtype", "code"),
    [
        (np.uint8, 0x08),
        (np.int8, 0x09),
        (np.int16, 0x0B),
        (np.int32, 0x0C),
        (np.float32, 0x0D),
        (np.float64, 0x0E),
    ],
)
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4)])
def test_round_trip(dtype: type, code: int, shape: tuple[int, ...]) -> None:
    arr = (np.arange(np.prod(shape)) * 3 - 7).astype(dtype).reshape(shape)
    out = parse_idx(idx_bytes(arr, code))
    assert out.dtype == np.dtype(dtype) and out.shape == shape
    np.testing.assert_array_equal(out, arr)


def test_reads_gzipped_and_raw_files(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw, gz = tmp_path / "a-idx3-ubyte", tmp_path / "b.gz"
    raw.write_bytes(idx_bytes(arr))
    gz.write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(read_idx(raw), arr)
    np.testing.assert_array_equal(read_idx(gz), arr)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", "bad magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown IDX dtype"),
        (b"\x00\x00\x08\x00", "zero dimensions"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x01", "truncated IDX header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x00\x01", "declares shape"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x00\x01", "declares shape"),
    ],
)
def test_invalid_idx(data: bytes, match: str) -> None:
    with pytest.raises(CnnlabError, match=match):
        parse_idx(data)


def test_corrupt_gzip_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.gz"
    bad.write_bytes(gzip.compress(b"0123456789" * 100)[:30])
    with pytest.raises(CnnlabError, match="not a valid gzip"):
        read_idx(bad)
    with pytest.raises(CnnlabError, match="cannot read"):
        read_idx(tmp_path / "missing")

"""Hostile data files: gzip bombs, endless devices, FIFOs, names taken by other things.

Every read must be bounded by the bytes actually read, refuse what is not a regular file
without blocking, and name what it found. Tests that could hang run in a thread with a
timeout, so a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import os
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cnnlab.cli.main import main
from cnnlab.data import mnist as data
from cnnlab.data.idx import read_bytes, read_idx
from cnnlab.data.preprocess import ImageRejected, preprocess_file
from cnnlab.errors import CnnlabError

IMAGES = "train-images-idx3-ubyte"
MiB = 1 << 20
GiB = 1 << 30


def idx_header(*dims: int) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


def gzip_bomb(path: Path, head: bytes, zeros: int) -> Path:
    """A valid gzip of ``head`` and ``zeros`` zero bytes, about 1 KB per MiB on disk.

    Each MiB of zeros is flushed in a full-flush block, and such blocks are identical, so
    the stream is built by repeating one block instead of compressing gigabytes.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = bytes(MiB)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    assert again == c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(head)
    for _ in range(zeros // MiB):
        crc = zlib.crc32(block, crc)
    size = (len(head) + zeros) % (1 << 32)
    with path.open("wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")  # gzip header, deflate, no name
        f.write(first)
        for _ in range(zeros // MiB):
            f.write(again)
        f.write(c.flush(zlib.Z_FINISH))
        f.write(struct.pack("<II", crc, size))
    return path


def peak_mib(fn: Callable[[], Any]) -> tuple[float, BaseException | None]:
    """Peak traced allocation (MiB) while ``fn`` runs, and what it raised."""
    tracemalloc.start()
    raised: BaseException | None = None
    try:
        fn()
    except Exception as exc:
        raised = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak / MiB, raised


def within(seconds: float, fn: Callable[[], Any]) -> BaseException | None:
    """Run ``fn`` in a thread; fail the test if it takes over ``seconds`` (it may hang)."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(fn)
    try:
        future.result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        pytest.fail(f"still reading after {seconds} s: the read is not bounded")
    except Exception as exc:
        return exc
    finally:
        pool.shutdown(wait=False)
    return None


def test_the_bomb_is_a_real_gzip(tmp_path: Path) -> None:
    bomb = gzip_bomb(tmp_path / "small.gz", b"abc", 3 * MiB)
    assert gzip.decompress(bomb.read_bytes()) == b"abc" + bytes(3 * MiB)


def test_mnist_gzip_bomb_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    """1 GiB behind a correct MNIST header: refused once past the header's 47 MB."""
    bomb = gzip_bomb(tmp_path / f"{IMAGES}.gz", idx_header(60_000, 28, 28), GiB)
    assert bomb.stat().st_size < 2 * MiB
    start = time.perf_counter()
    peak, raised = peak_mib(lambda: data.load_verified(bomb, IMAGES))
    assert isinstance(raised, CnnlabError)
    assert "more data than its IDX header declares" in str(raised) and "delete it" in str(raised)
    assert peak < 100, f"{peak:.0f} MiB"
    assert time.perf_counter() - start < 10


def test_bomb_with_a_huge_header_stops_at_the_mnist_size(tmp_path: Path) -> None:
    """A header declaring 800 MB: the known size of the MNIST file stops it at 47 MB."""
    bomb = gzip_bomb(tmp_path / f"{IMAGES}.gz", idx_header(1 << 20, 28, 28), GiB)
    peak, raised = peak_mib(lambda: data.load_verified(bomb, IMAGES))
    assert isinstance(raised, CnnlabError), raised
    assert f"inflates to more than {data.MNIST_SIZES[IMAGES]:,} bytes" in str(raised)
    assert peak < 100, f"{peak:.0f} MiB"


def test_idx_reader_stops_at_the_declared_size(tmp_path: Path) -> None:
    bomb = gzip_bomb(tmp_path / "x.gz", idx_header(10, 28, 28), 256 * MiB)
    peak, raised = peak_mib(lambda: read_idx(bomb))
    assert isinstance(raised, CnnlabError) and "7,856 bytes" in str(raised)
    assert peak < 10, f"{peak:.1f} MiB"
    with pytest.raises(CnnlabError, match="inflates to more than 1,000 bytes"):
        read_idx(gzip_bomb(tmp_path / "y.gz", idx_header(1 << 30), 4 * MiB), max_bytes=1000)


def test_raw_file_longer_than_its_header_is_not_read_whole(tmp_path: Path) -> None:
    sparse = tmp_path / "raw-idx1-ubyte"
    with sparse.open("wb") as f:
        f.write(idx_header(100) + bytes(100))
        f.truncate(GiB)  # sparse: no disk used
    peak, raised = peak_mib(lambda: read_idx(sparse))
    assert isinstance(raised, CnnlabError) and "more data than its IDX header" in str(raised)
    assert peak < 10, f"{peak:.1f} MiB"


def test_gzip_members_padding_and_garbage(tmp_path: Path) -> None:
    arr = np.arange(40, dtype=np.uint8).reshape(4, 10)
    raw = idx_header(4, 10) + arr.tobytes()
    two = tmp_path / "two.gz"
    two.write_bytes(gzip.compress(raw[:20]) + gzip.compress(raw[20:]) + bytes(7))
    np.testing.assert_array_equal(read_idx(two), arr)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(raw) + b"junk")
    with pytest.raises(CnnlabError, match="trailing garbage"):
        read_idx(bad)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(raw)[:-12])
    with pytest.raises(CnnlabError, match="not a valid gzip"):
        read_idx(cut)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero on this system")
def test_dev_zero_is_refused_at_once() -> None:
    zero = Path("/dev/zero")
    err = within(5, lambda: preprocess_file(zero))
    assert isinstance(err, ImageRejected) and "character device" in str(err)
    err = within(5, lambda: read_bytes(zero))
    assert isinstance(err, CnnlabError) and "not a regular file" in str(err)


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    path = tmp_path / "digit.png"
    os.mkfifo(path)
    return path


def test_fifo_is_refused_without_blocking(fifo: Path) -> None:
    """Opening a FIFO for reading waits for a writer unless it is opened non-blocking."""
    err = within(5, lambda: preprocess_file(fifo))
    assert isinstance(err, ImageRejected) and "FIFO" in str(err)
    err = within(5, lambda: read_idx(fifo))
    assert isinstance(err, CnnlabError) and "FIFO" in str(err)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $CNNLAB_DATA and an empty user cache under tmp_path; a data folder d/mnist."""
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "d" / "mnist").mkdir(parents=True)
    return tmp_path / "d"


def test_names_taken_by_other_things_are_reported(isolated: Path) -> None:
    folder = isolated / "mnist"
    (folder / f"{IMAGES}.gz").mkdir()
    (folder / "train-labels-idx1-ubyte.gz").symlink_to(folder / "nowhere")
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "t10k-images-idx3-ubyte")
    report = {name: status for name, _path, status in within_verify(isolated)}
    assert report[IMAGES].startswith("FAILED") and "is a directory" in report[IMAGES]
    assert "dangling symbolic link" in report["train-labels-idx1-ubyte"]
    if hasattr(os, "mkfifo"):
        assert "FIFO" in report["t10k-images-idx3-ubyte"]
    assert report["t10k-labels-idx1-ubyte"].startswith("missing")
    with pytest.raises(CnnlabError, match=r"is a directory, not an MNIST file"):
        data.load_mnist(isolated, allow_download=False)


def within_verify(folder: Path) -> list[tuple[str, Path | None, str]]:
    out: list[tuple[str, Path | None, str]] = []
    assert within(5, lambda: out.extend(data.verify(folder))) is None
    return out


def test_cli_data_verify_says_what_it_found(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (isolated / "mnist" / f"{IMAGES}.gz").mkdir()
    assert main(["data", "verify", "--data-dir", str(isolated)]) == 1
    out = capsys.readouterr().out
    assert "is a directory" in out and "missing (will be downloaded" in out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained case1 run folder (its weights do not matter here): made in a second."""
    import torch

    from cnnlab.models import build_module, resolve
    from cnnlab.train import checkpoint, runs

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("untrained")
    desc = resolve("case1")
    runs.save_torch(folder / "best.pt", checkpoint.make_checkpoint(desc, build_module(desc), 0))
    return folder


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero on this system")
def test_cli_predict_and_explain_refuse_dev_zero(
    run_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = str(run_dir)
    codes: list[int] = []
    assert within(30, lambda: codes.append(main(["predict", run, "/dev/zero"]))) is None
    err = capsys.readouterr().err
    assert codes == [2] and "/dev/zero is a character device" in err
    out = str(tmp_path / "explain")
    argv = ["explain", run, "--image", "/dev/zero", "--out", out]
    assert within(30, lambda: codes.append(main(argv))) is None
    err = capsys.readouterr().err
    assert codes[1] == 2 and err.count("\n") == 1 and "character device" in err

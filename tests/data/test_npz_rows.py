"""npz:PATH over the size threshold: inputs read by rows from the file, never loaded whole."""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cnnlab.data import DataOptions, Dataset, RowView, npz_rows
from cnnlab.data.datasets import load_dataset
from cnnlab.engine.feed import Feed
from cnnlab.errors import CnnlabError
from cnnlab.train.distributed import DistContext, shard

OPTS = DataOptions(progress=False)
SAVERS: dict[str, Callable[..., None]] = {"stored": np.savez, "compressed": np.savez_compressed}
SPLITS = ("x_train", "x_val", "x_test")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private data cache, and the threshold at 0 bytes: every input is read by rows."""
    # npz_rows' cache only: the whole user cache moved would rebuild the C++ kernels
    monkeypatch.setattr(npz_rows, "cache_root", lambda: tmp_path / "cache" / "cnnlab")
    monkeypatch.setattr(npz_rows, "LOAD_WHOLE_BYTES", 0)
    return tmp_path / "cache" / "cnnlab" / "npz"


def load(path: Path, **changes: Any) -> Dataset:
    return load_dataset(f"npz:{path}", replace(OPTS, **changes))


def loaded_whole(path: Path, monkeypatch: pytest.MonkeyPatch) -> Dataset:
    with monkeypatch.context() as m:
        m.setattr(npz_rows, "LOAD_WHOLE_BYTES", 1 << 40)
        return load(path)


def forbid_whole_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """np.load's reader of members fails for x_*: the inputs must come from elsewhere."""
    real = np.lib.npyio.NpzFile.__getitem__

    def getitem(self: Any, key: str) -> Any:
        if key.startswith("x_"):
            raise AssertionError(f"{key} loaded whole")
        return real(self, key)

    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", getitem)


@pytest.mark.parametrize("saver", sorted(SAVERS))
@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((60, 8, 9), np.uint8), ((60, 20), np.float64), ((60, 5, 6, 2), np.float32)],
)
@pytest.mark.parametrize("given_test", [False, True])
def test_rows_equal_the_in_memory_splits(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cache: Path,
    saver: str,
    shape: tuple[int, ...],
    dtype: type,
    given_test: bool,
) -> None:
    rng = np.random.default_rng(0)
    x = (rng.random(shape) * 255).astype(dtype)
    arrays: dict[str, Any] = {"x_train": x, "y_train": np.arange(60) % 3}
    if given_test:
        arrays |= {"x_test": x[:12][::-1], "y_test": np.arange(12) % 3}
    path = tmp_path / "d.npz"
    SAVERS[saver](path, **arrays)
    whole = loaded_whole(path, monkeypatch)
    forbid_whole_inputs(monkeypatch)
    rows = load(path)
    assert (rows.kind, rows.input_shape, rows.pixels) == (
        whole.kind,
        whole.input_shape,
        whole.pixels,
    )
    assert rows.preprocessing == whole.preprocessing
    for name in SPLITS:
        view, array = getattr(rows.splits, name), getattr(whole.splits, name)
        assert isinstance(view, RowView) and isinstance(array, np.ndarray)
        assert view.shape == array.shape and view.dtype == array.dtype
        np.testing.assert_array_equal(view[np.arange(len(view))], array)
        # the same batch, shuffled, through the feed
        order = torch.randperm(len(view), generator=torch.Generator().manual_seed(1))
        ys = getattr(rows.splits, "y" + name[1:])
        got = [xb for xb, _, _ in Feed(view, ys, torch.device("cpu")).batches(order, 7)]
        want = [xb for xb, _, _ in Feed(array, ys, torch.device("cpu")).batches(order, 7)]
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # stored uint8/float32: read from the .npz itself; else from one extracted .npy
    in_place = saver == "stored" and dtype != np.float64
    for name in SPLITS:
        source = getattr(rows.splits, name).path
        assert source == path.resolve() if in_place else source.parent == cache


def test_extracted_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x_train=np.ones((40, 6), np.float64), y_train=np.arange(40) % 2)
    first = load(path).splits.x_train.path
    stamp = first.stat().st_mtime_ns

    def fail(*_a: Any) -> None:
        raise AssertionError("extracted again")

    monkeypatch.setattr(npz_rows, "_stream", fail)
    assert load(path).splits.x_train.path == first and first.stat().st_mtime_ns == stamp


def test_small_inputs_stay_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(npz_rows, "LOAD_WHOLE_BYTES", 60 * 8)  # x_train is 60*8 bytes
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((60, 8), np.uint8), y_train=np.arange(60) % 2)
    assert isinstance(load(path).splits.x_train, np.ndarray)
    np.savez(path, x_train=np.zeros((61, 8), np.uint8), y_train=np.arange(61) % 2)
    assert isinstance(load(path).splits.x_train, RowView)


@pytest.mark.parametrize("saver", sorted(SAVERS))
def test_nan_refused_once_checked_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, saver: str
) -> None:
    x = np.zeros((50, 4), np.float32)
    x[37, 2] = np.nan
    bad, good = tmp_path / "bad.npz", tmp_path / "good.npz"
    SAVERS[saver](bad, x_train=x, y_train=np.arange(50) % 2)
    SAVERS[saver](good, x_train=np.zeros((50, 4), np.float32), y_train=np.arange(50) % 2)
    with pytest.raises(CnnlabError, match=r"x_train\[37\] holds NaN or inf"):
        load(bad)
    load(good)
    monkeypatch.setattr(npz_rows, "first_bad_row", lambda _c: pytest.fail("checked again"))
    load(good)


def test_huge_float64_overflows_to_inf(tmp_path: Path) -> None:
    x = np.zeros((30, 3))
    x[4, 0] = 1e300  # inf in float32
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=np.arange(30) % 2)
    with pytest.raises(CnnlabError, match=r"x_train\[4\] holds NaN or inf \(in float32\)"):
        load(path)


def member_header(path: Path, name: str) -> int:
    with zipfile.ZipFile(path) as zf:
        return zf.getinfo(f"{name}.npy").header_offset


def patch(path: Path, at: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[at : at + len(data)] = data
    path.write_bytes(bytes(raw))


def stored(tmp_path: Path) -> Path:
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((40, 5), np.uint8), y_train=np.arange(40) % 2)
    return path


def test_damaged_member_offset_is_one_line(tmp_path: Path) -> None:
    path = stored(tmp_path)
    patch(path, member_header(path, "x_train"), b"XXXX")  # no local header there
    with pytest.raises(CnnlabError, match=r"not a readable \.npz file: .+") as err:
        load(path)
    assert "\n" not in str(err.value)


def test_shifted_member_is_one_line(tmp_path: Path) -> None:
    path = stored(tmp_path)
    at = member_header(path, "x_train") + 28  # the extra field's length
    patch(path, at, struct.pack("<H", 4000))
    with pytest.raises(CnnlabError, match=r"not a readable \.npz file: .+") as err:
        load(path)
    assert "\n" not in str(err.value)


def test_truncated_file_is_one_line(tmp_path: Path) -> None:
    path = stored(tmp_path)
    path.write_bytes(path.read_bytes()[:-100])  # the member list at the end cut off
    with pytest.raises(CnnlabError, match=r"not a readable \.npz file") as err:
        load(path)
    assert "\n" not in str(err.value)


def test_damaged_compressed_member_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, (400, 50), dtype=np.uint8)
    np.savez_compressed(path, x_train=x, y_train=np.arange(400) % 2)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("x_train.npy")
        middle = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    raw = bytearray(path.read_bytes())
    raw[middle : middle + 8] = bytes(b ^ 0xFF for b in raw[middle : middle + 8])
    path.write_bytes(bytes(raw))
    with pytest.raises(CnnlabError, match="x_train") as err:
        load(path)
    assert "\n" not in str(err.value)


def test_two_ranks_each_read_their_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a fake 2-rank group each process reads only its rows of each global batch."""
    path = stored(tmp_path)
    np.savez(
        path, x_train=np.arange(64 * 3, dtype=np.uint8).reshape(64, 3), y_train=np.arange(64) % 2
    )
    view = load(path, val_fraction=0.25).splits.x_train
    assert isinstance(view, RowView)
    read: list[int] = []
    real = RowView._read

    def counting(self: RowView, file_rows: np.ndarray) -> np.ndarray:
        read.extend(file_rows.tolist())
        return real(self, file_rows)

    monkeypatch.setattr(RowView, "_read", counting)
    order = torch.randperm(len(view), generator=torch.Generator().manual_seed(0))
    y = np.zeros(len(view), np.int64)
    seen: list[list[int]] = []
    for rank in (0, 1):
        read.clear()
        ctx = DistContext(rank=rank, world_size=2)
        feed = Feed(view, y, torch.device("cpu"))
        batches = list(feed.batches(order, 8, shard=lambda b, c=ctx: shard(b, c)))
        assert all(denom == 8 for _, _, denom in batches[:-1])
        seen.append(sorted(read))
        want = sorted(
            view.rows[
                torch.cat([shard(order[i : i + 8], ctx) for i in range(0, len(order), 8)])
            ].tolist()
        )
        assert seen[-1] == want  # only its shard: about half, never the split
    assert len(seen[0]) + len(seen[1]) == len(view)
    assert sorted(seen[0] + seen[1]) == sorted(view.rows.tolist())


@pytest.mark.parametrize("saver", sorted(SAVERS))
def test_a_run_on_rows_through_every_command(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    saver: str,
) -> None:
    """train, evaluate, explain, shift, verify-numpy and predict on an .npz read by rows."""
    from cnnlab.cli.main import main

    rng = np.random.default_rng(0)
    y = np.arange(48) % 2
    x = rng.integers(0, 60, (48, 12, 12), dtype=np.uint8)
    x[y == 1, 3:9, 3:9] = 250  # a bright square: class 1
    SAVERS[saver](tmp_path / "d.npz", x_train=x, y_train=y)
    forbid_whole_inputs(monkeypatch)
    run, net = (
        tmp_path / "run",
        "Input(12,12,1) Conv2D(4,3,relu) MaxPooling2D Flatten Dense(2,softmax)",
    )
    train = ["train", "--model", net, "--data", f"npz:{tmp_path / 'd.npz'}", "--epochs", "1"]
    np.save(tmp_path / "two.npy", x[:2])
    for argv in (
        [*train, "--batch-size", "8", "--out", str(run), "--quiet"],
        ["evaluate", str(run)],
        ["explain", str(run), "--index", "0", "--out", str(tmp_path / "explain")],
        ["shift", str(run), "--max-shift", "1", "--invariance-images", "4"],
        ["verify-numpy", str(run), "--json"],
        ["predict", str(run), "--array", str(tmp_path / "two.npy"), "--json"],
    ):
        assert main(argv) == 0, (argv, capsys.readouterr().err)
    assert list((tmp_path / "explain").glob("*.png"))

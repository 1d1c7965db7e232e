"""How stored values become network inputs, and batches over arrays and lazy rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnlab.data import Dataset, Splits, input_scale, iterate_batches, to_inputs
from cnnlab.data.datasets import scored_inputs
from cnnlab.data.mnist import scale
from cnnlab.data.rows import RowView
from cnnlab.errors import CnnlabError


def test_the_three_rules() -> None:
    chapter = input_scale(dataset_pixels=True, network_takes_raw_pixels=False)
    raw = input_scale(dataset_pixels=True, network_takes_raw_pixels=True)
    floats = input_scale(dataset_pixels=False, network_takes_raw_pixels=True)
    assert (chapter.divisor, raw.divisor, floats.divisor) == (255.0, 1.0, 1.0)
    assert chapter.factor == 1 / 255 and "divided by 255" in chapter.reason
    assert "Rescaling" in raw.reason and "used as stored" in floats.reason
    assert chapter.to_dict() == {"divide_by": 255.0, "reason": chapter.reason}


def test_pixels_are_the_chapters_floats_bit_for_bit() -> None:
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    got = to_inputs(x[..., None], input_scale(True, False))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, scale(x))  # x.astype(float32) / 255, the chapter's
    assert got.max() == 1.0  # 255 * float32(1/255) would not be exactly 1
    kept = to_inputs(x, input_scale(True, True))
    np.testing.assert_array_equal(kept, x.astype(np.float32))
    series = np.array([[-1.5, 2.25]], np.float64)
    np.testing.assert_array_equal(to_inputs(series, input_scale(False, False)), series)
    with pytest.raises(CnnlabError, match="expects uint8"):
        to_inputs(series, input_scale(True, False))


def test_scored_inputs_follow_the_rule() -> None:
    x = np.full((4, 2, 2, 1), 51, np.uint8)
    y = np.array([0, 1, 0, 1])
    ds = Dataset("t", Splits(x, y, x, y, x, y), ["a", "b"], "t")
    inputs, labels = scored_inputs(ds)
    assert inputs.dtype == np.float32 and float(inputs[0, 0, 0, 0]) == np.float32(51) / 255
    assert labels.dtype == np.int64
    raw, _ = scored_inputs(ds, network_takes_raw_pixels=True)
    assert float(raw.max()) == 51.0


def npy(tmp_path: Path, array: np.ndarray) -> Path:
    path = tmp_path / "a.npy"
    np.save(path, array)
    return path


@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize("lazy", [True, False])
def test_batches_cover_the_order(tmp_path: Path, lazy: bool, prefetch: bool) -> None:
    x = np.arange(70 * 6, dtype=np.uint8).reshape(70, 2, 3, 1)
    y = np.arange(70) % 4
    source = RowView(npy(tmp_path, x)) if lazy else x
    order = np.random.default_rng(0).permutation(70)
    batches = list(iterate_batches(source, y, order, 32, prefetch=prefetch))
    assert [len(b[0]) for b in batches] == [32, 32, 6]
    got_x = np.concatenate([b[0] for b in batches])
    got_y = np.concatenate([b[1] for b in batches])
    np.testing.assert_array_equal(got_x, x[order])
    np.testing.assert_array_equal(got_y, y[order])
    assert got_x.dtype == np.uint8 and got_y.dtype == np.int64
    assert all(b[0].flags.c_contiguous for b in batches)
    in_order = np.concatenate([b[0] for b in iterate_batches(source, y, None, 50)])
    np.testing.assert_array_equal(in_order, x)


def test_batch_arguments_are_checked() -> None:
    x = np.zeros((5, 2))
    with pytest.raises(CnnlabError, match="5 inputs but 4 labels"):
        list(iterate_batches(x, np.zeros(4), None, 2))
    with pytest.raises(CnnlabError, match="batch_size must be positive"):
        list(iterate_batches(x, np.zeros(5), None, 0))
    with pytest.raises(CnnlabError, match="order must index the 5 rows"):
        list(iterate_batches(x, np.zeros(5), np.array([0, 5]), 2))


def test_stopping_early_leaves_no_thread(tmp_path: Path) -> None:
    import threading

    x = np.zeros((100, 3), np.uint8)
    before = threading.active_count()
    batches = iterate_batches(RowView(npy(tmp_path, x)), np.zeros(100), None, 10)
    next(batches)
    batches.close()
    assert threading.active_count() == before

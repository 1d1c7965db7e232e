"""The one stratified seeded split: stratified, seeded, single-example classes kept."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.data import ucr
from cnnlab.data.splits import split_indices
from cnnlab.errors import CnnlabError


def test_stratified_disjoint_and_seeded() -> None:
    y = np.repeat(np.arange(4), [40, 20, 12, 8])
    kept, held = split_indices(y, 7, 0.25)
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(80))
    assert np.bincount(y[held]).tolist() == [10, 5, 3, 2]  # a quarter of each class
    again = split_indices(y, 7, 0.25)
    np.testing.assert_array_equal(kept, again[0])
    assert not np.array_equal(held, split_indices(y, 8, 0.25)[1])


def test_the_chapters_stream() -> None:
    """``np.random.seed(s)`` then ``train_test_split`` without ``random_state``: the same."""
    from sklearn.model_selection import train_test_split

    y = np.arange(200) % 10
    np.random.seed(42)  # noqa: NPY002 - the chapter's own legacy global seeding
    tr, va = train_test_split(np.arange(200), stratify=y, test_size=0.25)
    kept, held = split_indices(y, 42, 0.25)
    np.testing.assert_array_equal(kept, tr)
    np.testing.assert_array_equal(held, va)


def test_single_example_classes_stay_in_the_kept_part() -> None:
    y = np.array([0] * 6 + [1] + [2] * 5)
    kept, held = split_indices(y, 0, 0.3)
    assert 6 in kept and 6 not in held  # the one example of class 1


def test_one_per_class_for_small_user_datasets() -> None:
    y = np.repeat(np.arange(7), 3)  # 21 examples, 7 classes: 20% is 5 < 7
    with pytest.raises(CnnlabError, match="cannot split 21 image examples of 7 classes"):
        split_indices(y, 0, 0.2, what="image")
    kept, held = split_indices(y, 0, 0.2, one_per_class=True)
    assert np.bincount(y[held]).tolist() == [1] * 7
    assert np.bincount(y[kept]).tolist() == [2] * 7


def test_ucr_uses_the_same_split() -> None:
    y = np.repeat(np.arange(3), [9, 1, 6])
    for seed in (0, 3):
        a, b = ucr.ucr_split_indices(y, seed, 0.25)
        c, d = split_indices(y, seed, 0.25)
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)

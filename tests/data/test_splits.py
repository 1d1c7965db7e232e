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


def test_index_for_index_scikit_learns_draw() -> None:
    """Random labels (balanced or not, ints or strings), seeds and fractions: the same
    indices as ``train_test_split(..., stratify=y, random_state=RandomState(seed))``, or
    an error where scikit-learn refuses (or leaves a class out of the kept part)."""
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(2024)
    agreed = refused = 0
    for case in range(400):
        n = int(rng.integers(4, 400))
        k = int(rng.integers(1, 12))
        y = rng.integers(0, k, n) if case % 3 else rng.choice(k, n, p=rng.dirichlet(np.ones(k)))
        y = y.astype(str) if case % 7 == 0 else y
        fraction = float(
            rng.choice([0.1, 0.2, 0.25, 0.3, 1 / 3, 0.5, float(rng.uniform(0.01, 0.9))])
        )
        seed = int(rng.integers(0, 2**31))
        if np.unique(y, return_counts=True)[1].min() < 2:
            continue  # single-example classes: kept out of the draw (tested above)
        try:
            want = train_test_split(
                np.arange(n),
                test_size=fraction,
                stratify=y,
                random_state=np.random.RandomState(seed),
            )
        except ValueError:
            with pytest.raises(CnnlabError, match="cannot split"):
                split_indices(y, seed, fraction)
            refused += 1
            continue
        if set(y[want[0]].tolist()) != set(y.tolist()):  # cnnlab's rule: train sees all
            with pytest.raises(CnnlabError, match="leaves no training example of class"):
                split_indices(y, seed, fraction)
            refused += 1
            continue
        kept, held = split_indices(y, seed, fraction)
        np.testing.assert_array_equal(kept, want[0], err_msg=f"case {case}")
        np.testing.assert_array_equal(held, want[1], err_msg=f"case {case}")
        agreed += 1
    assert agreed > 300 and refused >= 3


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5])
def test_a_fraction_outside_the_open_interval_is_one_line(fraction: float) -> None:
    y = np.repeat(np.arange(2), 10)
    with pytest.raises(CnnlabError) as err:
        split_indices(y, seed=0, val_fraction=fraction)
    # 0 means "no held-out split", which only the series recipe (ucr:) has: it says so
    assert ("ucr:" in str(err.value)) == (fraction == 0)
    assert "\n" not in str(err.value)

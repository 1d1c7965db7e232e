"""The one stratified, seeded split that every source uses (validation, and a drawn test set).

It is the chapter's: ``train_test_split(..., stratify=y)`` drawing from a fresh
``RandomState(seed)``, which is what ``np.random.seed(seed)`` followed by a call without
``random_state`` draws (tests/data/test_data.py checks it against the chapter's own code, and
tests/data/test_splits.py against scikit-learn on random labels, seeds and fractions).
A class with a single example cannot be stratified: it stays in the first (training) part,
which must see every class.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cnnlab.errors import CnnlabError


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _apportion(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of ``draws`` examples each class gives: its proportional share rounded
    down, then one more each to the largest remainders, ties broken at random."""
    share = counts / counts.sum() * draws
    taken = np.floor(share)
    left = int(draws - taken.sum())
    rest = share - taken
    for value in np.unique(rest)[::-1]:  # the largest remainders first
        if left <= 0:
            break
        tied = np.flatnonzero(rest == value)
        now = min(len(tied), left)
        taken[rng.choice(tied, size=now, replace=False)] += 1
        left -= now
    return taken.astype(np.int64)


def _stratified(
    y: np.ndarray, n_held: int, rng: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray]:
    """Positions (kept, held) into ``y``: each class shuffled, its share held out."""
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    n_kept = len(y) - n_held
    if n_held < len(classes) or n_kept < len(classes):
        raise ValueError(
            f"holding out {n_held} leaves {n_kept}: both parts need one of each of the "
            f"{len(classes)} classes"
        )
    members = np.split(np.argsort(inverse, kind="mergesort"), np.cumsum(counts)[:-1])
    kept_per_class = _apportion(counts, n_kept, rng)
    held_per_class = _apportion(counts - kept_per_class, n_held, rng)
    kept: list[np.ndarray] = []
    held: list[np.ndarray] = []
    for k, (n_k, h_k) in enumerate(zip(kept_per_class, held_per_class, strict=True)):
        shuffled = members[k][rng.permutation(counts[k])]
        kept.append(shuffled[:n_k])
        held.append(shuffled[n_k : n_k + h_k])
    return rng.permutation(np.concatenate(kept)), rng.permutation(np.concatenate(held))


def split_indices(
    y: np.ndarray,
    seed: int,
    val_fraction: float = 0.25,
    *,
    what: str = "training",
    one_per_class: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (kept, held-out) indices into the labels ``y``, seeded.

    ``val_fraction`` of each class is held out (for validation, or a drawn test set);
    single-example classes are kept. ``what`` names the examples in error messages.
    ``one_per_class``: where the fraction holds out fewer examples than there are classes
    (which a stratified split refuses), hold out one per class instead (small datasets
    of users; the record's counts show it).

    The draw is scikit-learn's ``train_test_split(..., stratify=y)`` with
    ``random_state=RandomState(seed)`` (which the tests check, index for index), computed
    here in NumPy: importing scikit-learn takes a second of every fresh process.
    """
    if val_fraction == 0:  # only ucr: data trains on all of TRAIN (its recipe)
        raise CnnlabError(
            "--val-split 0 (no held-out validation) is for ucr: data only; "
            "give a fraction between 0 and 1"
        )
    if not 0.0 < val_fraction < 1.0:
        raise CnnlabError(f"val_fraction must be between 0 and 1, not {val_fraction}")
    y = np.asarray(y)
    labels, counts = np.unique(y, return_counts=True)
    single = np.isin(y, labels[counts < 2])
    rest = np.flatnonzero(~single) if single.any() else np.arange(len(y))
    if rest.size == 0:
        raise CnnlabError(f"no class has two {what} examples: nothing to hold out")
    n_held = math.ceil(val_fraction * len(rest))  # as scikit-learn rounds a fraction
    classes = len(np.unique(y[rest]))
    if one_per_class and n_held < classes <= len(rest) - classes:
        n_held = classes
    try:
        kept_at, held_at = _stratified(y[rest], n_held, np.random.RandomState(seed))
    except ValueError as exc:
        raise CnnlabError(
            f"cannot split {len(y)} {what} examples of {len(labels)} classes with "
            f"fraction {val_fraction}: {_one_line(exc)}"
        ) from None
    kept = np.concatenate([rest[kept_at], np.flatnonzero(single)]).astype(np.int64)
    unseen = sorted(set(y[rest].tolist()) - set(y[kept].tolist()))
    if unseen:
        raise CnnlabError(f"fraction {val_fraction} leaves no {what} example of class {unseen}")
    return kept, rest[held_at].astype(np.int64)


def split_record(seed: int, fraction: float) -> dict[str, Any]:
    """How a split was drawn, for the run's record."""
    return {"seed": int(seed), "fraction": float(fraction), "stratified": True}

"""The one stratified, seeded split that every source uses (validation, and a drawn test set).

It is the chapter's: ``train_test_split(..., stratify=y)`` drawing from a fresh
``RandomState(seed)``, which is what ``np.random.seed(seed)`` followed by a call without
``random_state`` draws (tests/test_data.py checks it against the chapter's own code).
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
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < val_fraction < 1.0:
        raise CnnlabError(f"val_fraction must be between 0 and 1, not {val_fraction}")
    y = np.asarray(y)
    labels, counts = np.unique(y, return_counts=True)
    single = np.isin(y, labels[counts < 2])
    rest = np.flatnonzero(~single) if single.any() else np.arange(len(y))
    if rest.size == 0:
        raise CnnlabError(f"no class has two {what} examples: nothing to hold out")
    size: float | int = val_fraction
    classes = len(np.unique(y[rest]))
    if one_per_class and math.ceil(val_fraction * len(rest)) < classes <= len(rest) - classes:
        size = classes
    try:
        kept, held = train_test_split(
            rest,
            test_size=size,
            stratify=y[rest],
            random_state=np.random.RandomState(seed),  # the chapter's global stream
        )
    except ValueError as exc:
        raise CnnlabError(
            f"cannot split {len(y)} {what} examples of {len(labels)} classes with "
            f"fraction {val_fraction}: {_one_line(exc)}"
        ) from None
    kept = np.concatenate([np.asarray(kept), np.flatnonzero(single)]).astype(np.int64)
    unseen = sorted(set(y[rest].tolist()) - set(y[kept].tolist()))
    if unseen:
        raise CnnlabError(f"fraction {val_fraction} leaves no {what} example of class {unseen}")
    return kept, np.asarray(held, dtype=np.int64)


def split_record(seed: int, fraction: float) -> dict[str, Any]:
    """How a split was drawn, for the run's record."""
    return {"seed": int(seed), "fraction": float(fraction), "stratified": True}

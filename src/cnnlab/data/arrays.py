"""Arrays given in Python (``cnnlab.train.fit(model, x, y, ...)``), as a Dataset.

The same rules as ``npz:PATH`` (:mod:`cnnlab.data.npz`): channels-last inputs of any rank
(uint8 pixels or floats, NaN refused), integer or string labels, class names. The
validation data is Keras' ``validation_data=(x, y)``, or ``validation_split`` (as Keras: the
*last* fraction of the examples, before any shuffling), or, given neither, the recipe's
stratified seeded split. A test set is optional.

A run trained on arrays records the spec ``arrays``: its data is not kept with the run, so
a later command that needs it (evaluate, explain, report) says so in one line and asks for
``--data``. The ``arrays`` source does exactly that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data.base import DataOptions, Dataset, Source, Splits, register_source
from cnnlab.data.npz import KINDS, as_inputs, as_labels
from cnnlab.data.splits import split_indices, split_record
from cnnlab.errors import CnnlabError

SPEC = "arrays"


@register_source(SPEC)
class ArraysSource(Source):
    """``arrays``: what a run trained on arrays given in Python records; not on the disk."""

    summary = "arrays given to cnnlab.train.fit in Python (not kept with the run)"
    order = 90
    listed = False

    def load(self, options: DataOptions) -> Dataset:
        raise CnnlabError(
            "this run was trained on arrays given to cnnlab.train.fit in Python; they are not "
            "kept with the run: give --data SPEC (e.g. npz:PATH) to score it on a dataset"
        )


def _pair(value: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(value, tuple | list) and len(value) == 2):
        raise CnnlabError(f"{what} must be a pair (x, y), not {type(value).__name__}")
    return np.asarray(value[0]), np.asarray(value[1])


def from_arrays(
    x: Any,
    y: Any,
    *,
    validation_data: Any = None,
    validation_split: float | None = None,
    test_data: Any = None,
    class_names: list[str] | None = None,
    seed: int = 42,
    val_fraction: float = 0.25,
) -> Dataset:
    """A Dataset of arrays (see the module docstring); one CnnlabError line if malformed."""
    if validation_data is not None and validation_split is not None:
        raise CnnlabError("give validation_data or validation_split, not both")
    parts = {"train": (np.asarray(x), np.asarray(y))}
    if validation_data is not None:
        parts["val"] = _pair(validation_data, "validation_data")
    if test_data is not None:
        parts["test"] = _pair(test_data, "test_data")
    for name, (xs, labels_given) in parts.items():
        if xs.ndim < 2 or xs.ndim > 5 or xs.dtype.kind not in "uif":
            raise CnnlabError(
                f"{name} inputs must be numbers of 2 to 5 axes (N, ...), not {xs.dtype} {xs.shape}"
            )
        if labels_given.ndim == 2 and labels_given.shape[1] > 1:
            raise CnnlabError(
                f"{name} labels are one-hot ({labels_given.shape}): give class indices, y.argmax(1)"
            )
        if len(xs) != labels_given.size:
            raise CnnlabError(f"{name}: {len(xs)} inputs but {labels_given.size} labels")
    ys = {k: v[1].reshape(-1) for k, v in parts.items()}
    names = None if class_names is None else np.asarray([str(c) for c in class_names])
    labels, classes, label_kind = as_labels(ys, names, Path(SPEC))
    inputs, layout = {}, ""
    for k, (xs, _) in parts.items():
        values = xs if xs.dtype.kind == "f" or xs.dtype == np.uint8 else xs.astype(np.float32)
        inputs[k], layout = as_inputs(values, f"{k} inputs")
    shapes = {tuple(v.shape[1:]) for v in inputs.values()}
    if len(shapes) != 1:
        raise CnnlabError(f"the inputs' shapes differ: {sorted(shapes)}")
    if len({v.dtype for v in inputs.values()}) != 1:
        raise CnnlabError("give every split's inputs in one dtype (uint8 pixels, or floats)")
    xt, yt = inputs["train"], labels["train"]
    record: dict[str, Any] = {"source": SPEC, "layout": layout, "labels": label_kind}
    if "val" in parts:
        xv, yv = inputs["val"], labels["val"]
        record["val_split"] = {"drawn": False, "from": "validation_data"}
    elif validation_split is not None:
        if not 0.0 < float(validation_split) < 1.0:
            raise CnnlabError(f"validation_split must be between 0 and 1, not {validation_split}")
        cut = len(xt) - int(len(xt) * float(validation_split))  # Keras: the last examples
        xt, yt, xv, yv = xt[:cut], yt[:cut], xt[cut:], yt[cut:]
        record["val_split"] = {"drawn": False, "from": f"the last {validation_split:g} (Keras)"}
    else:
        train, val = split_indices(yt, seed, val_fraction, one_per_class=True)
        xt, yt, xv, yv = xt[train], yt[train], xt[val], yt[val]
        record["val_split"] = split_record(seed, val_fraction)
    if len(xv) == 0 or len(xt) == 0:
        raise CnnlabError("too few examples to hold out validation data")
    empty = np.zeros((0, *xt.shape[1:]), dtype=xt.dtype)
    xs_test, ys_test = inputs.get("test", empty), labels.get("test", np.zeros(0, np.int64))
    record["test_split"] = {"drawn": False, "from": "test_data" if "test" in parts else None}
    splits = Splits(xt, yt, xv, yv, xs_test, ys_test)
    record["counts"] = splits.counts()
    kind = KINDS[xt.ndim]
    shape = "x".join(map(str, xt.shape[1:]))
    what = f"{len(yt) + len(yv) + len(ys_test)} {kind} of {shape} given as arrays"
    return Dataset(SPEC, splits, classes, what, kind, xt.dtype == np.uint8, record)

"""Datasets by name: every command that trains or scores a network reads its data here.

- ``mnist``: the chapter's digits, 28x28x1 (uint8 in memory, scaled batch by batch);
- ``ucr:NAME``: a UCR/UEA time-series dataset, (T, C) float32 (:mod:`cnnlab.data.ucr`);
- ``moving-mnist``: clips of a digit moving left or right, (T, H, W, 1) uint8
  (:mod:`cnnlab.data.moving_mnist`).

Each gives the same :class:`Dataset`: channels-last splits with a validation set drawn,
stratified and seeded, from the training data only; the test set is kept for the final
score. The spec names one dataset, so a run folder records it and a later command
rebuilds the same data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.data.mnist import Splits
from cnnlab.errors import CnnlabError

DIGITS = [str(d) for d in range(10)]
SPEC_HELP = "mnist, ucr:NAME (a UCR/UEA time-series dataset) or moving-mnist"
_UCR = re.compile(r"^ucr:([A-Za-z0-9_-]{1,64})$")


@dataclass(frozen=True)
class Dataset:
    """Splits, channels-last ``(N, *input_shape)``, and the names of the classes."""

    spec: str
    splits: Splits
    classes: list[str]
    description: str  # one line for logs: what the data is

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.splits.x_train.shape[1:])

    @property
    def images(self) -> bool:
        """28x28 single-channel images, MNIST-style (what image files are turned into)."""
        return self.input_shape == (28, 28, 1)


def check_spec(spec: str) -> str:
    """``spec`` if it names a dataset; CnnlabError listing the choices otherwise."""
    if spec in ("mnist", "moving-mnist") or _UCR.match(spec):
        return spec
    raise CnnlabError(f"unknown dataset {spec!r}; choose {SPEC_HELP}")


def load_dataset(
    spec: str,
    data_dir: Path | None = None,
    seed: int = 42,
    val_fraction: float = 0.25,
    *,
    allow_download: bool = True,
) -> Dataset:
    """The dataset ``spec`` split for training (seeded, stratified, from TRAIN only)."""
    import cnnlab.data as data  # the package: tests stand in for its load_mnist

    spec = check_spec(spec)
    if spec == "mnist":
        mnist = data.load_mnist(data_dir, allow_download=allow_download)
        splits = data.prepare(mnist, seed, val_fraction, scaled=False)
        return Dataset(spec, splits, list(DIGITS), "MNIST digits, 28x28x1")
    if spec == "moving-mnist":
        from cnnlab.data.moving_mnist import load_moving_mnist

        mnist = data.load_mnist(data_dir, allow_download=allow_download)
        clips = load_moving_mnist(mnist, seed)
        splits = Splits(
            clips.x_train, clips.y_train, clips.x_val, clips.y_val, clips.x_test, clips.y_test
        )
        shape = "x".join(str(s) for s in clips.x_train.shape[1:])
        return Dataset(spec, splits, list(clips.classes), f"moving digits, clips of {shape}")
    from cnnlab.data.ucr import load_ucr, ucr_splits

    match = _UCR.match(spec)
    assert match is not None
    ts = load_ucr(match.group(1), data_dir, allow_download=allow_download)
    splits = Splits(*ucr_splits(ts, seed, val_fraction))
    t, c = ts.x_train.shape[1:]
    what = f"UCR/UEA {ts.name}: {c} channel(s), length {t}, {ts.n_classes} classes"
    return Dataset(spec, splits, list(ts.classes), what)


def scored_inputs(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The test set as float32 inputs in the network's scale, and int64 labels."""
    x = dataset.splits.x_test
    x = x.astype(np.float32) / 255 if x.dtype == np.uint8 else x.astype(np.float32)
    return x, dataset.splits.y_test.astype(np.int64)

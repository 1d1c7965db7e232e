"""Datasets by spec: every command that trains or scores a network reads its data here.

``load_dataset(spec, options)`` finds the spec's source in the registry
(:func:`cnnlab.data.base.parse_spec`) and loads it. The sources (one module each):

- ``mnist``: the chapter's digits, 28x28x1 uint8;
- ``fashion-mnist``, ``kmnist``: MNIST's format and shape, other pictures
  (:mod:`cnnlab.data.idx_sets`);
- ``cifar10``: 32x32x3 uint8, from the binary version (:mod:`cnnlab.data.cifar`);
- ``ucr:NAME``: a UCR/UEA time-series dataset, (T, C) float32 (:mod:`cnnlab.data.ucr`);
- ``moving-mnist``: clips of a moving digit, (T, H, W, 1) uint8 (:mod:`cnnlab.data.moving_mnist`);
- ``folder:PATH``: your images, one subfolder per class (:mod:`cnnlab.data.folder`);
- ``npz:PATH``: your arrays (:mod:`cnnlab.data.npz`).

Each gives the same :class:`Dataset`: channels-last splits with a validation set drawn,
stratified and seeded, from the training data only; the test set is kept for the final
score. ``Dataset.kind`` ("images", "series", "clips") decides the recipe;
``Dataset.record()`` is what a run folder keeps to rebuild the same data.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from cnnlab.data.base import DataOptions, Dataset, parse_spec, spec_help
from cnnlab.data.mnist import DIGITS
from cnnlab.data.scaling import input_scale, to_inputs

__all__ = ["DIGITS", "SPEC_HELP", "DataOptions", "Dataset", "check_spec", "load_dataset"]

SPEC_HELP = spec_help()  # the registered sources, for --help (spec_help() for the latest)


def check_spec(spec: str) -> str:
    """``spec`` if a registered source parses it; one CnnlabError line listing the choices."""
    return parse_spec(spec).spec


def load_dataset(
    spec: str,
    options: DataOptions | Path | str | None = None,
    seed: int | None = None,
    val_fraction: float | None = None,
    *,
    allow_download: bool | None = None,
) -> Dataset:
    """The dataset ``spec``, split for training (validation from the training part only).

    ``load_dataset(spec, DataOptions(...))``; the older form
    ``load_dataset(spec, data_dir, seed, val_fraction, allow_download=...)`` still works.
    """
    if isinstance(options, DataOptions):
        if seed is not None or val_fraction is not None or allow_download is not None:
            raise TypeError("give seed, val_fraction and allow_download in the DataOptions")
        opts = options
    else:
        opts = DataOptions(data_dir=Path(options) if options is not None else None)
        if seed is not None:
            opts = replace(opts, seed=seed)
        if val_fraction is not None:
            opts = replace(opts, val_fraction=val_fraction)
        if allow_download is not None:
            opts = replace(opts, allow_download=allow_download)
    return parse_spec(spec).load(opts)


def scored_inputs(
    dataset: Dataset, network_takes_raw_pixels: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The test set as float32 network inputs (:func:`cnnlab.data.scaling.input_scale`'s
    rule) and int64 labels."""
    scale = input_scale(bool(dataset.pixels), network_takes_raw_pixels)
    return to_inputs(dataset.splits.x_test, scale), dataset.splits.y_test.astype(np.int64)

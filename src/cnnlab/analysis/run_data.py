"""A run's test set as every analysis reads it, and an image file as the run's network sees it.

:class:`RunTestSet` holds the stored test values (uint8 pixels or floats, an array or a lazy
:class:`~cnnlab.data.rows.RowView`), the labels, the names of the network's outputs and the
run's recorded input scale (:func:`cnnlab.train.schemas.read_run_data`). Analyses read it in
batches and scale each batch with :func:`cnnlab.data.scaling.to_inputs`, so a test set that
lives on the disk is never held in memory as floats.

The command line rebuilds a run's dataset (``cnnlab.cli.datasets.run_dataset``) and hands it
here; Python callers may pass MNIST itself, any :class:`~cnnlab.data.Dataset`, or inputs
that are already scaled (:meth:`RunTestSet.of_inputs`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cnnlab.data import MNIST, Dataset, Splits
from cnnlab.data.scaling import InputScale, to_inputs
from cnnlab.errors import CnnlabError
from cnnlab.models import ModelDescription
from cnnlab.train.run_inputs import dataset_scale, recipe_for
from cnnlab.train.schemas import read_run_data

WHAT = {"images": "image", "series": "series", "clips": "clip"}  # one example, in words
AS_STORED = InputScale(1.0, "inputs given already scaled, used as they are")
DIGITS = [str(d) for d in range(10)]


def as_dataset(data: MNIST | Dataset) -> Dataset:
    """``data`` as a Dataset; MNIST itself as its test set, (N, 28, 28, 1) uint8."""
    if isinstance(data, Dataset):
        return data
    x = data.x_test[..., None]
    empty = x[:0]
    splits = Splits(empty, data.y_test[:0], empty, data.y_test[:0], x, data.y_test)
    return Dataset("mnist", splits, list(DIGITS), "MNIST digits", "images", True)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def check_fits(run_dir: Path, desc: ModelDescription, dataset: Dataset) -> None:
    """One CnnlabError line unless the network takes the data's inputs and classes."""
    if dataset.input_shape != desc.input_shape:
        raise CnnlabError(
            f"{run_dir}: the network takes {_shape(desc.input_shape)} inputs, the data "
            f"({dataset.spec}) has {_shape(dataset.input_shape)}"
        )
    if len(dataset.classes) > desc.classes:
        raise CnnlabError(
            f"{run_dir}: the network has {desc.classes} outputs, the data ({dataset.spec}) "
            f"{len(dataset.classes)} classes"
        )
    if not len(dataset.splits.y_test):
        raise CnnlabError(f"{run_dir}: the data ({dataset.spec}) has no test set to score")


def scale_for(run_dir: Path, desc: ModelDescription, dataset: Dataset) -> InputScale:
    """How ``dataset``'s stored values become the run's inputs (the one rule:
    :func:`cnnlab.train.run_inputs.dataset_scale`)."""
    return dataset_scale(desc, read_run_data(run_dir), bool(dataset.pixels))


@dataclass(frozen=True)
class RunTestSet:
    """The test split a run is scored on, with the run's own input scale."""

    x: Any  # (N, *input_shape) stored values: an array or a RowView
    y: NDArray[np.int64]
    classes: list[str]  # one name per network output
    scale: InputScale
    spec: str
    kind: str = "images"
    description: str = ""

    @classmethod
    def of(cls, run_dir: Path, desc: ModelDescription, data: MNIST | Dataset) -> RunTestSet:
        """The test split of ``data`` for the run's network, checked to fit it."""
        dataset = as_dataset(data)
        check_fits(run_dir, desc, dataset)
        names = list(dataset.classes)
        names += [str(i) for i in range(len(names), desc.classes)]
        y = np.asarray(dataset.splits.y_test).astype(np.int64, copy=False)
        scale = scale_for(run_dir, desc, dataset)
        return cls(
            dataset.splits.x_test, y, names, scale, dataset.spec, dataset.kind,
            dataset.description,
        )  # fmt: skip

    @classmethod
    def of_inputs(
        cls, x: NDArray[Any], y: NDArray[Any], classes: list[str] | None = None
    ) -> RunTestSet:
        """Network inputs already scaled (float32), with their labels."""
        y = np.asarray(y).astype(np.int64, copy=False)
        names = classes or [str(i) for i in range(int(y.max(initial=0)) + 1)]
        kind = {1: "series", 2: "images", 3: "clips"}.get(np.ndim(x) - 2, "images")
        return cls(np.asarray(x, dtype=np.float32), y, names, AS_STORED, "inputs", kind)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def what(self) -> str:
        """One example in words: "image", "series", "clip"."""
        return WHAT.get(self.kind, "input")

    @property
    def plural(self) -> str:
        return "series" if self.kind == "series" else f"{self.what}s"

    def name(self, label: int) -> str:
        """The class name of ``label`` (its number beyond the known names)."""
        return self.classes[label] if 0 <= label < len(self.classes) else str(label)

    def inputs(self, start: int = 0, stop: int | None = None) -> NDArray[np.float32]:
        """Rows ``start:stop`` as float32 network inputs (read and scaled now)."""
        return to_inputs(self.x[start:stop], self.scale)

    def batches(
        self, n: int | None = None, batch_size: int = 1000
    ) -> Iterator[tuple[NDArray[np.float32], NDArray[np.int64]]]:
        """The first ``n`` examples (all by default) as scaled batches with their labels."""
        n = len(self) if n is None else min(n, len(self))
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield self.inputs(start, stop), self.y[start:stop]

    def digest(self, n: int | None = None, batch_size: int = 1000) -> str:
        """SHA-256 of the first ``n`` stored rows, their labels and the scale: what a cache
        of results on these inputs is keyed by."""
        n = len(self) if n is None else min(n, len(self))
        h = hashlib.sha256(f"{n} {self.scale.divisor!r}".encode())
        for start in range(0, n, batch_size):
            h.update(np.ascontiguousarray(self.x[start : min(start + batch_size, n)]).tobytes())
        h.update(np.ascontiguousarray(self.y[:n]).tobytes())
        return h.hexdigest()


def bar_off(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` for ``progress``: None shows a bar where stderr is a terminal."""
    return None if progress is None else not progress


def output_names(run_dir: Path, desc: ModelDescription) -> list[str]:
    """The class names a run recorded, extended with numbers to the network's outputs."""
    names = read_run_data(run_dir).classes or []
    return names[: desc.classes] + [str(i) for i in range(len(names), desc.classes)]


def image_file_input(run_dir: Path, desc: ModelDescription, path: Path) -> NDArray[np.float32]:
    """An image file as the run's network input, as predict and serve read it (the run's own
    recipe: :func:`cnnlab.train.run_inputs.recipe_for`). One CnnlabError line where it cannot."""
    recipe = recipe_for(desc, read_run_data(run_dir))
    recipe.require("--image")
    return np.asarray(recipe.load(Path(path)).x, dtype=np.float32)

"""A network against the data it is fitted to: the shapes and classes checked, the one
input-scale rule applied, bare splits made a Dataset, label-number classes named."""

from __future__ import annotations

import dataclasses

from cnnlab.data import Dataset, Splits
from cnnlab.data.scaling import InputScale, input_scale
from cnnlab.errors import CnnlabError
from cnnlab.models import ModelDescription
from cnnlab.train.config import TrainConfig
from cnnlab.train.run_inputs import takes_raw_pixels


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def check_data(description: ModelDescription, dataset: Dataset) -> None:
    """The network and the data must agree: the input shape, and one output per class;
    CnnlabError naming both where they do not."""
    shape = dataset.input_shape
    what = f"the data ({dataset.spec}) has"
    if shape != description.input_shape:
        hint = ""
        if dataset.kind == "images" and len(shape) == len(description.input_shape) == 3:
            hint = (
                " (for a folder of images, --image-size and --channels set what it is resized to)"
            )
        raise CnnlabError(
            f"model {description.name!r} takes {_fmt(description.input_shape)} inputs, "
            f"{what} {_fmt(shape)}{hint}"
        )
    classes = description.classes
    splits = dataset.splits
    top = max(int(splits.y_train.max(initial=0)), int(splits.y_val.max(initial=0)))
    # classes that are only label numbers may be fewer than the outputs (a subset of them)
    numbered = dataset.classes == [str(i) for i in range(len(dataset.classes))]
    fewer = numbered and len(dataset.classes) <= classes
    if (classes != len(dataset.classes) and not fewer) or top >= classes:
        raise CnnlabError(
            f"model {description.name!r} has {classes} outputs, {what} "
            f"{len(dataset.classes)} classes ({', '.join(dataset.classes[:5])}"
            f"{', ...' if len(dataset.classes) > 5 else ''})"
        )


def data_scale(description: ModelDescription, dataset: Dataset) -> InputScale:
    """How this data's stored values reach this network (the one rule: cnnlab.data.scaling)."""
    return input_scale(bool(dataset.pixels), takes_raw_pixels(description))


def as_dataset(data: Dataset | Splits, config: TrainConfig) -> Dataset:
    """``data`` as a Dataset; bare Splits are the dataset ``config.data`` names, already
    split (the class names are the label numbers)."""
    if isinstance(data, Dataset):
        return data
    labels = [data.y_train, data.y_val, data.y_test]
    k = max(int(y.max(initial=0)) for y in labels) + 1
    rank = len(data.x_train.shape) - 2  # spatial axes
    kind = {1: "series", 2: "images", 3: "clips"}.get(rank, "images")
    return Dataset(config.data, data, [str(i) for i in range(k)], config.data, kind)


def named_for(description: ModelDescription, dataset: Dataset) -> Dataset:
    """Classes that are only label numbers, extended to the network's outputs (a subset of
    the labels may be absent from the data); named classes as they are."""
    outputs = description.classes
    if dataset.classes == [str(i) for i in range(len(dataset.classes))]:
        if outputs > len(dataset.classes):
            return dataclasses.replace(dataset, classes=[str(i) for i in range(outputs)])
    return dataset

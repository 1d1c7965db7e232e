"""One dataset abstraction: a source parses its spec and loads a :class:`Dataset`.

A spec is ``NAME`` or ``NAME:ARGUMENT`` (``mnist``, ``ucr:GunPoint``, ``folder:photos/``).
Each source is one module that registers its class under ``NAME`` with
:func:`register_source`; :func:`parse_spec` finds it in the registry, so adding a source
means adding a module (and importing it in ``cnnlab/data/__init__.py``), nothing else.

Every source gives the same :class:`Dataset`: channels-last :class:`Splits`, the class
names, what the stored values are (``pixels``: uint8 0-255) and a JSON-able record of the
preprocessing, which a run folder keeps so that later commands rebuild the same data.
"""

from __future__ import annotations

import math
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeAlias

import numpy as np

from cnnlab import budget
from cnnlab.errors import CnnlabError

KINDS = ("images", "series", "clips")
INTERPOLATIONS: dict[str, str] = {  # accepted name -> the one recorded
    "bilinear": "bilinear",
    "nearest": "nearest",
    "bicubic": "bicubic",
    "area": "area",
    "box": "area",
    "lanczos": "lanczos",
    "lanczos3": "lanczos",
}
FITS = ("stretch", "crop", "pad")
# The input rows of a split: an np.ndarray, or a lazy cnnlab.data.rows.RowView (folder:
# data, read from the disk cache row by row). Index it with an int, a slice or an index
# array; never turn a RowView into one array (np.asarray reads every row into memory).
Rows: TypeAlias = Any


@dataclass(frozen=True)
class Splits:
    """Split arrays, channels-last ``(N, *input_shape)``; labels int64 ``(N,)``.

    Inputs are uint8 pixels (0-255), which the engines scale batch by batch
    (:func:`cnnlab.data.scaling.to_inputs`), or float32 values used as they are.
    """

    x_train: Rows
    y_train: np.ndarray
    x_val: Rows
    y_val: np.ndarray
    x_test: Rows
    y_test: np.ndarray

    def counts(self) -> dict[str, int]:
        """Examples per split, for records and logs."""
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


@dataclass(frozen=True)
class Dataset:
    """Splits, class names, and how the stored values were made.

    ``kind``: "images" (N, H, W, C), "series" (N, L, C) or "clips" (N, T, H, W, C), which
    decides the recipe. ``pixels``: the inputs are uint8 0-255 pixels (None: read it off
    the dtype). ``preprocessing``: JSON-able, what the source did (see :meth:`record`).
    """

    spec: str
    splits: Splits
    classes: list[str]
    description: str  # one line for logs: what the data is
    kind: str = "images"
    pixels: bool | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CnnlabError(f"dataset kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.pixels is None:
            object.__setattr__(self, "pixels", self.splits.x_train.dtype == np.uint8)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.splits.x_train.shape[1:])

    @property
    def images(self) -> bool:
        """28x28 single-channel images, MNIST-style (what image files are turned into)."""
        return self.input_shape == (28, 28, 1)

    def record(self) -> dict[str, Any]:
        """What a run folder keeps: enough to rebuild the same data and preprocessing."""
        return {
            "spec": self.spec,
            "kind": self.kind,
            "classes": list(self.classes),
            "pixels": bool(self.pixels),
            "input_shape": list(self.input_shape),
            "description": self.description,
            "preprocessing": self.preprocessing,
        }


@dataclass(frozen=True)
class DataOptions:
    """How to find, load, split and preprocess a dataset (every source reads these).

    ``image_shape`` is (H, W, C) the network wants; None lets an image source decide from
    the data (and record why). ``test_fraction`` is used only where a source has no test
    split of its own. ``workers``: decoding processes (None: one per CPU, at most 8).
    ``cache_dir``: where decoded data is cached (None: ``$XDG_CACHE_HOME/cnnlab`` or
    ``~/.cache/cnnlab``). ``max_image_pixels``: a larger image is refused before decoding.
    """

    data_dir: Path | None = None
    seed: int = 42
    val_fraction: float = 0.25
    test_fraction: float = 0.2
    image_shape: tuple[int, int, int] | None = None
    interpolation: str = "bilinear"
    fit: str = "stretch"
    strict: bool = False
    allow_download: bool = True
    workers: int | None = None
    progress: bool = True
    cache_dir: Path | None = None
    max_image_pixels: int = 89_478_485  # Pillow's own default warning threshold
    max_memory_bytes: int = budget.DEFAULT_BYTES  # the dataset as held (cnnlab.budget)

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            # val_fraction 0: no held-out split, for sources that allow it (ucr: keeps the
            # model with the lowest loss on all of TRAIN); the others refuse it when they split
            low = 0.0 if name == "val_fraction" and value == 0 else 1e-300
            if not (isinstance(value, int | float) and low <= value < 1.0):
                raise CnnlabError(f"{name} must be between 0 and 1 (exclusive), not {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise CnnlabError(f"seed must be a non-negative integer, not {self.seed!r}")
        if self.image_shape is not None:
            shape = tuple(self.image_shape)
            if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
                raise CnnlabError(f"image_shape must be (height, width, channels), not {shape}")
            if shape[2] not in (1, 3, 4):
                raise CnnlabError(f"images have 1, 3 or 4 channels, not {shape[2]}")
            if math.prod(shape) > 1 << 26:
                raise CnnlabError(f"image_shape {shape} is over 64M values per image")
            object.__setattr__(self, "image_shape", shape)
        if self.interpolation not in INTERPOLATIONS:
            raise CnnlabError(
                f"unknown interpolation {self.interpolation!r}; choose {', '.join(INTERPOLATIONS)}"
            )
        object.__setattr__(self, "interpolation", INTERPOLATIONS[self.interpolation])
        if self.fit not in FITS:
            raise CnnlabError(f"unknown fit {self.fit!r}; choose {', '.join(FITS)}")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise CnnlabError(f"workers must be a positive integer, not {self.workers!r}")
        if self.max_image_pixels < 1:
            raise CnnlabError("max_image_pixels must be positive")
        for name in ("data_dir", "cache_dir"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))

    def replay(self, record: dict[str, Any]) -> DataOptions:
        """These options with a run's recorded preprocessing (:meth:`Dataset.record`): the
        image shape, interpolation, fit and split fractions the run was trained with."""
        from dataclasses import replace

        pre = record.get("preprocessing", {}) if isinstance(record, dict) else {}
        image = pre.get("image") or {}
        changes: dict[str, Any] = {}
        if image.get("shape"):
            changes["image_shape"] = tuple(int(s) for s in image["shape"])
        for key in ("interpolation", "fit"):
            if image.get(key):
                changes[key] = image[key]
        test = pre.get("test_split") or {}
        if test.get("drawn") and "fraction" in test:
            changes["test_fraction"] = float(test["fraction"])
        if "seed" in test and test.get("drawn"):
            changes["seed"] = int(test["seed"])
        return replace(self, **changes)


class Source(ABC):
    """A dataset source: one module, registered under its spec's name.

    Subclasses set ``argument`` (what follows ``name:``, e.g. "PATH"; None: no argument)
    and ``summary`` (a few words for the list of choices), and implement :meth:`load`.
    """

    name: ClassVar[str] = ""
    argument: ClassVar[str | None] = None
    summary: ClassVar[str] = ""
    order: ClassVar[int] = 100  # place in the list of choices: standard sets first
    listed: ClassVar[bool] = True  # offered in --data's help (not: what a run records only)

    def __init__(self, spec: str, argument: str | None) -> None:
        self.spec = spec
        self.arg = argument

    @classmethod
    def parse(cls, spec: str, argument: str | None) -> Source:
        """The source for ``spec`` (already split at its first ':'); CnnlabError if malformed."""
        return cls(spec, argument)

    @abstractmethod
    def load(self, options: DataOptions) -> Dataset:
        """The dataset, split for training (validation drawn from the training part only)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


_REGISTRY: dict[str, type[Source]] = {}


def register_source(name: str) -> Callable[[type[Source]], type[Source]]:
    """Class decorator: make ``name`` (a spec's prefix) load with the decorated Source."""

    def add(cls: type[Source]) -> type[Source]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"dataset source {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def registered_sources() -> dict[str, type[Source]]:
    """Name -> Source class, in the order the choices are listed."""
    return dict(sorted(_REGISTRY.items(), key=lambda kv: kv[1].order))


def spec_help() -> str:
    """The registered specs in one phrase: 'mnist, ucr:NAME (a UCR/UEA ...), ...'."""
    parts = []
    for name, cls in sorted(_REGISTRY.items(), key=lambda kv: kv[1].order):
        if not cls.listed:
            continue
        spec = f"{name}:{cls.argument}" if cls.argument else name
        parts.append(f"{spec} ({cls.summary})" if cls.summary else spec)
    return ", ".join(parts[:-1]) + (" or " if len(parts) > 1 else "") + parts[-1]


def parse_spec(spec: str) -> Source:
    """The registered source that ``spec`` names; one CnnlabError line otherwise."""
    if not isinstance(spec, str) or not spec.strip():
        raise CnnlabError(f"no dataset given; choose {spec_help()}")
    name, sep, argument = spec.partition(":")
    cls = _REGISTRY.get(name)
    if cls is None:
        raise CnnlabError(f"unknown dataset {spec!r}; choose {spec_help()}")
    if cls.argument is None and sep:
        raise CnnlabError(f"dataset {name!r} takes no argument, not {spec!r}")
    if cls.argument is not None and not argument:
        raise CnnlabError(f"dataset {name!r} needs its {cls.argument}: {name}:{cls.argument}")
    return cls.parse(spec, argument if sep else None)


def warn(message: str) -> None:
    """One warning line on stderr, as the command line prints errors."""
    print(f"cnnlab: warning: {message}", file=sys.stderr, flush=True)

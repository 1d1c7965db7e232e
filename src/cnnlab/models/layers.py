"""The layer vocabulary of a network description: Keras' layer classes and argument names.

Each layer is a frozen dataclass holding its Keras arguments, resolved and checked
(``kernel_size=3`` in a ``Conv2D`` becomes ``(3, 3)``; ``strides`` of a pooling layer
default to its ``pool_size``, as in Keras). :func:`parse_layer` builds one from a class
name and a mapping of arguments, refusing anything outside the vocabulary in one line
that names the layer and the argument. Nothing here knows any particular network.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from cnnlab.errors import CnnlabError

ACTIVATIONS = ("relu", "elu", "tanh", "sigmoid", "softmax", "linear")
PADDINGS = ("valid", "same")
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
# names a layer may not take: attributes of the PyTorch module it becomes a child of
RESERVED_NAMES = frozenset({"forward", "training", "description", "n_forward", "modules"})


class DescriptionError(CnnlabError):
    """A network description that cannot be built: names the layer and the problem."""


@dataclass(frozen=True, kw_only=True)
class Layer:
    """One layer; ``name`` is unique within its network (Keras-style defaults)."""

    name: str

    @property
    def class_name(self) -> str:
        return type(self).__name__

    def config(self) -> dict[str, Any]:
        """The Keras arguments, as plain JSON values (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("name", "rank", "kind"):
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"class_name": self.class_name, "name": self.name, **self.config()}


@dataclass(frozen=True, kw_only=True)
class Conv(Layer):
    """``Conv1D``, ``Conv2D`` or ``Conv3D`` (``rank`` spatial axes)."""

    rank: int
    filters: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: str
    dilation_rate: tuple[int, ...]
    activation: str
    use_bias: bool

    @property
    def class_name(self) -> str:
        return f"Conv{self.rank}D"


@dataclass(frozen=True, kw_only=True)
class Pool(Layer):
    """``MaxPooling{1,2,3}D`` (kind "max") or ``AveragePooling{1,2,3}D`` (kind "average")."""

    rank: int
    kind: str
    pool_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: str

    @property
    def class_name(self) -> str:
        return f"{'Max' if self.kind == 'max' else 'Average'}Pooling{self.rank}D"


@dataclass(frozen=True, kw_only=True)
class GlobalPool(Layer):
    """``GlobalAveragePooling{1,2,3}D`` or ``GlobalMaxPooling{1,2,3}D``: one value per channel."""

    rank: int
    kind: str

    @property
    def class_name(self) -> str:
        return f"Global{'Max' if self.kind == 'max' else 'Average'}Pooling{self.rank}D"


@dataclass(frozen=True, kw_only=True)
class ZeroPadding(Layer):
    """``ZeroPadding{1,2,3}D``: ``padding`` holds (before, after) per spatial axis."""

    rank: int
    padding: tuple[tuple[int, int], ...]

    @property
    def class_name(self) -> str:
        return f"ZeroPadding{self.rank}D"

    def config(self) -> dict[str, Any]:
        return {"padding": [list(p) for p in self.padding]}


@dataclass(frozen=True, kw_only=True)
class Flatten(Layer):
    """Keras' ``Flatten`` on channels-last maps: (…, C) flattened in (spatial…, C) order."""


@dataclass(frozen=True, kw_only=True)
class Dense(Layer):
    units: int
    activation: str
    use_bias: bool


@dataclass(frozen=True, kw_only=True)
class Dropout(Layer):
    rate: float


@dataclass(frozen=True, kw_only=True)
class BatchNormalization(Layer):
    """Over the channel (last) axis, with Keras' defaults: epsilon 1e-3, momentum 0.99."""

    epsilon: float
    momentum: float
    center: bool
    scale: bool


@dataclass(frozen=True, kw_only=True)
class Activation(Layer):
    activation: str


@dataclass(frozen=True, kw_only=True)
class ReLU(Layer):
    pass


@dataclass(frozen=True, kw_only=True)
class Softmax(Layer):
    """Softmax over the last (channel) axis."""


@dataclass(frozen=True, kw_only=True)
class Rescaling(Layer):
    """``x * scale + offset`` (Keras' ``Rescaling``), e.g. to normalise inputs."""

    scale: float
    offset: float


# ---------------------------------------------------------------- argument checking


def _fail(where: str, message: str) -> DescriptionError:
    return DescriptionError(f"{where}: {message}")


def _int(where: str, key: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise _fail(where, f"{key} must be a whole number, got {value!r}")
    if value < minimum:
        raise _fail(where, f"{key} must be at least {minimum}, got {value}")
    if value > 1 << 20:
        raise _fail(where, f"{key} is implausibly large ({value})")
    return int(value)


def _tuple(where: str, key: str, value: Any, rank: int, minimum: int = 1) -> tuple[int, ...]:
    if isinstance(value, list | tuple):
        if len(value) != rank:
            raise _fail(where, f"{key} needs {rank} entries (one per spatial axis), got {value!r}")
        return tuple(_int(where, key, v, minimum) for v in value)
    return (_int(where, key, value, minimum),) * rank


def _float(where: str, key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(where, f"{key} must be a number, got {value!r}")
    if not low <= value <= high:
        raise _fail(where, f"{key} must be in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def _bool(where: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, f"{key} must be true or false, got {value!r}")
    return value


def _choice(where: str, key: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise _fail(where, f"{key} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _zero_padding(where: str, value: Any, rank: int) -> tuple[tuple[int, int], ...]:
    def pair(v: Any) -> tuple[int, int]:
        if isinstance(v, list | tuple):
            if len(v) != 2:
                raise _fail(where, f"padding needs (before, after) pairs, got {v!r}")
            return (_int(where, "padding", v[0], 0), _int(where, "padding", v[1], 0))
        p = _int(where, "padding", v, 0)
        return (p, p)

    if isinstance(value, list | tuple):
        if rank == 1 and len(value) == 2 and all(isinstance(v, int) for v in value):
            return (pair(value),)  # Keras' ZeroPadding1D((before, after))
        if len(value) != rank:
            raise _fail(where, f"padding needs {rank} entries (one per spatial axis)")
        return tuple(pair(v) for v in value)
    return (pair(value),) * rank


# ---------------------------------------------------------------- the vocabulary

_RANKED = re.compile(
    r"^(Conv|MaxPooling|AveragePooling|GlobalAveragePooling|GlobalMaxPooling|ZeroPadding)([123])D$"
)
# Arguments each class takes, with Keras' defaults (None: required).
_ARGS: dict[str, dict[str, Any]] = {
    "Conv": {
        "filters": None,
        "kernel_size": None,
        "strides": 1,
        "padding": "valid",
        "dilation_rate": 1,
        "activation": "linear",
        "use_bias": True,
    },
    "MaxPooling": {"pool_size": 2, "strides": None, "padding": "valid"},
    "AveragePooling": {"pool_size": 2, "strides": None, "padding": "valid"},
    "GlobalAveragePooling": {},
    "GlobalMaxPooling": {},
    "ZeroPadding": {"padding": 1},
    "Flatten": {},
    "Dense": {"units": None, "activation": "linear", "use_bias": True},
    "Dropout": {"rate": None},
    "BatchNormalization": {"epsilon": 1e-3, "momentum": 0.99, "center": True, "scale": True},
    "Activation": {"activation": None},
    "ReLU": {},
    "Softmax": {},
    "Rescaling": {"scale": None, "offset": 0.0},
}
CLASS_NAMES = tuple(
    [f"{stem}{r}D" for stem in ("Conv", "MaxPooling", "AveragePooling") for r in (1, 2, 3)]
    + [f"Global{k}Pooling{r}D" for k in ("Average", "Max") for r in (1, 2, 3)]
    + [f"ZeroPadding{r}D" for r in (1, 2, 3)]
    + ["Flatten", "Dense", "Dropout", "BatchNormalization", "Activation", "ReLU", "Softmax"]
    + ["Rescaling"]
)


def _resolve(where: str, stem: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` with defaults filled in; unknown or missing arguments refused."""
    allowed = _ARGS[stem]
    for key in args:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            known = ", ".join(allowed) or "no arguments"
            raise _fail(where, f"unknown argument {key!r}{hint}; it takes {known}")
    out = {k: args.get(k, v) for k, v in allowed.items()}
    missing = [k for k, v in out.items() if v is None and k != "strides"]
    if missing:
        raise _fail(where, f"missing argument {missing[0]!r}")
    return out


def parse_layer(class_name: Any, args: Mapping[str, Any], name: str, where: str) -> Layer:
    """One layer from its Keras class name and arguments; ``where`` prefixes every error."""
    if not isinstance(class_name, str):
        raise _fail(where, f"a layer needs a class name, got {class_name!r}")
    m = _RANKED.match(class_name)
    stem, rank = (m.group(1), int(m.group(2))) if m else (class_name, 0)
    if class_name not in CLASS_NAMES:
        near = difflib.get_close_matches(class_name, CLASS_NAMES, n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise _fail(
            where, f"unknown layer {class_name!r}{hint}; supported: {', '.join(CLASS_NAMES)}"
        )
    a = _resolve(where, stem, args)
    build: Callable[[], Layer] = _BUILDERS[stem](where, name, rank, a)
    return build()


def _conv(where: str, name: str, rank: int, a: dict[str, Any]) -> Callable[[], Layer]:
    strides = _tuple(where, "strides", a["strides"], rank)
    dilation = _tuple(where, "dilation_rate", a["dilation_rate"], rank)
    if max(strides) > 1 and max(dilation) > 1:
        raise _fail(where, "strides > 1 together with dilation_rate > 1 is not supported (Keras)")
    return lambda: Conv(
        name=name,
        rank=rank,
        filters=_int(where, "filters", a["filters"]),
        kernel_size=_tuple(where, "kernel_size", a["kernel_size"], rank),
        strides=strides,
        padding=_choice(where, "padding", a["padding"], PADDINGS),
        dilation_rate=dilation,
        activation=_choice(where, "activation", a["activation"], ACTIVATIONS),
        use_bias=_bool(where, "use_bias", a["use_bias"]),
    )


def _pool(kind: str) -> Callable[[str, str, int, dict[str, Any]], Callable[[], Layer]]:
    def make(where: str, name: str, rank: int, a: dict[str, Any]) -> Callable[[], Layer]:
        size = _tuple(where, "pool_size", a["pool_size"], rank)
        strides = size if a["strides"] is None else _tuple(where, "strides", a["strides"], rank)
        padding = _choice(where, "padding", a["padding"], PADDINGS)
        return lambda: Pool(
            name=name, rank=rank, kind=kind, pool_size=size, strides=strides, padding=padding
        )

    return make


def _global(kind: str) -> Callable[[str, str, int, dict[str, Any]], Callable[[], Layer]]:
    return lambda where, name, rank, a: lambda: GlobalPool(name=name, rank=rank, kind=kind)


_BUILDERS: dict[str, Callable[[str, str, int, dict[str, Any]], Callable[[], Layer]]] = {
    "Conv": _conv,
    "MaxPooling": _pool("max"),
    "AveragePooling": _pool("average"),
    "GlobalAveragePooling": _global("average"),
    "GlobalMaxPooling": _global("max"),
    "ZeroPadding": lambda w, n, r, a: (
        lambda: ZeroPadding(name=n, rank=r, padding=_zero_padding(w, a["padding"], r))
    ),
    "Flatten": lambda w, n, r, a: lambda: Flatten(name=n),
    "Dense": lambda w, n, r, a: (
        lambda: Dense(
            name=n,
            units=_int(w, "units", a["units"]),
            activation=_choice(w, "activation", a["activation"], ACTIVATIONS),
            use_bias=_bool(w, "use_bias", a["use_bias"]),
        )
    ),
    "Dropout": lambda w, n, r, a: (
        lambda: Dropout(name=n, rate=_float(w, "rate", a["rate"], 0.0, 0.999))
    ),
    "BatchNormalization": lambda w, n, r, a: (
        lambda: BatchNormalization(
            name=n,
            epsilon=_float(w, "epsilon", a["epsilon"], 1e-12, 1.0),
            momentum=_float(w, "momentum", a["momentum"], 0.0, 0.9999),
            center=_bool(w, "center", a["center"]),
            scale=_bool(w, "scale", a["scale"]),
        )
    ),
    "Activation": lambda w, n, r, a: (
        lambda: Activation(
            name=n, activation=_choice(w, "activation", a["activation"], ACTIVATIONS)
        )
    ),
    "ReLU": lambda w, n, r, a: lambda: ReLU(name=n),
    "Softmax": lambda w, n, r, a: lambda: Softmax(name=n),
    "Rescaling": lambda w, n, r, a: (
        lambda: Rescaling(
            name=n,
            scale=_float(w, "scale", a["scale"], -1e6, 1e6),
            offset=_float(w, "offset", a["offset"], -1e6, 1e6),
        )
    ),
}


def default_name(class_name: str, taken: set[str]) -> str:
    """Keras' automatic name: ``conv2d``, ``conv2d_1``, ... (snake case of the class)."""
    stem = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    stem = re.sub(r"([a-z])([A-Z])", r"\1_\2", stem).lower()
    name, k = stem, 0
    while name in taken:
        k += 1
        name = f"{stem}_{k}"
    return name

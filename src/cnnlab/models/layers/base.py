"""What every layer kind is: a frozen dataclass of Keras arguments that owns its own rules.

A layer kind is one class (``Conv`` for ``Conv1D``/``Conv2D``/``Conv3D``, as Keras' ``BaseConv``
with ``rank``). It declares its Keras names and arguments, and answers every question a
consumer asks of it:

- :meth:`Layer.parse`: the arguments resolved (defaults filled, values checked);
- :meth:`Layer.output_shape` and :meth:`Layer.weights` (their shapes give the parameters);
- :meth:`Layer.module`: its PyTorch module (channels-first tensors), and :meth:`Layer.init_`,
  Keras' initialisers;
- :meth:`Layer.forward_numpy`: its inference forward pass through :mod:`cnnlab.ops`,
  channels-last;
- :meth:`Layer.geometry`: what it does to the positions its units see, from which receptive
  fields, shift masks and the feature-map walk follow (:mod:`cnnlab.models.fields`);
- :meth:`Layer.weights`: its weights in Keras' order and layout, with the permutation to
  PyTorch's, which Keras import and the NumPy engine both read.

A kind that lacks something a consumer needs raises :class:`CapabilityError` naming the layer
and the capability; nothing is skipped silently. Classes register themselves with
:func:`register`; the registry (:data:`LAYERS`) maps every Keras class name to its class.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import NDArray

from cnnlab.errors import CnnlabError

if TYPE_CHECKING:
    from torch import nn

    from cnnlab.models.description import LayerInfo
    from cnnlab.models.fields import Geometry

Shape = tuple[int, ...]
Array = NDArray[Any]
REQUIRED = object()  # an argument without a default
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
INPUT = "input"  # the name the network's input goes by in ``inputs`` lists
# names a layer may not take: attributes of the PyTorch module it becomes a child of
RESERVED_NAMES = frozenset(
    {"forward", "training", "description", "n_forward", "forward_plan", "modules", INPUT}
)
MAX_SIZE = 1 << 20  # any single size argument (filters, kernel, units, ...)


class DescriptionError(CnnlabError):
    """A network description that cannot be built: names the layer and the problem."""


class CapabilityError(CnnlabError):
    """A layer kind lacks what a consumer needs (a kernel, a receptive-field rule, ...)."""

    def __init__(self, layer: Layer, capability: str, why: str = "") -> None:
        self.layer, self.capability = layer, capability
        text = f"layer {layer.name!r} ({layer.class_name}) has no {capability}"
        super().__init__(text + (f": {why}" if why else ""))


def fmt(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


@dataclass(frozen=True)
class Weight:
    """One weight array: Keras' name and channels-last shape, and where PyTorch keeps it.

    ``perm`` gives, for each PyTorch axis, the Keras axis it comes from
    (``torch = keras.transpose(perm)``), and ``reshape`` the PyTorch shape after it where
    axes are merged too (a depthwise kernel); None keeps the layout.
    """

    keras: str  # "kernel", "bias", "gamma", "moving_mean", ...
    shape: Shape  # in Keras' layout
    torch: str  # the module's parameter or buffer name
    perm: tuple[int, ...] | None = None
    trainable: bool = True
    reshape: Shape | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def _permuted(self) -> Shape:
        return self.shape if self.perm is None else tuple(self.shape[p] for p in self.perm)

    @property
    def torch_shape(self) -> Shape:
        return self.reshape if self.reshape is not None else self._permuted

    def to_torch(self, a: Array) -> Array:
        """A Keras-layout array in PyTorch's layout."""
        if self.perm is not None:
            a = np.ascontiguousarray(a.transpose(self.perm))
        return a.reshape(self.torch_shape)

    def from_torch(self, a: Array) -> Array:
        """A PyTorch-layout array in Keras' layout."""
        a = a.reshape(self._permuted)
        return a if self.perm is None else a.transpose(np.argsort(self.perm))


L = TypeVar("L", bound="Layer")


@dataclass(frozen=True, kw_only=True)
class Layer:
    """One layer; ``name`` is unique within its network (Keras-style defaults)."""

    name: str

    # Keras class name -> the fields that name fixes (``{"Conv2D": {"rank": 2}}``).
    KERAS_NAMES: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    # The Keras arguments this kind takes, with Keras' defaults (REQUIRED: none).
    ARGS: ClassVar[Mapping[str, Any]] = {}
    # The one-line form's positional arguments, in Keras' order (cnnlab.models.compact).
    POSITIONAL: ClassVar[tuple[str, ...]] = ()
    # Keras config keys that do not change what the network computes (initialisers, ...).
    KERAS_IGNORED: ClassVar[tuple[str, ...]] = ()
    # Keras config keys accepted at these values only (anything else is refused).
    KERAS_FIXED: ClassVar[Mapping[str, tuple[Any, ...]]] = {}
    # Keras config keys of older Keras versions, passed to from_keras() to rename.
    KERAS_LEGACY: ClassVar[tuple[str, ...]] = ()
    # Inputs it takes: 1, or None for two or more (a merge).
    N_INPUTS: ClassVar[int | None] = 1
    # A convolution or pooling layer: it shows feature maps (cnnlab.analysis.layer_walk).
    MAPS: ClassVar[bool] = False

    # ------------------------------------------------------------ the name and arguments

    @property
    def class_name(self) -> str:
        """Keras' class name, from the fields that tell the names apart."""
        for keras_name, fixed in self.KERAS_NAMES.items():
            if all(getattr(self, k) == v for k, v in fixed.items()):
                return keras_name
        raise AssertionError(f"{type(self).__name__} matches none of its Keras names")

    @classmethod
    def parse(cls: type[L], class_name: str, args: Mapping[str, Any], name: str, where: str) -> L:
        """The layer ``class_name`` (one of this kind's Keras names) from Keras arguments."""
        fixed = dict(cls.KERAS_NAMES[class_name])
        return cls.build(name, fixed, resolve_args(where, cls.ARGS, args), where)

    @classmethod
    def build(cls: type[L], name: str, fixed: dict[str, Any], a: dict[str, Any], where: str) -> L:
        """The layer from resolved arguments ``a``: check each and convert (override this)."""
        return cls(name=name, **fixed, **a)

    def config(self) -> dict[str, Any]:
        """The Keras arguments, as plain JSON values (tuples become lists)."""
        return {k: jsonable(getattr(self, k)) for k in self.ARGS}

    def to_dict(self) -> dict[str, Any]:
        return {"class_name": self.class_name, "name": self.name, **self.config()}

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> dict[str, Any]:
        """This kind's arguments from a Keras layer config (already stripped of what
        KERAS_IGNORED and KERAS_FIXED cover); override to rename the KERAS_LEGACY keys."""
        return {k: v for k, v in config.items() if k in cls.ARGS}

    def check_keras(self, config: Mapping[str, Any], info: LayerInfo) -> str | None:
        """Why the Keras layer of raw ``config`` computes something else than this layer on
        its input shape (an ``axis`` that is not the channel axis ...); None if it agrees."""
        return None

    # ------------------------------------------------------------ shapes and weights

    def output_shape(self, shapes: Sequence[Shape], where: str) -> Shape:
        """The output shape for these input shapes (channels last, no batch axis);
        DescriptionError (prefixed ``where``) if they do not fit."""
        raise CapabilityError(self, "shape rule")

    def weights(self, shapes: Sequence[Shape]) -> tuple[Weight, ...]:
        """Its weights in Keras' order (``model.weights.h5``'s vars/0, 1, ...)."""
        return ()

    # ------------------------------------------------------------ engines

    def module(self, info: LayerInfo) -> nn.Module:
        """Its PyTorch module: channels-first tensors in, one tensor out."""
        raise CapabilityError(self, "PyTorch module")

    def init_(self, module: nn.Module) -> None:
        """Keras' initialisers on a fresh module (draws from torch's global RNG)."""

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        """Inference on channels-last batches (N, *spatial, C) with Keras-layout weights."""
        raise CapabilityError(self, "NumPy forward pass")

    def geometry(self, info: LayerInfo) -> Geometry:
        """What it does to positions (its receptive-field rule, cnnlab.models.fields)."""
        raise CapabilityError(self, "receptive-field rule")

    def connections(self, info: LayerInfo) -> tuple[int, int]:
        """(inputs each output unit is connected to, output positions sharing each weight);
        0 where it does not apply (no window or weighted sum; no weights)."""
        return 0, 0

    # ------------------------------------------------------------ words

    def label(self) -> str:
        """How it reads after a feature-map layer's label ("" adds nothing)."""
        return ""

    @property
    def activation_name(self) -> str | None:
        """The activation it ends with, if it has an ``activation`` argument."""
        value = getattr(self, "activation", None)
        return value if isinstance(value, str) else None


LAYERS: dict[str, type[Layer]] = {}  # Keras class name -> the kind that handles it


def register(cls: type[L]) -> type[L]:
    """Class decorator: every Keras name of ``cls`` goes into :data:`LAYERS`."""
    for keras_name in cls.KERAS_NAMES:
        if keras_name in LAYERS:
            raise AssertionError(f"{keras_name} registered twice")
        LAYERS[keras_name] = cls
    return cls


def class_names() -> tuple[str, ...]:
    return tuple(LAYERS)


def parse_layer(class_name: Any, args: Mapping[str, Any], name: str, where: str) -> Layer:
    """One layer from its Keras class name and arguments; ``where`` prefixes every error."""
    if not isinstance(class_name, str):
        raise DescriptionError(f"{where}: a layer needs a class name, got {class_name!r}")
    cls = LAYERS.get(class_name)
    if cls is None:
        near = difflib.get_close_matches(class_name, list(LAYERS), n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise DescriptionError(
            f"{where}: unknown layer {class_name[:64]!r}{hint}; supported: {', '.join(LAYERS)}"
        )
    return cls.parse(class_name, args, name, where)


def default_name(class_name: str, taken: set[str]) -> str:
    """Keras' automatic name: ``conv2d``, ``conv2d_1``, ... (snake case of the class)."""
    stem = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    stem = re.sub(r"([a-z])([A-Z])", r"\1_\2", stem).lower()
    name, k = stem, 0
    while name in taken or name in RESERVED_NAMES:
        k += 1
        name = f"{stem}_{k}"
    return name


def field_names(cls: type[Layer]) -> list[str]:
    return [f.name for f in fields(cls)]


# ---------------------------------------------------------------- argument checking


def jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    return value


def fail(where: str, message: str) -> DescriptionError:
    return DescriptionError(f"{where}: {message}")


def resolve_args(where: str, allowed: Mapping[str, Any], args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` with defaults filled in; unknown or missing arguments refused."""
    for key in args:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            known = ", ".join(allowed) or "no arguments"
            raise fail(where, f"unknown argument {str(key)[:64]!r}{hint}; it takes {known}")
    out = {k: args.get(k, v) for k, v in allowed.items()}
    missing = [k for k, v in out.items() if v is REQUIRED]
    if missing:
        raise fail(where, f"missing argument {missing[0]!r}")
    return out


def check_int(where: str, key: str, value: Any, minimum: int = 1, maximum: int = MAX_SIZE) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise fail(where, f"{key} must be a whole number, got {value!r:.40}")
    if value < minimum:
        raise fail(where, f"{key} must be at least {minimum}, got {value}")
    if value > maximum:
        raise fail(where, f"{key} is implausibly large ({str(value)[:20]})")
    return int(value)


def check_tuple(where: str, key: str, value: Any, rank: int, minimum: int = 1) -> tuple[int, ...]:
    """One size per spatial axis: a list of ``rank`` sizes, or one size for every axis."""
    if isinstance(value, list | tuple):
        if len(value) != rank:
            raise fail(
                where, f"{key} needs {rank} entries (one per spatial axis), got {value!r:.60}"
            )
        return tuple(check_int(where, key, v, minimum) for v in value)
    return (check_int(where, key, value, minimum),) * rank


def check_float(where: str, key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise fail(where, f"{key} must be a number, got {value!r:.40}")
    if not low <= value <= high:
        raise fail(where, f"{key} must be in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def check_bool(where: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise fail(where, f"{key} must be true or false, got {value!r:.40}")
    return value


def check_choice(where: str, key: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise fail(where, f"{key} must be one of {', '.join(choices)}, got {value!r:.40}")
    return value


def check_pairs(where: str, key: str, value: Any, rank: int) -> tuple[tuple[int, int], ...]:
    """(before, after) per spatial axis, as Keras' ZeroPadding/Cropping take them: an int for
    every side, one int or pair per axis, or (rank 1) a flat (before, after) pair."""

    def pair(v: Any) -> tuple[int, int]:
        if isinstance(v, list | tuple):
            if len(v) != 2:
                raise fail(where, f"{key} needs (before, after) pairs, got {v!r:.40}")
            return (check_int(where, key, v[0], 0), check_int(where, key, v[1], 0))
        p = check_int(where, key, v, 0)
        return (p, p)

    if isinstance(value, list | tuple):
        if rank == 1 and len(value) == 2 and all(isinstance(v, int) for v in value):
            return (pair(value),)  # Keras' ZeroPadding1D((before, after))
        if len(value) != rank:
            raise fail(where, f"{key} needs {rank} entries (one per spatial axis)")
        return tuple(pair(v) for v in value)
    return (pair(value),) * rank


def spatial_input(where: str, shape: Shape, rank: int) -> None:
    """``shape`` must be a ``rank``-D map with channels: (*spatial, C)."""
    if len(shape) != rank + 1:
        raise fail(
            where,
            f"needs a {rank}-D input with channels ({rank + 1} axes), got {fmt(shape)}"
            + (" (flattened already?)" if len(shape) == 1 else ""),
        )


def window_output(
    where: str,
    n: Shape,
    k: Shape,
    s: Shape,
    d: Shape,
    pad: str,
    what: str,
) -> Shape:
    """Output sizes of a sliding window (TensorFlow's ``same``: ceil(n / s))."""
    out = []
    for size, kk, ss, dd in zip(n, k, s, d, strict=True):
        eff = (kk - 1) * dd + 1
        if pad == "same":
            out.append(-(-size // ss))
        elif size < eff:
            dilated = f" (dilated: {fmt([(x - 1) * y + 1 for x, y in zip(k, d, strict=True)])})"
            raise fail(
                where,
                f"input {fmt(n)} is smaller than {what} {fmt(k)}" + (dilated if max(d) > 1 else ""),
            )
        else:
            out.append((size - eff) // ss + 1)
    return tuple(out)


def one_input(shapes: Sequence[Shape]) -> Shape:
    return shapes[0]

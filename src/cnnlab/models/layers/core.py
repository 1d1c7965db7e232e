"""The core layers: ``Dense``, ``Dropout``, ``Activation``, ``ReLU``, ``Softmax``, ``Rescaling``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import ops
from cnnlab.models.fields import COLLAPSE, POINTWISE, Geometry
from cnnlab.models.layers.activations import ACTIVATIONS, activate, activate_numpy
from cnnlab.models.layers.base import (
    REQUIRED,
    Array,
    Layer,
    Shape,
    Weight,
    check_bool,
    check_choice,
    check_float,
    check_int,
    fail,
    fmt,
    register,
)
from cnnlab.models.layers.conv import CONSTRAINTS, INITIALISERS, REGULARISERS, glorot_uniform_

if TYPE_CHECKING:
    from cnnlab.models.description import LayerInfo


class Pointwise(Layer):
    """A layer that maps each value (or each position's channels) on its own: the output has
    the input's shape, and a unit sees what the input unit at its position sees."""

    def output_shape(self, shapes: Sequence[Shape], where: str) -> Shape:
        return shapes[0]

    def geometry(self, info: LayerInfo) -> Geometry:
        return POINTWISE


class Lambda(nn.Module):
    """A weightless module from a function of one tensor."""

    def __init__(self, fn: Any, text: str) -> None:
        super().__init__()
        self.fn, self.text = fn, text

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.text


class DenseModule(nn.Linear):
    activation: str = "linear"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return activate(F.linear(x, self.weight, self.bias), self.activation)


@register
@dataclass(frozen=True, kw_only=True)
class Dense(Layer):
    """A fully connected layer on a flat input: ``activation(x @ kernel + bias)``."""

    units: int
    activation: str
    use_bias: bool

    KERAS_NAMES = {"Dense": {}}
    ARGS = {"units": REQUIRED, "activation": "linear", "use_bias": True}
    POSITIONAL = ("units",)
    KERAS_IGNORED = (*INITIALISERS, *REGULARISERS, *CONSTRAINTS, "lora_alpha")
    KERAS_FIXED = {"lora_rank": (None,), "quantization_config": (None,)}

    @classmethod
    def build(cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str) -> Dense:
        return cls(
            name=name,
            units=check_int(where, "units", a["units"]),
            activation=check_choice(where, "activation", a["activation"], ACTIVATIONS),
            use_bias=check_bool(where, "use_bias", a["use_bias"]),
        )

    def output_shape(self, shapes: Sequence[Shape], where: str) -> Shape:
        if len(shapes[0]) != 1:
            raise fail(
                where,
                f"needs a flat input, got {fmt(shapes[0])}; add Flatten or a global pooling "
                "layer before it",
            )
        return (self.units,)

    def weights(self, shapes: Sequence[Shape]) -> tuple[Weight, ...]:
        kernel = Weight("kernel", (shapes[0][0], self.units), "weight", (1, 0))
        return (kernel, *((Weight("bias", (self.units,), "bias"),) if self.use_bias else ()))

    def module(self, info: LayerInfo) -> nn.Module:
        dense = DenseModule(info.in_shape[0], self.units, bias=self.use_bias)
        dense.activation = self.activation
        return dense

    def init_(self, module: nn.Module) -> None:
        assert isinstance(module, nn.Linear)
        glorot_uniform_(module.weight, (module.weight.shape[1], self.units))
        if module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        return activate_numpy(ops.dense(xs[0], w["kernel"], w.get("bias")), self.activation)

    def geometry(self, info: LayerInfo) -> Geometry:
        return COLLAPSE

    def connections(self, info: LayerInfo) -> tuple[int, int]:
        return info.in_shape[0], 1


@register
@dataclass(frozen=True, kw_only=True)
class Dropout(Pointwise):
    """Zeroes each value with probability ``rate`` in training (the rest scaled by
    1 / (1 - rate)); the identity at inference."""

    rate: float

    KERAS_NAMES = {"Dropout": {}}
    ARGS = {"rate": REQUIRED}
    POSITIONAL = ("rate",)
    KERAS_IGNORED = ("seed",)
    KERAS_FIXED = {"noise_shape": (None,)}

    @classmethod
    def build(cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str) -> Dropout:
        return cls(name=name, rate=check_float(where, "rate", a["rate"], 0.0, 0.999))

    def module(self, info: LayerInfo) -> nn.Module:
        return nn.Dropout(self.rate)

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        return xs[0]  # inference: the identity


@register
@dataclass(frozen=True, kw_only=True)
class Activation(Pointwise):
    """Keras' activation ``activation`` as a layer of its own."""

    activation: str

    KERAS_NAMES = {"Activation": {}}
    ARGS = {"activation": REQUIRED}
    POSITIONAL = ("activation",)

    @classmethod
    def build(cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str) -> Activation:
        return cls(
            name=name, activation=check_choice(where, "activation", a["activation"], ACTIVATIONS)
        )

    def module(self, info: LayerInfo) -> nn.Module:
        name = self.activation
        return Lambda(lambda x: activate(x, name), name)

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        return activate_numpy(xs[0], self.activation)

    def label(self) -> str:
        return "" if self.activation == "linear" else self.activation


def relu_torch(
    x: torch.Tensor, max_value: float | None, negative_slope: float, threshold: float
) -> torch.Tensor:
    """Keras' ``relu(x, negative_slope, max_value, threshold)``: ``min(x, max_value)`` where
    ``x > threshold``, else ``negative_slope * (x - threshold)`` (at ``x == threshold``: 0)."""
    above = x if max_value is None else torch.clamp(x, max=max_value)
    return torch.where(x > threshold, above, negative_slope * (x - threshold))


@register
@dataclass(frozen=True, kw_only=True)
class ReLU(Pointwise):
    """Keras' ``ReLU``: ``max(x, 0)`` by default; with ``max_value``, ``negative_slope`` and
    ``threshold`` as ``keras.activations.relu`` computes them (:func:`relu_torch`).

    Keras 3's ``ops.relu`` (keras/src/activations/activations.py ``ReLU.static_call``)
    computes ``clip(x * (x > threshold), 0, max_value) - negative_slope * relu(threshold -
    x)``: the value at ``x == threshold`` is 0, not ``threshold`` as its docstring reads, and a
    ``max_value`` below the threshold caps everything above it at ``max_value``.
    """

    max_value: float | None
    negative_slope: float
    threshold: float

    KERAS_NAMES = {"ReLU": {}}
    ARGS = {"max_value": None, "negative_slope": 0.0, "threshold": 0.0}
    POSITIONAL = ("max_value", "negative_slope", "threshold")

    @classmethod
    def build(cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str) -> ReLU:
        top = a["max_value"]  # Keras: None or >= 0; negative_slope and threshold >= 0
        return cls(
            name=name,
            max_value=None if top is None else check_float(where, "max_value", top, 0.0, 1e6),
            negative_slope=check_float(where, "negative_slope", a["negative_slope"], 0.0, 1e6),
            threshold=check_float(where, "threshold", a["threshold"], 0.0, 1e6),
        )

    @property
    def plain(self) -> bool:
        """``max(x, 0)``: every argument at Keras' default."""
        return self.max_value is None and self.negative_slope == 0 and self.threshold == 0

    def module(self, info: LayerInfo) -> nn.Module:
        if self.plain:
            return Lambda(torch.relu, "relu")
        top, slope, t = self.max_value, self.negative_slope, self.threshold
        return Lambda(lambda x: relu_torch(x, top, slope, t), self.label())

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        x = xs[0]
        if self.plain:
            return ops.relu(x)
        f = x.dtype.type
        above = x if self.max_value is None else np.minimum(x, f(self.max_value))
        return np.where(
            x > f(self.threshold), above, f(self.negative_slope) * (x - f(self.threshold))
        )

    def label(self) -> str:
        if self.activation_name is not None:
            return self.activation_name
        given = {k: getattr(self, k) for k in self.ARGS}
        parts = [f"{k}={v:g}" for k, v in given.items() if v != self.ARGS[k]]
        return f"relu({', '.join(parts)})"

    @property
    def activation_name(self) -> str | None:
        """The Keras activation it computes: ``relu``, ``relu6`` (max_value 6 alone), or none."""
        if self.plain:
            return "relu"
        if self.max_value == 6 and self.negative_slope == 0 and self.threshold == 0:
            return "relu6"
        return None


@register
@dataclass(frozen=True, kw_only=True)
class Softmax(Pointwise):
    """Softmax over the channel (last) axis."""

    KERAS_NAMES = {"Softmax": {}}
    KERAS_FIXED = {"axis": (-1, [-1])}

    def module(self, info: LayerInfo) -> nn.Module:
        return Lambda(lambda x: torch.softmax(x, dim=1), "softmax")

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        return ops.softmax(xs[0], axis=-1)

    def label(self) -> str:
        return "softmax"

    @property
    def activation_name(self) -> str | None:
        return "softmax"


@register
@dataclass(frozen=True, kw_only=True)
class Rescaling(Pointwise):
    """``x * scale + offset`` (Keras' ``Rescaling``), e.g. to normalise inputs."""

    scale: float
    offset: float

    KERAS_NAMES = {"Rescaling": {}}
    ARGS = {"scale": REQUIRED, "offset": 0.0}
    POSITIONAL = ("scale", "offset")

    @classmethod
    def build(cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str) -> Rescaling:
        return cls(
            name=name,
            scale=check_float(where, "scale", a["scale"], -1e6, 1e6),
            offset=check_float(where, "offset", a["offset"], -1e6, 1e6),
        )

    def module(self, info: LayerInfo) -> nn.Module:
        scale, offset = self.scale, self.offset
        return Lambda(lambda x: x * scale + offset, f"x * {scale!r} + {offset!r}")

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        x = xs[0]
        return x * x.dtype.type(self.scale) + x.dtype.type(self.offset)

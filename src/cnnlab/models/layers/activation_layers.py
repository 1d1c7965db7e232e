"""Keras' activation layers with arguments of their own: ``LeakyReLU``, ``PReLU``, ``ELU``.

(``ReLU`` and ``Softmax`` live in :mod:`cnnlab.models.layers.core`; the activations an
``activation=`` argument names, in :mod:`cnnlab.models.layers.activations`.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.layers.base import (
    Array,
    Shape,
    Weight,
    check_float,
    check_int,
    fail,
    fmt,
    register,
)
from cnnlab.models.layers.core import Lambda, Pointwise

if TYPE_CHECKING:
    from cnnlab.models.description import LayerInfo


@register
@dataclass(frozen=True, kw_only=True)
class LeakyReLU(Pointwise):
    """``x`` where ``x >= 0``, else ``negative_slope * x`` (Keras 3's default slope 0.3)."""

    negative_slope: float

    KERAS_NAMES = {"LeakyReLU": {}}
    ARGS = {"negative_slope": 0.3}
    POSITIONAL = ("negative_slope",)
    KERAS_LEGACY = ("alpha",)  # Keras 2's name, which Keras 3's __init__ still takes

    @classmethod
    def build(cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str) -> LeakyReLU:
        slope = check_float(where, "negative_slope", a["negative_slope"], 0.0, 1e6)
        return cls(name=name, negative_slope=slope)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in config.items() if k in cls.ARGS}
        if "alpha" in config:  # Keras 3: ``negative_slope = kwargs.pop("alpha")``, it wins
            out["negative_slope"] = config["alpha"]
        return out

    def module(self, info: LayerInfo) -> nn.Module:
        slope = self.negative_slope
        return Lambda(lambda x: F.leaky_relu(x, slope), self.label())

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        x = xs[0]
        return np.where(x >= 0, x, x * x.dtype.type(self.negative_slope))

    def label(self) -> str:
        return f"leaky_relu({self.negative_slope:g})"


class PReLUModule(nn.Module):
    """``relu(x) - alpha * relu(-x)`` (Keras' ``PReLU.call``), channels first; ``alpha``
    is Keras' weight with its channel axis moved first, so it broadcasts over (N, C, ...)."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) - self.alpha * torch.relu(-x)


@register
@dataclass(frozen=True, kw_only=True)
class PReLU(Pointwise):
    """``x`` where ``x >= 0``, else ``alpha * x``, with ``alpha`` learned: one value per input
    value, shared along ``shared_axes`` (Keras counts the batch axis as 0: ``[1, 2]``
    shares it over the rows and columns of a 2-D map). Keras initialises it to zeros."""

    shared_axes: tuple[int, ...] | None

    KERAS_NAMES = {"PReLU": {}}
    ARGS = {"shared_axes": None}
    KERAS_IGNORED = ("alpha_initializer", "alpha_regularizer", "alpha_constraint")

    @classmethod
    def build(cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str) -> PReLU:
        axes = a["shared_axes"]
        if axes is None:
            return cls(name=name, shared_axes=None)
        if not isinstance(axes, list | tuple):
            axes = [axes]  # Keras: an int is a list of one
        return cls(name=name, shared_axes=tuple(check_int(where, "shared_axes", v) for v in axes))

    def output_shape(self, shapes: Sequence[Shape], where: str) -> Shape:
        shape = shapes[0]
        for axis in self.shared_axes or ():
            if axis > len(shape):
                raise fail(
                    where,
                    f"shared_axes {axis} is not an axis of its {fmt(shape)} input "
                    f"(1 to {len(shape)}: Keras counts the batch axis as 0)",
                )
        return shape

    def _alpha_shape(self, shape: Shape) -> Shape:
        """Keras' ``param_shape``: the input shape, 1 along each shared axis."""
        out = list(shape)
        for axis in self.shared_axes or ():
            out[axis - 1] = 1
        return tuple(out)

    def weights(self, shapes: Sequence[Shape]) -> tuple[Weight, ...]:
        shape = self._alpha_shape(shapes[0])  # (*spatial, C), Keras' layout
        rank = len(shape) - 1
        perm = (rank, *range(rank)) if rank else None  # PyTorch: (C, *spatial)
        return (Weight("alpha", shape, "alpha", perm),)

    def module(self, info: LayerInfo) -> nn.Module:
        (alpha,) = self.weights(info.in_shapes)
        return PReLUModule(alpha.torch_shape)

    def init_(self, module: nn.Module) -> None:
        assert isinstance(module, PReLUModule)
        nn.init.zeros_(module.alpha)  # Keras' alpha_initializer "Zeros"

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        x = xs[0]
        return np.maximum(x, 0) - w["alpha"] * np.maximum(-x, 0)

    def label(self) -> str:
        return "prelu"


@register
@dataclass(frozen=True, kw_only=True)
class ELU(Pointwise):
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)`` (Keras' ``ops.elu``).

    Keras 3's ``ELU`` leaves ``alpha`` out of its config (it has no ``get_config``), so a
    saved Keras 3 ELU reloads, in Keras as here, with ``alpha=1``; Keras 2 wrote it.
    """

    alpha: float

    KERAS_NAMES = {"ELU": {}}
    ARGS = {"alpha": 1.0}
    POSITIONAL = ("alpha",)

    @classmethod
    def build(cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str) -> ELU:
        return cls(name=name, alpha=check_float(where, "alpha", a["alpha"], -1e6, 1e6))

    def module(self, info: LayerInfo) -> nn.Module:
        alpha = self.alpha
        return Lambda(lambda x: F.elu(x, alpha), self.label())

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        x = xs[0]
        return np.where(x > 0, x, x.dtype.type(self.alpha) * np.expm1(np.minimum(x, 0)))

    def label(self) -> str:
        return "elu" if self.alpha == 1 else f"elu({self.alpha:g})"

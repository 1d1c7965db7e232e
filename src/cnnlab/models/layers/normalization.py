"""``BatchNormalization`` over the channel (last) axis, with Keras' defaults and statistics;
``LayerNormalization`` over the axes Keras' ``axis`` names, per example."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from cnnlab.models.fields import POINTWISE, Geometry
from cnnlab.models.layers.base import (
    Array,
    CapabilityError,
    Layer,
    Shape,
    Weight,
    check_bool,
    check_float,
    check_int,
    fail,
    fmt,
    register,
)
from cnnlab.models.layers.core import Pointwise

if TYPE_CHECKING:
    from cnnlab.models.description import LayerInfo

_EXTRA = tuple(
    f"{w}_{what}"
    for w in ("beta", "gamma", "moving_mean", "moving_variance")
    for what in ("initializer", "regularizer", "constraint")
)


class BatchNormModule(nn.Module):
    """Keras' BatchNormalization over the channel axis (axis 1 here, channels first).

    Training: normalise with the batch's biased variance; moving statistics updated as
    ``moving = moving * momentum + batch * (1 - momentum)`` (Keras also uses the biased
    variance there, where PyTorch's BatchNorm uses the unbiased one).
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, layer: BatchNormalization, channels: int) -> None:
        super().__init__()
        self.eps, self.momentum = layer.epsilon, layer.momentum
        self.weight = nn.Parameter(torch.ones(channels)) if layer.scale else None
        self.bias = nn.Parameter(torch.zeros(channels)) if layer.center else None
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [d for d in range(x.ndim) if d != 1]
        shape = [1, -1] + [1] * (x.ndim - 2)
        if self.training:
            mean = x.mean(dim=dims)
            var = x.var(dim=dims, unbiased=False)
            with torch.no_grad():
                m = self.momentum
                self.running_mean.mul_(m).add_(mean.detach(), alpha=1 - m)
                self.running_var.mul_(m).add_(var.detach(), alpha=1 - m)
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.weight is not None:
            y = y * self.weight.view(shape)
        if self.bias is not None:
            y = y + self.bias.view(shape)
        return y


@register
@dataclass(frozen=True, kw_only=True)
class BatchNormalization(Pointwise):
    """Over the channel (last) axis, with Keras' defaults: epsilon 1e-3, momentum 0.99."""

    epsilon: float
    momentum: float
    center: bool
    scale: bool

    KERAS_NAMES = {"BatchNormalization": {}}
    ARGS = {"epsilon": 1e-3, "momentum": 0.99, "center": True, "scale": True}
    KERAS_IGNORED = (*_EXTRA, "synchronized", "renorm_clipping", "renorm_momentum", "axis")
    KERAS_FIXED = {"renorm": (False,)}

    @classmethod
    def build(
        cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str
    ) -> BatchNormalization:
        return cls(
            name=name,
            epsilon=check_float(where, "epsilon", a["epsilon"], 1e-12, 1.0),
            momentum=check_float(where, "momentum", a["momentum"], 0.0, 0.9999),
            center=check_bool(where, "center", a["center"]),
            scale=check_bool(where, "scale", a["scale"]),
        )

    def check_keras(self, config: Mapping[str, Any], info: LayerInfo) -> str | None:
        axis = config.get("axis", -1)
        last = len(info.in_shape)  # the channel axis, counting the batch axis
        if isinstance(axis, bool) or axis not in (-1, [-1], last, [last]):
            return f"axis={axis!r:.40} is not supported (the channel axis, -1, only)"
        return None

    def weights(self, shapes: Sequence[Shape]) -> tuple[Weight, ...]:
        c = (shapes[0][-1],)
        out = [Weight("gamma", c, "weight")] * self.scale + [
            Weight("beta", c, "bias")
        ] * self.center
        stats = ("moving_mean", "running_mean"), ("moving_variance", "running_var")
        return (*out, *(Weight(k, c, t, trainable=False) for k, t in stats))

    def module(self, info: LayerInfo) -> nn.Module:
        return BatchNormModule(self, info.in_shape[-1])

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        x = xs[0]  # inference: the moving statistics
        y = (x - w["moving_mean"]) / np.sqrt(w["moving_variance"] + x.dtype.type(self.epsilon))
        y = y * w["gamma"] if "gamma" in w else y
        return y + w["beta"] if "beta" in w else y

    def label(self) -> str:
        return "BatchNormalization"


class LayerNormModule(nn.Module):
    """Keras' LayerNormalization (``ops.layer_normalization``) on a channels-first tensor,
    computed on its channels-last view: per example, the mean and the biased variance over
    ``dims`` (as Keras' ``ops.moments``), ``gamma`` and ``beta`` in Keras' layout reshaped
    (not transposed) onto the normalised axes, as Keras' ``_broadcast`` does."""

    def __init__(self, layer: LayerNormalization, in_shape: Shape) -> None:
        super().__init__()
        positions = layer.positions(in_shape)
        self.dims = [p + 1 for p in positions]  # the batch axis first
        self.bshape = [1] + [n if i in positions else 1 for i, n in enumerate(in_shape)]
        self.eps, self.rms = layer.epsilon, layer.rms_scaling
        weights = {w.keras: w.shape for w in layer.weights([in_shape])}
        self.weight = nn.Parameter(torch.ones(weights["gamma"])) if "gamma" in weights else None
        self.bias = nn.Parameter(torch.zeros(weights["beta"])) if "beta" in weights else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.movedim(1, -1) if x.ndim > 2 else x  # (N, *spatial, C)
        mean = y.mean(dim=self.dims, keepdim=True)
        var = (y - mean).square().mean(dim=self.dims, keepdim=True)
        inv = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            inv = inv * self.weight.reshape(self.bshape)
        if self.rms:  # Keras' deprecated rms_scaling: x / sqrt(var + eps), not centred
            out = y * inv
        else:
            shift = -mean * inv
            if self.bias is not None:
                shift = shift + self.bias.reshape(self.bshape)
            out = y * inv + shift
        return out.movedim(-1, 1) if x.ndim > 2 else out


@register
@dataclass(frozen=True, kw_only=True)
class LayerNormalization(Layer):
    """Per example, over the axes ``axis`` names (Keras counts the batch axis as 0; -1, the
    default, is the channels): ``(x - mean) / sqrt(var + epsilon) * gamma + beta``, with the
    biased variance; ``gamma`` and ``beta`` span the normalised axes.

    As Keras 3.15's ``build``, a list of axes is sorted as written (so ``[1, -1]`` becomes
    ``[-1, 1]``) and the weights' shape is the input's sizes along them in that order,
    reshaped onto the input's axes in their own order. ``rms_scaling`` (deprecated in
    Keras) divides by ``sqrt(var + epsilon)`` without centring, times ``gamma``, no ``beta``.
    """

    axis: int | tuple[int, ...]
    epsilon: float
    center: bool
    scale: bool
    rms_scaling: bool

    KERAS_NAMES = {"LayerNormalization": {}}
    ARGS = {"axis": -1, "epsilon": 1e-3, "center": True, "scale": True, "rms_scaling": False}
    KERAS_IGNORED = tuple(
        f"{w}_{what}"
        for w in ("beta", "gamma")
        for what in ("initializer", "regularizer", "constraint")
    )

    @classmethod
    def build(
        cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str
    ) -> LayerNormalization:
        axis = a["axis"]
        if isinstance(axis, list | tuple):
            if not axis:
                raise fail(where, "axis needs at least one axis")
            axis = tuple(sorted(check_int(where, "axis", v, -8, 8) for v in axis))
        else:
            axis = check_int(where, "axis", axis, -8, 8)
        if 0 in ((axis,) if isinstance(axis, int) else axis):
            raise fail(where, "axis 0 is the batch axis (Keras counts it): normalise over others")
        return cls(
            name=name,
            axis=axis,
            epsilon=check_float(where, "epsilon", a["epsilon"], 1e-12, 1.0),
            center=check_bool(where, "center", a["center"]),
            scale=check_bool(where, "scale", a["scale"]),
            rms_scaling=check_bool(where, "rms_scaling", a["rms_scaling"]),
        )

    @property
    def axes(self) -> tuple[int, ...]:
        """Keras' ``axis`` as a list, in Keras' order (batch axis 0)."""
        return (self.axis,) if isinstance(self.axis, int) else self.axis

    def positions(self, shape: Shape) -> tuple[int, ...]:
        """The normalised axes of an input of ``shape`` (no batch axis), in Keras' order."""
        return tuple(a - 1 if a > 0 else len(shape) + a for a in self.axes)

    def output_shape(self, shapes: Sequence[Shape], where: str) -> Shape:
        shape = shapes[0]
        for a in self.axes:
            if not -len(shape) <= a <= len(shape):
                raise fail(
                    where,
                    f"axis {a} is not an axis of its {fmt(shape)} input (Keras counts the "
                    f"batch axis as 0: 1 to {len(shape)} or -{len(shape)} to -1)",
                )
        if len(set(self.positions(shape))) != len(self.axes):
            raise fail(where, f"axis {list(self.axes)} names one axis twice")
        return shape

    def weights(self, shapes: Sequence[Shape]) -> tuple[Weight, ...]:
        shape = tuple(shapes[0][p] for p in self.positions(shapes[0]))  # Keras' build
        gamma = (Weight("gamma", shape, "weight"),) if self.scale or self.rms_scaling else ()
        beta = (Weight("beta", shape, "bias"),) if self.center and not self.rms_scaling else ()
        return (*gamma, *beta)

    def module(self, info: LayerInfo) -> nn.Module:
        return LayerNormModule(self, info.in_shape)

    def init_(self, module: nn.Module) -> None:
        assert isinstance(module, LayerNormModule)
        if module.weight is not None:
            nn.init.ones_(module.weight)  # Keras' gamma_initializer "ones"
        if module.bias is not None:
            nn.init.zeros_(module.bias)  # beta_initializer "zeros"

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        x = xs[0]  # (N, *spatial, C)
        positions = self.positions(x.shape[1:])
        dims = tuple(p + 1 for p in positions)
        shape = [1] + [n if i in positions else 1 for i, n in enumerate(x.shape[1:])]
        mean = x.mean(axis=dims, keepdims=True)
        var = np.square(x - mean).mean(axis=dims, keepdims=True)
        inv = 1 / np.sqrt(var + x.dtype.type(self.epsilon))
        if "gamma" in w:
            inv = inv * w["gamma"].reshape(shape)
        if self.rms_scaling:
            return x * inv
        shift = -mean * inv
        if "beta" in w:
            shift = shift + w["beta"].reshape(shape)
        return x * inv + shift

    def geometry(self, info: LayerInfo) -> Geometry:
        positions = self.positions(info.in_shape)
        if positions == (len(info.in_shape) - 1,):
            return POINTWISE  # over the channels: each position on its own
        raise CapabilityError(
            self,
            "receptive-field rule",
            f"it normalises over axis {list(self.axes)} of its {fmt(info.in_shape)} input, not "
            "the channels alone: every unit reads every position along those axes",
        )

    def label(self) -> str:
        return "LayerNormalization"

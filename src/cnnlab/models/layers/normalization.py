"""``BatchNormalization`` over the channel (last) axis, with Keras' defaults and statistics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from cnnlab.models.layers.base import (
    Array,
    Shape,
    Weight,
    check_bool,
    check_float,
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

"""``SeparableConv1D``, ``SeparableConv2D``: a depthwise convolution, then a 1x1 convolution
that mixes its channels into ``filters`` (Keras' BaseSeparableConv).

A :class:`~cnnlab.models.layers.conv.Conv` whose one window is the depthwise step's (the
pointwise step is 1x1, stride 1): it inherits the output size, the receptive-field geometry
and ``connections()`` (each unit reads ``prod(k) * C`` inputs, the depthwise kernel's
``(*k, C)``). What differs, after Keras' ``ops.separable_conv``:

- three weights in Keras' order: ``depthwise_kernel`` (*k, C, M), ``pointwise_kernel``
  (1[, 1], C * M, filters), ``bias`` (filters,), no bias between the two steps;
- in PyTorch a grouped convolution (C * M, 1, *k) then a 1x1 one (filters, C * M, 1[, 1]);
- Keras' Glorot-uniform on each kernel with the fans of its own shape: ``C * prod(k)`` and
  ``M * prod(k)`` for the depthwise one, ``C * M`` and ``filters`` for the pointwise one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from cnnlab import ops
from cnnlab.models.layers.activations import activate, activate_numpy
from cnnlab.models.layers.base import Array, Shape, Weight, check_int, register
from cnnlab.models.layers.conv import CHANNELS_LAST, Conv, glorot_uniform_
from cnnlab.models.layers.depthwise import DEPTHWISE_IGNORED, depthwise_module, depthwise_weight

if TYPE_CHECKING:
    from cnnlab.models.description import LayerInfo

POINTWISE: dict[int, Any] = {1: nn.Conv1d, 2: nn.Conv2d}


class SeparableModule(nn.Module):
    """(N, C, *spatial) -> the depthwise convolution (its ``same`` padding included) ->
    the 1x1 convolution with the bias -> the activation."""

    def __init__(self, depthwise: nn.Module, pointwise: nn.Module, activation: str) -> None:
        super().__init__()
        self.depthwise, self.pointwise, self.activation = depthwise, pointwise, activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return activate(self.pointwise(self.depthwise(x)), self.activation)


@register
@dataclass(frozen=True, kw_only=True)
class SeparableConv(Conv):
    """``SeparableConv{rank}D``: ``depth_multiplier`` kernels of ``kernel_size`` per channel,
    then ``filters`` 1x1 kernels across the ``C * depth_multiplier`` channels."""

    depth_multiplier: int

    KERAS_NAMES = {f"SeparableConv{r}D": {"rank": r} for r in (1, 2)}
    ARGS = {
        "filters": Conv.ARGS["filters"],
        "kernel_size": Conv.ARGS["kernel_size"],
        "strides": 1,
        "padding": "valid",
        "dilation_rate": 1,
        "depth_multiplier": 1,
        "activation": "linear",
        "use_bias": True,
    }
    KERAS_IGNORED: ClassVar[tuple[str, ...]] = (
        *DEPTHWISE_IGNORED,
        "pointwise_initializer",
        "pointwise_regularizer",
        "pointwise_constraint",
    )
    KERAS_FIXED = CHANNELS_LAST

    @classmethod
    def build_extra(cls, where: str, a: dict[str, Any]) -> dict[str, Any]:
        return {"depth_multiplier": check_int(where, "depth_multiplier", a["depth_multiplier"])}

    def weights(self, shapes: Sequence[Shape]) -> tuple[Weight, ...]:
        r, c, m, f = self.rank, shapes[0][-1], self.depth_multiplier, self.filters
        depthwise = depthwise_weight(self.kernel_size, c, m, "depthwise.weight")
        pointwise = Weight(
            "pointwise_kernel", (*(1,) * r, c * m, f), "pointwise.weight", (r + 1, r, *range(r))
        )
        bias = (Weight("bias", (f,), "pointwise.bias"),) if self.use_bias else ()
        return (depthwise, pointwise, *bias)

    def module(self, info: LayerInfo) -> nn.Module:
        c, m = info.in_shape[-1], self.depth_multiplier
        depthwise = depthwise_module(self, c, m, info, bias=False, activation="linear")
        pointwise = POINTWISE[self.rank](c * m, self.filters, 1, bias=self.use_bias)
        return SeparableModule(depthwise, pointwise, self.activation)

    def init_(self, module: nn.Module) -> None:
        assert isinstance(module, SeparableModule)
        depthwise, pointwise = module.depthwise, module.pointwise
        assert isinstance(depthwise, nn.Conv1d | nn.Conv2d)
        assert isinstance(pointwise, nn.Conv1d | nn.Conv2d)
        c, m = depthwise.groups, self.depth_multiplier
        glorot_uniform_(depthwise.weight, (*self.kernel_size, c, m))
        glorot_uniform_(pointwise.weight, (*(1,) * self.rank, c * m, self.filters))
        if pointwise.bias is not None:
            nn.init.zeros_(pointwise.bias)

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        y = ops.depthwise_conv(
            xs[0],
            w["depthwise_kernel"],
            stride=self.strides,
            padding=self.padding,
            dilation=self.dilation_rate,
        )  # (N, *out_spatial, C * M)
        y = ops.conv(y, w["pointwise_kernel"], w.get("bias"))  # (N, *out_spatial, filters)
        return activate_numpy(y, self.activation)

    def describe(self) -> str:
        """``SeparableConv2D 3x3 x2 per channel then 1x1, same, relu``."""
        head, sep, rest = super().describe().partition(", ")
        per_channel = f" x{self.depth_multiplier} per channel" if self.depth_multiplier > 1 else ""
        return head + per_channel + " then 1x1" + sep + rest

"""``DepthwiseConv1D``, ``DepthwiseConv2D``: each input channel convolved with kernels of its
own, channels never mixed (Keras' BaseDepthwiseConv).

A :class:`~cnnlab.models.layers.conv.Conv` in everything but its weights: the same window
(kernel, strides, dilation, TensorFlow's ``same``), activation and checks, so it inherits
the output size, the receptive-field geometry and the NumPy-side words. What differs:

- ``depth_multiplier`` ``M`` kernels per input channel: ``C * M`` output channels, channel
  ``c * M + m`` being channel ``c`` correlated with kernel ``m`` of it (Keras' order);
- its kernel is ``(*k, C, M)`` in Keras (``depthwise_kernel``) and a grouped convolution's
  ``(C * M, 1, *k)`` in PyTorch (``groups = C``), its bias ``(C * M,)``;
- Keras' Glorot-uniform counts that kernel's fans as for any kernel ``(*k, C, M)``:
  ``C * prod(k)`` in, ``M * prod(k)`` out (not PyTorch's grouped fans);
- each output unit reads ``prod(k)`` inputs (its own channel's window).

Keras 3 names the variable ``kernel``; ``depthwise_kernel`` (Keras 2's name, and
SeparableConv's) says which kernel it is where the NumPy engine's weights are read.
``model.weights.h5`` is read by position, so the name does not affect import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

from cnnlab import ops
from cnnlab.models.layers.activations import activate_numpy
from cnnlab.models.layers.base import Array, Shape, Weight, check_int, register
from cnnlab.models.layers.conv import (
    CHANNELS_LAST,
    CONV_MODULES,
    Conv,
    glorot_uniform_,
    same_pads,
)

if TYPE_CHECKING:
    from cnnlab.models.description import LayerInfo

# Keras' depthwise arguments that do not change what the network computes
DEPTHWISE_IGNORED = (
    "depthwise_initializer",
    "bias_initializer",
    "depthwise_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "depthwise_constraint",
    "bias_constraint",
)


def depthwise_weight(kernel_size: Shape, c: int, m: int, torch_name: str) -> Weight:
    """Keras' depthwise kernel (*k, C, M) as a grouped convolution's weight (C * M, 1, *k):
    (C, M, *k) first, then C and M merged, so PyTorch's channel ``c * M + m`` is Keras'."""
    rank = len(kernel_size)
    perm = (rank, rank + 1, *range(rank))
    keras_shape, torch_shape = (*kernel_size, c, m), (c * m, 1, *kernel_size)
    return Weight("depthwise_kernel", keras_shape, torch_name, perm, reshape=torch_shape)


def depthwise_module(
    layer: Conv, c: int, m: int, info: LayerInfo, bias: bool, activation: str
) -> nn.Module:
    """``layer``'s window as a grouped convolution (``groups = C``) with Keras' ``same``
    padding, then ``activation``."""
    pads, symmetric = same_pads(info.in_shape[:-1], layer.window)
    conv = CONV_MODULES[layer.rank](
        c,
        c * m,
        layer.kernel_size,
        stride=layer.strides,
        padding=symmetric,
        dilation=layer.dilation_rate,
        groups=c,
        bias=bias,
    )
    conv.pads = pads
    conv.activation = activation
    return conv


@register
@dataclass(frozen=True, kw_only=True)
class DepthwiseConv(Conv):
    """``DepthwiseConv{rank}D``: ``depth_multiplier`` kernels of ``kernel_size`` per channel.

    ``filters`` (Conv's field, no Keras argument here) holds the kernels per channel too.
    """

    depth_multiplier: int

    KERAS_NAMES = {f"DepthwiseConv{r}D": {"rank": r} for r in (1, 2)}
    ARGS = {
        "kernel_size": Conv.ARGS["kernel_size"],
        "strides": 1,
        "padding": "valid",
        "depth_multiplier": 1,
        "dilation_rate": 1,
        "activation": "linear",
        "use_bias": True,
    }
    POSITIONAL = ("kernel_size", "strides")
    KERAS_IGNORED: ClassVar[tuple[str, ...]] = DEPTHWISE_IGNORED
    KERAS_FIXED = CHANNELS_LAST

    @classmethod
    def build(
        cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str
    ) -> DepthwiseConv:
        multiplier = check_int(where, "depth_multiplier", a["depth_multiplier"])
        layer = super().build(name, fixed, {**a, "filters": multiplier}, where)
        assert isinstance(layer, DepthwiseConv)
        return layer

    @classmethod
    def build_extra(cls, where: str, a: dict[str, Any]) -> dict[str, Any]:
        return {"depth_multiplier": check_int(where, "depth_multiplier", a["depth_multiplier"])}

    def out_channels(self, c_in: int) -> int:
        return c_in * self.depth_multiplier

    def weights(self, shapes: Sequence[Shape]) -> tuple[Weight, ...]:
        c, m = shapes[0][-1], self.depth_multiplier
        kernel = depthwise_weight(self.kernel_size, c, m, "weight")
        bias = (Weight("bias", (c * m,), "bias"),) if self.use_bias else ()
        return (kernel, *bias)

    def module(self, info: LayerInfo) -> nn.Module:
        c, m = info.in_shape[-1], self.depth_multiplier
        return depthwise_module(self, c, m, info, self.use_bias, self.activation)

    def init_(self, module: nn.Module) -> None:
        assert isinstance(module, nn.Conv1d | nn.Conv2d)
        c = module.groups
        glorot_uniform_(module.weight, (*self.kernel_size, c, self.depth_multiplier))
        if module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        y = ops.depthwise_conv(
            xs[0],
            w["depthwise_kernel"],
            w.get("bias"),
            stride=self.strides,
            padding=self.padding,
            dilation=self.dilation_rate,
        )  # (N, *out_spatial, C * M)
        return activate_numpy(y, self.activation)

    def connections(self, info: LayerInfo) -> tuple[int, int]:
        return math.prod(self.kernel_size), math.prod(info.out_shape[:-1])

    def describe(self) -> str:
        """``DepthwiseConv2D 3x3 stride 2 x2 per channel, same, relu``."""
        head, sep, rest = super().describe().partition(", ")
        per_channel = f" x{self.depth_multiplier} per channel" if self.depth_multiplier > 1 else ""
        return head + per_channel + sep + rest

"""``Conv1D``, ``Conv2D``, ``Conv3D``: one class with ``rank`` spatial axes, as Keras' BaseConv.

Keras' semantics where they decide a result: TensorFlow's ``same`` padding (the odd pixel
after, applied with ``F.pad`` where it is asymmetric), Glorot-uniform kernels and zero
biases, the activation after the bias. Kernels are ``(*k, C_in, C_out)`` in Keras and
``(C_out, C_in, *k)`` in PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import ops
from cnnlab.models.fields import Geometry, Window
from cnnlab.models.layers.activations import ACTIVATIONS, activate, activate_numpy
from cnnlab.models.layers.base import (
    REQUIRED,
    Array,
    Layer,
    Shape,
    Weight,
    check_bool,
    check_choice,
    check_int,
    check_tuple,
    fail,
    fmt,
    register,
    spatial_input,
    window_output,
)

if TYPE_CHECKING:
    from cnnlab.models.description import LayerInfo

PADDINGS = ("valid", "same")
INITIALISERS = ("kernel_initializer", "bias_initializer")
REGULARISERS = ("kernel_regularizer", "bias_regularizer", "activity_regularizer")
CONSTRAINTS = ("kernel_constraint", "bias_constraint")
CHANNELS_LAST = {"data_format": ("channels_last",)}


def same_pads(
    in_spatial: Sequence[int], window: Window
) -> tuple[list[int] | None, tuple[int, ...] | int]:
    """TensorFlow's padding for a window on a map of ``in_spatial`` sizes, as PyTorch takes it:
    (F.pad's list, last axis first; None where the padding is symmetric, or there is none)
    and the symmetric amounts per axis for the layer's own ``padding=`` (0 if none)."""
    pairs = window.pads(in_spatial)
    flat = [v for pair in reversed(pairs) for v in pair]
    if all(a == b for a, b in pairs):
        symmetric = tuple(a for a, _ in pairs)
        return None, symmetric if any(symmetric) else 0
    return flat, 0


class ConvMixin:
    """Keras' ConvND: asymmetric ``same`` padding applied with F.pad, then the activation."""

    activation: str = "linear"
    pads: list[int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pads is not None:
            x = F.pad(x, self.pads)
        y = self._conv_forward(x, self.weight, self.bias)  # type: ignore[attr-defined]
        return activate(y, self.activation)


class Conv1DModule(ConvMixin, nn.Conv1d):
    pass


class Conv2DModule(ConvMixin, nn.Conv2d):
    pass


class Conv3DModule(ConvMixin, nn.Conv3d):
    pass


CONV_MODULES: dict[int, Any] = {1: Conv1DModule, 2: Conv2DModule, 3: Conv3DModule}


@register
@dataclass(frozen=True, kw_only=True)
class Conv(Layer):
    """``Conv{rank}D``: ``filters`` kernels of ``kernel_size`` slid over ``rank`` axes."""

    rank: int
    filters: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: str
    dilation_rate: tuple[int, ...]
    activation: str
    use_bias: bool

    KERAS_NAMES = {f"Conv{r}D": {"rank": r} for r in (1, 2, 3)}
    ARGS = {
        "filters": REQUIRED,
        "kernel_size": REQUIRED,
        "strides": 1,
        "padding": "valid",
        "dilation_rate": 1,
        "activation": "linear",
        "use_bias": True,
    }
    # annotated as Layer declares them: subclasses (DepthwiseConv ...) set tuples of their own
    POSITIONAL: ClassVar[tuple[str, ...]] = ("filters", "kernel_size", "strides")
    KERAS_IGNORED: ClassVar[tuple[str, ...]] = (
        *INITIALISERS,
        *REGULARISERS,
        *CONSTRAINTS,
        "lora_alpha",
    )
    KERAS_FIXED = {"groups": (1,), "lora_rank": (None,), **CHANNELS_LAST}
    MAPS = True

    @classmethod
    def build(cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str) -> Conv:
        rank = fixed["rank"]
        strides = check_tuple(where, "strides", a["strides"], rank)
        dilation = check_tuple(where, "dilation_rate", a["dilation_rate"], rank)
        if max(strides) > 1 and max(dilation) > 1:
            raise fail(
                where, "strides > 1 together with dilation_rate > 1 is not supported (Keras)"
            )
        extra = {k: v for k, v in a.items() if k not in Conv.ARGS}
        return cls(
            name=name,
            rank=rank,
            filters=check_int(where, "filters", a["filters"]),
            kernel_size=check_tuple(where, "kernel_size", a["kernel_size"], rank),
            strides=strides,
            padding=check_choice(where, "padding", a["padding"], PADDINGS),
            dilation_rate=dilation,
            activation=check_choice(where, "activation", a["activation"], ACTIVATIONS),
            use_bias=check_bool(where, "use_bias", a["use_bias"]),
            **cls.build_extra(where, extra),
        )

    @classmethod
    def build_extra(cls, where: str, a: dict[str, Any]) -> dict[str, Any]:
        """A subclass's own arguments, checked (``depth_multiplier``, ...)."""
        return a

    @property
    def window(self) -> Window:
        return Window(self.kernel_size, self.strides, self.dilation_rate, self.padding)

    def out_channels(self, c_in: int) -> int:
        return self.filters

    def output_shape(self, shapes: Sequence[Shape], where: str) -> Shape:
        shape = shapes[0]
        spatial_input(where, shape, self.rank)
        w = self.window
        spatial = window_output(
            where, shape[:-1], w.kernel, w.strides, w.dilation, w.padding, "the kernel"
        )
        return (*spatial, self.out_channels(shape[-1]))

    def weights(self, shapes: Sequence[Shape]) -> tuple[Weight, ...]:
        r, c_in = self.rank, shapes[0][-1]
        kernel = Weight(
            "kernel", (*self.kernel_size, c_in, self.filters), "weight", (r + 1, r, *range(r))
        )
        bias = (Weight("bias", (self.filters,), "bias"),) if self.use_bias else ()
        return (kernel, *bias)

    def module(self, info: LayerInfo) -> nn.Module:
        pads, symmetric = same_pads(info.in_shape[:-1], self.window)
        conv = CONV_MODULES[self.rank](
            info.in_shape[-1],
            self.filters,
            self.kernel_size,
            stride=self.strides,
            padding=symmetric,
            dilation=self.dilation_rate,
            bias=self.use_bias,
        )
        conv.activation = self.activation
        conv.pads = pads
        return conv

    def init_(self, module: nn.Module) -> None:
        assert isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d)
        kernel = module.weight
        glorot_uniform_(kernel, (*self.kernel_size, kernel.shape[1], self.filters))
        if module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        y = ops.conv(
            xs[0],
            w["kernel"],
            w.get("bias"),
            stride=self.strides,
            padding=self.padding,
            dilation=self.dilation_rate,
        )  # (N, *out_spatial, filters)
        return activate_numpy(y, self.activation)

    def geometry(self, info: LayerInfo) -> Geometry:
        return self.window

    def connections(self, info: LayerInfo) -> tuple[int, int]:
        kernel = self.weights(info.in_shapes)[0].shape  # (*k, C_in, C_out) or (*k, C, mult)
        return math.prod(kernel[:-1]), math.prod(info.out_shape[:-1])

    def describe(self) -> str:
        """``Conv2D 5x5 stride 2, same, tanh``: the class, the window, padding, activation."""
        head = f"{self.class_name} {fmt(self.kernel_size)}" + per_axis("stride", self.strides)
        head += per_axis("dilation", self.dilation_rate)
        parts = [head, *(["same"] if self.padding == "same" else [])]
        return ", ".join(parts + ([] if self.activation == "linear" else [self.activation]))


def per_axis(word: str, values: Sequence[int]) -> str:
    """`` stride 2`` (or `` stride 2x1``), nothing when every value is 1."""
    if all(v == 1 for v in values):
        return ""
    return f" {word} {values[0] if len(set(values)) == 1 else fmt(values)}"


def glorot_uniform_(weight: torch.Tensor, keras_shape: Shape) -> None:
    """Keras' GlorotUniform on a PyTorch weight whose Keras layout is ``keras_shape``
    (``(*k, fan_in axis, fan_out axis)``): uniform in +-sqrt(6 / (fan_in + fan_out)), the fans
    counted as Keras counts them. Computed as ``nn.init.xavier_uniform_`` computes its limit,
    so a plain convolution or Dense draws exactly what xavier_uniform_ would."""
    receptive = math.prod(keras_shape[:-2])
    fan_in, fan_out = keras_shape[-2] * receptive, keras_shape[-1] * receptive
    limit = math.sqrt(3.0) * math.sqrt(2.0 / float(fan_in + fan_out))
    with torch.no_grad():
        weight.uniform_(-limit, limit)

"""The PyTorch module of a network description, with Keras' semantics where they decide a result.

One child module per description layer, named as the layer (so a checkpoint's keys read
``conv1.weight``, ``dense2.bias``): Keras' initialisers (Glorot-uniform kernels, zero
biases, BatchNormalization's ones and zeros), TensorFlow's ``same`` padding (the odd pixel
after), Flatten in channels-last order, BatchNormalization's epsilon and momentum as Keras
defines them. Tensors are channels-first inside, ``(N, C, *spatial)``, as PyTorch's
kernels want. The network returns logits: a final softmax (a Dense's activation or a
Softmax layer) is left to :func:`predict_proba` and, stably, to the loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models import layers as L
from cnnlab.models.description import LayerInfo, ModelDescription
from cnnlab.ops import padding_amounts


def activate(x: torch.Tensor, name: str) -> torch.Tensor:
    """Keras' activation ``name`` (softmax over the channel axis, as Keras' last axis)."""
    if name == "relu":
        return torch.relu(x)
    if name == "linear":
        return x
    if name == "elu":
        return F.elu(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "softmax":
        return torch.softmax(x, dim=1)
    raise ValueError(f"unknown activation {name!r}")


def same_pads(
    info: LayerInfo, kernel: tuple[int, ...], strides: tuple[int, ...], dil: tuple[int, ...]
) -> list[int]:
    """TensorFlow's ``same`` padding as F.pad's list (last axis first, (before, after) each)."""
    pairs = [
        padding_amounts(n, k, stride=s, padding="same", dilation=d)
        for n, k, s, d in zip(info.in_shape[:-1], kernel, strides, dil, strict=True)
    ]
    return [v for pair in reversed(pairs) for v in pair]


class ConvMixin:
    """Keras' ConvND: asymmetric ``same`` padding applied with F.pad, then the activation."""

    activation: str = "linear"
    pads: list[int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pads is not None:
            x = F.pad(x, self.pads)
        y = self._conv_forward(x, self.weight, self.bias)  # type: ignore[attr-defined]
        return activate(y, self.activation)


class Conv1D(ConvMixin, nn.Conv1d):
    pass


class Conv2D(ConvMixin, nn.Conv2d):
    pass


class Conv3D(ConvMixin, nn.Conv3d):
    pass


class Dense(nn.Linear):
    activation: str = "linear"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return activate(F.linear(x, self.weight, self.bias), self.activation)


class Pool(nn.Module):
    """Max or average pooling, ``valid`` or TensorFlow's ``same`` (padding never counted)."""

    def __init__(self, layer: L.Pool, pads: list[int] | None) -> None:
        super().__init__()
        self.kind, self.rank = layer.kind, layer.rank
        self.size, self.strides, self.pads = layer.pool_size, layer.strides, pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = getattr(F, f"{'max' if self.kind == 'max' else 'avg'}_pool{self.rank}d")
        if self.pads is None:
            return pool(x, self.size, self.strides)
        if self.kind == "max":
            return pool(F.pad(x, self.pads, value=-torch.inf), self.size, self.strides)
        # average over the real values only: Keras' same-padded average pooling
        total = pool(F.pad(x, self.pads), self.size, self.strides)
        ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
        count = pool(F.pad(ones, self.pads), self.size, self.strides)
        return total / count


class GlobalPool(nn.Module):
    """(N, C, *spatial) -> (N, C): the mean or the maximum over every spatial position."""

    def __init__(self, kind: str, rank: int) -> None:
        super().__init__()
        self.kind, self.dims = kind, tuple(range(2, 2 + rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self.dims) if self.kind == "average" else x.amax(dim=self.dims)


class FlattenLast(nn.Module):
    """Keras' Flatten: (N, C, *spatial) -> (N, prod) in channels-last (spatial..., C) order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.movedim(1, -1).flatten(1) if x.ndim > 2 else x


class BatchNorm(nn.Module):
    """Keras' BatchNormalization over the channel axis.

    Training: normalise with the batch's biased variance; moving statistics updated as
    ``moving = moving * momentum + batch * (1 - momentum)`` (Keras also uses the biased
    variance there, where PyTorch's BatchNorm uses the unbiased one).
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, layer: L.BatchNormalization, channels: int) -> None:
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


class Lambda(nn.Module):
    """A layer without weights: an activation, a rescaling or zero padding."""

    def __init__(self, layer: L.Layer) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        if isinstance(layer, L.Activation):
            return activate(x, layer.activation)
        if isinstance(layer, L.ReLU):
            return torch.relu(x)
        if isinstance(layer, L.Softmax):
            return torch.softmax(x, dim=1)
        if isinstance(layer, L.Rescaling):
            return x * layer.scale + layer.offset
        if isinstance(layer, L.ZeroPadding):
            return F.pad(x, [v for pair in reversed(layer.padding) for v in pair])
        raise TypeError(f"no module for {layer.class_name}")


def layer_module(info: LayerInfo) -> nn.Module:
    """The child module of one described layer (before Keras' initialisation)."""
    layer = info.layer
    if isinstance(layer, L.Conv):
        cls: Any = {1: Conv1D, 2: Conv2D, 3: Conv3D}[layer.rank]
        pads = same_pads(info, layer.kernel_size, layer.strides, layer.dilation_rate)
        symmetric = all(a == b for a, b in zip(pads[::2], pads[1::2], strict=True))
        conv = cls(
            info.in_shape[-1],
            layer.filters,
            layer.kernel_size,
            stride=layer.strides,
            padding=tuple(pads[::2][::-1]) if layer.padding == "same" and symmetric else 0,
            dilation=layer.dilation_rate,
            bias=layer.use_bias,
        )
        conv.activation = layer.activation
        conv.pads = pads if layer.padding == "same" and not symmetric else None
        return conv
    if isinstance(layer, L.Dense):
        dense = Dense(info.in_shape[0], layer.units, bias=layer.use_bias)
        dense.activation = layer.activation
        return dense
    if isinstance(layer, L.Pool):
        pads = same_pads(info, layer.pool_size, layer.strides, (1,) * layer.rank)
        return Pool(layer, pads if layer.padding == "same" and any(pads) else None)
    if isinstance(layer, L.GlobalPool):
        return GlobalPool(layer.kind, layer.rank)
    if isinstance(layer, L.Flatten):
        return FlattenLast()
    if isinstance(layer, L.Dropout):
        return nn.Dropout(layer.rate)
    if isinstance(layer, L.BatchNormalization):
        return BatchNorm(layer, info.in_shape[-1])
    return Lambda(layer)


class Network(nn.Sequential):
    """A description's network: children in layer order; ``forward`` returns logits."""

    def __init__(self, description: ModelDescription) -> None:
        super().__init__()
        self.description = description
        for info in description.info:
            self.add_module(info.layer.name, layer_module(info))
        last = description.layers[-1] if description.layers else None
        # The final softmax is not applied in forward: the loss and predict_proba do it.
        self.n_forward = len(description.layers) - isinstance(last, L.Softmax)
        if isinstance(last, L.Dense | L.Activation) and last.activation == "softmax":
            module = self[-1]
            if isinstance(module, Dense):
                module.activation = "linear"
            else:
                self.n_forward -= 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, module in enumerate(self):
            if i >= self.n_forward:
                break
            x = module(x)
        return x


def keras_init_(model: nn.Module) -> None:
    """Keras defaults: Glorot-uniform kernels, zero biases (fans as Keras counts them)."""
    for m in model.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_module(description: ModelDescription) -> Network:
    """A freshly initialised network (draws from torch's global RNG, in layer order)."""
    model = Network(description)
    keras_init_(model)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def predict_proba(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities, as the chapter's softmax output: (N, C, *spatial) -> (N, classes)."""
    return torch.softmax(model(x), dim=1)

"""Noise layers, active in training only: ``SpatialDropout1D/2D/3D``, ``GaussianNoise``.

Both are the identity at inference (the NumPy engine, ``model.eval()``). In training their
randomness comes from torch's global RNG, which a run seeds, so a seeded run repeats
exactly; Keras' ``seed`` argument is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cnnlab.models.layers.base import (
    REQUIRED,
    Array,
    Shape,
    check_float,
    register,
    spatial_input,
)
from cnnlab.models.layers.core import Pointwise

if TYPE_CHECKING:
    from cnnlab.models.description import LayerInfo


class SpatialDropoutModule(nn.Module):
    """Training: each example's channel (a whole feature map) zeroed with probability
    ``rate``, the kept ones scaled by 1 / (1 - rate); Keras' mask of ``noise_shape``
    (N, 1, ..., 1, C), here (N, C, 1, ..., 1) for channels-first tensors."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return x
        shape = (*x.shape[:2], *(1,) * (x.ndim - 2))  # (N, C, 1, ..., 1)
        keep = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1 - self.rate)
        return x * keep / (1 - self.rate)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


@register
@dataclass(frozen=True, kw_only=True)
class SpatialDropout(Pointwise):
    """Keras' ``SpatialDropout1D/2D/3D``: dropout of whole feature maps (channels), per
    example, in training; the identity at inference."""

    rank: int
    rate: float

    KERAS_NAMES = {f"SpatialDropout{r}D": {"rank": r} for r in (1, 2, 3)}
    ARGS = {"rate": REQUIRED}
    POSITIONAL = ("rate",)
    KERAS_IGNORED = ("seed",)
    KERAS_FIXED = {"data_format": ("channels_last",)}

    @classmethod
    def build(
        cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str
    ) -> SpatialDropout:
        return cls(name=name, **fixed, rate=check_float(where, "rate", a["rate"], 0.0, 0.999))

    def output_shape(self, shapes: Sequence[Shape], where: str) -> Shape:
        spatial_input(where, shapes[0], self.rank)  # Keras' InputSpec(ndim=rank + 2)
        return shapes[0]

    def module(self, info: LayerInfo) -> nn.Module:
        return SpatialDropoutModule(self.rate)

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        return xs[0]  # inference: the identity


class GaussianNoiseModule(nn.Module):
    """Training: ``x + stddev * N(0, 1)``, a fresh draw per value."""

    def __init__(self, stddev: float) -> None:
        super().__init__()
        self.stddev = stddev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.stddev == 0:
            return x
        return x + self.stddev * torch.randn_like(x)

    def extra_repr(self) -> str:
        return f"stddev={self.stddev}"


@register
@dataclass(frozen=True, kw_only=True)
class GaussianNoise(Pointwise):
    """Keras' ``GaussianNoise``: adds N(0, stddev^2) noise in training; the identity at
    inference. Keras 3 takes a ``stddev`` in [0, 1] only."""

    stddev: float

    KERAS_NAMES = {"GaussianNoise": {}}
    ARGS = {"stddev": REQUIRED}
    POSITIONAL = ("stddev",)
    KERAS_IGNORED = ("seed",)

    @classmethod
    def build(
        cls, name: str, fixed: dict[str, Any], a: dict[str, Any], where: str
    ) -> GaussianNoise:
        return cls(name=name, stddev=check_float(where, "stddev", a["stddev"], 0.0, 1.0))

    def module(self, info: LayerInfo) -> nn.Module:
        return GaussianNoiseModule(self.stddev)

    def forward_numpy(self, xs: Sequence[Array], w: Mapping[str, Array]) -> Array:
        return xs[0]  # inference: the identity

"""Small tensor helpers the fast engine's steps share: layouts, image scaling, dropout masks."""

from __future__ import annotations

from collections.abc import Callable

import torch

CL = torch.channels_last
DROPOUT_KEEP = 0.75  # the chapter's Dropout(0.25)
GradHook = Callable[[list[torch.Tensor]], None]


def as_float_images(x: torch.Tensor) -> torch.Tensor:
    """Images as float32 in [0, 1]: uint8 ones are scaled here, on the device, batch by batch.

    ``uint8 / 255`` in float32 is the value :func:`cnnlab.data.scale` computes, bit for bit.
    """
    return x.to(torch.float32).div_(255) if x.dtype == torch.uint8 else x


def dropout_mask(
    shape: tuple[int, ...], like: torch.Tensor, rate: float = 1 - DROPOUT_KEEP
) -> torch.Tensor:
    """The scaled mask ``nn.Dropout(rate)`` draws for an input of ``shape`` (0 or 1/keep).

    ``native_dropout`` is what ``nn.Dropout`` runs on a GPU, and on a CPU it draws exactly
    as ``nn.Dropout`` does there (``bernoulli_(0.75)`` on a tensor of that shape): a
    seeded fast run follows the plain loop's random path on either device.
    """
    ones = torch.ones(shape, dtype=like.dtype, device=like.device)
    return torch.native_dropout(ones, rate, True)[0]

"""Small tensor helpers the fast engine's steps share: layouts, input scaling, dropout masks."""

from __future__ import annotations

from collections.abc import Callable

import torch

from cnnlab.data.scaling import InputScale

CL = torch.channels_last
DROPOUT_KEEP = 0.75  # the chapter's Dropout(0.25)
GradHook = Callable[[list[torch.Tensor]], None]


def as_inputs(x: torch.Tensor, scale: InputScale | None) -> torch.Tensor:
    """Stored values as float32 network inputs, on the device, batch by batch.

    uint8 pixels are divided by the run's ``scale.divisor`` (:func:`cnnlab.data.scaling.
    input_scale` decides it: 255 as the chapter does, 1 for a network that begins with a
    Rescaling layer); the division is :func:`cnnlab.data.scaling.to_inputs`' bit for bit.
    Float values pass unchanged. A uint8 batch without a scale is an error: nothing here
    guesses how pixels become inputs.
    """
    if x.dtype != torch.uint8:
        return x
    if scale is None:
        raise TypeError("uint8 inputs need the run's input scale (cnnlab.data.scaling)")
    out = x.to(torch.float32)
    return out if scale.divisor == 1.0 else out.div_(scale.divisor)


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

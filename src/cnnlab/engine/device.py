"""Devices and tensor placement: where a run computes, and its data moved there once."""

from __future__ import annotations

import numpy as np
import torch

from cnnlab.errors import CnnlabError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    """``"auto"``, ``"cpu"`` or ``"cuda"`` as a torch device; CnnlabError if unavailable."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CnnlabError("--device cuda was asked for, but no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise CnnlabError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return torch.device(device)


def to_tensors(
    x: np.ndarray, y: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, *spatial, C) channels-last inputs + labels -> (N, C, *spatial) + int64 labels.

    The inputs keep their dtype: float32, or uint8 images (0-255), which the engines
    scale batch by batch (a quarter of the memory). They also keep their layout: the
    result is a channels-first view of the stored channels-last memory (on the CPU the
    array's own, no copy), which PyTorch's ``channels_last`` format and cnnlab's kernels
    read as it is.
    """
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    return channels_first(xt), torch.from_numpy(y).to(device)


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """(N, *spatial, C) -> (N, C, *spatial) as a view: the memory stays channels-last."""
    return x.movedim(-1, 1) if x.ndim > 2 else x

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
    scale batch by batch (a quarter of the memory).
    """
    c = x.shape[-1]
    # With one channel, channels-last and channels-first share the same memory layout.
    xt = torch.from_numpy(np.ascontiguousarray(x))
    xt = xt.movedim(-1, 1) if c != 1 else xt.reshape(x.shape[0], 1, *x.shape[1:-1])
    return xt.contiguous().to(device), torch.from_numpy(y).to(device)

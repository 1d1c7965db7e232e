"""Keras' BatchNormalization as PyTorch's fused kernel: the same function, one pass.

:class:`cnnlab.models.torch_module.BatchNorm` writes Keras' formulas out in a dozen tensor
operations (mean, biased variance, subtract, rsqrt, two products, a sum), each with its own
backward node: on fcn1d's maps (16 x 256 x 29 at batch 16) they took about a quarter of a
training step. ``torch.batch_norm`` computes the same normalisation, forward and backward,
in one kernel each. What differs is the moving statistics: PyTorch's update uses the
*unbiased* batch variance, Keras' the biased one. So the kernel is handed scratch
statistics with momentum 1 (they receive the batch mean and unbiased variance exactly:
``1 * batch + 0 * scratch``), and Keras' update is applied to the module's own buffers:

    moving_mean = moving_mean * momentum + mean * (1 - momentum)
    moving_var  = moving_var * momentum + var_unbiased * (n - 1) / n * (1 - momentum)

The values agree with the module's to float32 rounding (``tests/engine/test_fast1d.py``).
"""

from __future__ import annotations

import torch

from cnnlab.models.torch_module import BatchNorm


def batch_norm(module: BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` through PyTorch's fused batch-norm kernel; (N, C, ...) in any layout."""
    if not module.training:
        return torch.batch_norm(
            x, module.weight, module.bias, module.running_mean, module.running_var,
            False, 0.0, module.eps, False,
        )  # fmt: skip
    n = x.numel() // x.shape[1]
    if n < 2:  # PyTorch refuses one value per channel (Keras gives a variance of 0)
        return module(x)
    mean = torch.zeros_like(module.running_mean)
    var = torch.zeros_like(module.running_var)
    y = torch.batch_norm(x, module.weight, module.bias, mean, var, True, 1.0, module.eps, False)
    with torch.no_grad():
        m = module.momentum
        module.running_mean.mul_(m).add_(mean, alpha=1 - m)
        module.running_var.mul_(m).add_(var * ((n - 1) / n), alpha=1 - m)
    return y

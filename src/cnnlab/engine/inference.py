"""Inference in batches: class probabilities, and loss/accuracy on labelled data."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.engine.fastpath import fast_logits
from cnnlab.engine.tensors import as_float_images
from cnnlab.models import Network

BATCH = 256


@torch.inference_mode()
def predict_proba(
    model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = BATCH
) -> np.ndarray:
    """Softmax probabilities (N, classes) of ``model`` on channels-first inputs (N, C, ...).

    The one batched prediction every consumer (CLI, web page, analysis) calls; the model
    is put in eval mode and left in it.
    """
    model.eval()
    xt = torch.as_tensor(x)
    parts = [
        torch.softmax(model(as_float_images(xt[i : i + batch_size])), dim=1)
        for i in range(0, len(xt), batch_size)
    ]
    if not parts:
        return np.zeros((0, 0), np.float32)
    return torch.cat(parts).float().cpu().numpy()


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 1000,
    *,
    fast: bool = True,
) -> tuple[float, float, torch.Tensor]:
    """Mean cross-entropy, accuracy and predicted classes of ``model`` on (x, y).

    ``fast`` computes the logits with :func:`cnnlab.engine.fastpath.fast_logits` (the same
    values to float rounding); False calls ``model`` itself.
    """
    was_training = model.training
    model.eval()
    forward: Callable[[torch.Tensor], torch.Tensor] = model
    if fast and isinstance(model, Network):
        forward = partial(fast_logits, model)
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    preds: list[torch.Tensor] = []
    for i in range(0, len(x), batch_size):
        logits = forward(as_float_images(x[i : i + batch_size]))
        loss_sum += F.cross_entropy(logits, y[i : i + batch_size], reduction="sum").double()
        preds.append(logits.argmax(1))
    model.train(was_training)
    pred = torch.cat(preds)
    acc = (pred == y).double().mean().item()
    return loss_sum.item() / len(x), acc, pred.cpu()

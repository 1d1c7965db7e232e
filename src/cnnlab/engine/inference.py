"""Inference in batches: class probabilities, and loss/accuracy on labelled data."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data.scaling import InputScale
from cnnlab.engine.choice import EngineChoice, for_model
from cnnlab.engine.fastpath import fast_logits
from cnnlab.engine.tensors import as_inputs
from cnnlab.models import Network

BATCH = 256


@torch.inference_mode()
def predict_proba(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    batch_size: int = BATCH,
    scale: InputScale | None = None,
) -> np.ndarray:
    """Softmax probabilities (N, classes) of ``model`` on channels-first inputs (N, C, ...).

    The one batched prediction every consumer (CLI, web page, analysis) calls; the model
    is put in eval mode and left in it. ``scale``: how uint8 inputs become network inputs.
    """
    model.eval()
    xt = torch.as_tensor(x)
    parts = [
        torch.softmax(model(as_inputs(xt[i : i + batch_size], scale)), dim=1)
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
    choice: EngineChoice | None = None,
    scale: InputScale | None = None,
) -> tuple[float, float, torch.Tensor]:
    """Mean cross-entropy, accuracy and predicted classes of ``model`` on (x, y).

    ``choice``: the run's engine (:mod:`cnnlab.engine.choice`; None: resolved for ``model``,
    the fast engine with the kernels where they run). The fast engine computes the logits
    with :func:`cnnlab.engine.fastpath.fast_logits` (the same values to float rounding), on
    the kernels the choice names and no others; the plain one calls ``model`` itself.
    ``scale``: how uint8 inputs become network inputs (:func:`cnnlab.data.scaling.input_scale`).
    """
    chunks = ((x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size))
    return evaluate_chunks(model, chunks, choice=choice, scale=scale)


def _module_logits(model: nn.Module, scale: InputScale | None, xb: torch.Tensor) -> torch.Tensor:
    """The network's own forward pass on stored values (the plain engine)."""
    out: torch.Tensor = model(as_inputs(xb, scale))
    return out


@torch.inference_mode()
def evaluate_chunks(
    model: nn.Module,
    chunks: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    choice: EngineChoice | None = None,
    scale: InputScale | None = None,
) -> tuple[float, float, torch.Tensor]:
    """:func:`evaluate` over (inputs, labels) chunks, as a split read from the disk gives
    them (:meth:`cnnlab.engine.feed.Feed.chunks`)."""
    was_training = model.training
    model.eval()
    forward: Callable[[torch.Tensor], torch.Tensor] = partial(_module_logits, model, scale)
    if isinstance(model, Network):
        choice = choice or for_model(model)
        if choice.fast:  # uint8 values converted per cache-sized piece, not a chunk at once
            forward = partial(fast_logits, model, scale=scale, choice=choice)
    loss_sum: torch.Tensor | None = None
    preds: list[torch.Tensor] = []
    hits, count = 0, 0
    for xb, yb in chunks:
        logits = forward(xb)
        batch = F.cross_entropy(logits, yb, reduction="sum").double()
        loss_sum = batch if loss_sum is None else loss_sum + batch
        pred = logits.argmax(1)
        hits += int((pred == yb).sum())
        count += len(yb)
        preds.append(pred.cpu())
    model.train(was_training)
    if loss_sum is None or count == 0:
        return float("nan"), float("nan"), torch.zeros(0, dtype=torch.int64)
    return loss_sum.item() / count, hits / count, torch.cat(preds)

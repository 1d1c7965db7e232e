"""Evaluation: data onto a device, loss/accuracy of a model, and a finished run's test score."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import runs
from cnnlab.data import MNIST, scale
from cnnlab.errors import CnnlabError
from cnnlab.fastpath import as_float_images, fast_logits


def resolve_device(device: str) -> torch.device:
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
    """(N, H, W, 1) images + labels -> (N, 1, H, W) tensor + int64 labels on ``device``.

    The images keep their dtype: float32 in [0, 1], or uint8 (0-255), which the fast
    engine and :func:`evaluate` scale batch by batch (a quarter of the memory).
    """
    n, h, w, c = x.shape
    # With one channel, channels-last and channels-first share the same memory layout.
    xt = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).reshape(n, c, h, w)
    return xt.contiguous().to(device), torch.from_numpy(y).to(device)


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

    ``fast`` computes the logits with :func:`cnnlab.fastpath.fast_logits` (the same
    values to float rounding); False calls ``model`` itself.
    """
    was_training = model.training
    model.eval()
    forward: Callable[[torch.Tensor], torch.Tensor] = model
    if fast and isinstance(model, nn.Sequential):
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


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int = 10) -> np.ndarray:
    """(k, k) counts: rows are true classes, columns predicted ones."""
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def evaluate_run(run_dir: Path, mnist: MNIST, device: str = "cpu") -> dict[str, Any]:
    """Test loss/accuracy of ``run_dir/best.pt``; updates metrics.json, writes confusion.png."""
    run_dir = Path(run_dir)
    from cnnlab.plots import plot_confusion  # matplotlib only where a figure is drawn

    dev = resolve_device(device)
    model, ckpt = runs.load_model(run_dir, "best")
    model.to(dev)
    x, y = to_tensors(scale(mnist.x_test), mnist.y_test.astype(np.int64), dev)
    with torch.no_grad():
        loss, acc, pred = evaluate(model, x, y)
    cm = confusion_matrix(mnist.y_test.astype(np.int64), pred.numpy())
    metrics_path = run_dir / "metrics.json"
    metrics: dict[str, Any] = runs.read_json(metrics_path) if metrics_path.exists() else {}
    metrics.update({"test_accuracy": acc, "test_loss": loss, "best_epoch": ckpt["epoch"]})
    metrics.setdefault("case", ckpt["case"])
    runs.write_json(metrics_path, metrics)
    runs.write_json(run_dir / "confusion.json", cm.tolist())
    plot_confusion(cm, run_dir / "confusion.png", title=f"{ckpt['case']}: test accuracy {acc:.4f}")
    return metrics

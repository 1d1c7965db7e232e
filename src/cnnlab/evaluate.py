"""Re-evaluate a finished run's best checkpoint on the MNIST test set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab import runs
from cnnlab.data import MNIST, scale
from cnnlab.plots import plot_confusion
from cnnlab.train import evaluate, resolve_device, to_tensors


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int = 10) -> np.ndarray:
    """(k, k) counts: rows are true classes, columns predicted ones."""
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def evaluate_run(run_dir: Path, mnist: MNIST, device: str = "cpu") -> dict[str, Any]:
    """Test loss/accuracy of ``run_dir/best.pt``; updates metrics.json, writes confusion.png."""
    run_dir = Path(run_dir)
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

"""A finished run's test score: loss, accuracy and confusion matrix of its best checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab import fileio
from cnnlab.analysis.metrics import confusion_matrix
from cnnlab.data import MNIST, scale
from cnnlab.engine.device import resolve_device, to_tensors
from cnnlab.engine.inference import evaluate
from cnnlab.train import checkpoint


def evaluate_run(run_dir: Path, mnist: MNIST, device: str = "cpu") -> dict[str, Any]:
    """Test loss/accuracy of ``run_dir/best.pt``; updates metrics.json, writes confusion.png."""
    run_dir = Path(run_dir)
    from cnnlab.plots import plot_confusion  # matplotlib only where a figure is drawn

    dev = resolve_device(device)
    model, ckpt = checkpoint.load_model(run_dir, "best")
    model.to(dev)
    x, y = to_tensors(scale(mnist.x_test), mnist.y_test.astype(np.int64), dev)
    with torch.no_grad():
        loss, acc, pred = evaluate(model, x, y)
    cm = confusion_matrix(mnist.y_test.astype(np.int64), pred.numpy())
    metrics_path = run_dir / "metrics.json"
    metrics: dict[str, Any] = fileio.read_json(metrics_path) if metrics_path.exists() else {}
    metrics.update({"test_accuracy": acc, "test_loss": loss, "best_epoch": ckpt["epoch"]})
    metrics.setdefault("model", checkpoint.run_name(ckpt))
    fileio.write_json(metrics_path, metrics)
    fileio.write_json(run_dir / "confusion.json", cm.tolist())
    plot_confusion(
        cm, run_dir / "confusion.png", title=f"{checkpoint.run_name(ckpt)}: test accuracy {acc:.4f}"
    )
    return metrics

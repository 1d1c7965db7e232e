"""A finished run's test score: loss, accuracy and confusion matrix of its best checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab import fileio
from cnnlab.analysis.metrics import confusion_matrix
from cnnlab.data import MNIST, scale
from cnnlab.data.datasets import Dataset, scored_inputs
from cnnlab.engine.device import resolve_device, to_tensors
from cnnlab.engine.inference import evaluate
from cnnlab.errors import CnnlabError
from cnnlab.train import checkpoint
from cnnlab.train.records import read_metrics


def evaluate_run(run_dir: Path, data: MNIST | Dataset, device: str = "cpu") -> dict[str, Any]:
    """Test loss/accuracy of ``run_dir/best.pt``; updates metrics.json, writes confusion.png.

    ``data`` is the run's dataset (or MNIST itself): only its test set is used.
    """
    run_dir = Path(run_dir)
    from cnnlab.plots import plot_confusion  # matplotlib only where a figure is drawn

    dev = resolve_device(device)
    model, ckpt = checkpoint.load_model(run_dir, "best")
    if isinstance(data, Dataset):
        x_np, y_np = scored_inputs(data)
    else:
        x_np, y_np = scale(data.x_test), data.y_test.astype(np.int64)
    desc = model.description
    if tuple(x_np.shape[1:]) != desc.input_shape:
        shape = "x".join(map(str, desc.input_shape))
        raise CnnlabError(f"{run_dir}: the network takes {shape} inputs, not this dataset's")
    model.to(dev)
    x, y = to_tensors(x_np, y_np, dev)
    with torch.no_grad():
        loss, acc, pred = evaluate(model, x, y)
    cm = confusion_matrix(y_np, pred.numpy(), desc.classes)
    metrics_path = run_dir / "metrics.json"
    metrics: dict[str, Any] = read_metrics(run_dir) if metrics_path.exists() else {}
    metrics.update({"test_accuracy": acc, "test_loss": loss, "best_epoch": ckpt["epoch"]})
    metrics.setdefault("model", checkpoint.run_name(ckpt))
    fileio.write_json(metrics_path, metrics)
    fileio.write_json(run_dir / "confusion.json", cm.tolist())
    title = f"{checkpoint.run_name(ckpt)}: test accuracy {acc:.4f}"
    plot_confusion(cm, run_dir / "confusion.png", title=title)
    return metrics

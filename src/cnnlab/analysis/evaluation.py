"""A finished run's test score: loss, accuracy and confusion matrix of its best checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnlab import fileio
from cnnlab.analysis.metrics import confusion_matrix
from cnnlab.data import MNIST, Dataset, Splits
from cnnlab.engine.device import resolve_device
from cnnlab.engine.feed import Feed
from cnnlab.engine.inference import evaluate_chunks
from cnnlab.errors import CnnlabError
from cnnlab.train import checkpoint
from cnnlab.train.records import read_metrics
from cnnlab.train.schemas import read_run_data


def _as_dataset(data: MNIST | Dataset) -> Dataset:
    if isinstance(data, Dataset):
        return data
    x = data.x_test[..., None]  # MNIST itself: its test set, (N, 28, 28, 1) uint8
    empty = x[:0]
    splits = Splits(empty, data.y_test[:0], empty, data.y_test[:0], x, data.y_test)
    return Dataset("mnist", splits, [str(d) for d in range(10)], "MNIST digits", "images")


def evaluate_run(run_dir: Path, data: MNIST | Dataset, device: str = "cpu") -> dict[str, Any]:
    """Test loss/accuracy of ``run_dir/best.pt``; updates metrics.json, writes confusion.png.

    ``data`` is the run's dataset (or MNIST itself): only its test set is used, its stored
    values scaled as the run recorded (:func:`cnnlab.train.schemas.read_run_data`).
    """
    run_dir = Path(run_dir)
    from cnnlab.plots import plot_confusion  # matplotlib only where a figure is drawn

    dev = resolve_device(device)
    model, ckpt = checkpoint.load_model(run_dir, "best")
    dataset = _as_dataset(data)
    desc = model.description
    if dataset.input_shape != desc.input_shape:
        shape = "x".join(map(str, desc.input_shape))
        got = "x".join(map(str, dataset.input_shape))
        raise CnnlabError(
            f"{run_dir}: the network takes {shape} inputs, the data ({dataset.spec}) has {got}"
        )
    if len(dataset.classes) > desc.classes:
        raise CnnlabError(
            f"{run_dir}: the network has {desc.classes} outputs, the data ({dataset.spec}) "
            f"{len(dataset.classes)} classes"
        )
    if not len(dataset.splits.y_test):
        raise CnnlabError(f"{run_dir}: the data ({dataset.spec}) has no test set to score")
    scale = read_run_data(run_dir).scale
    model.to(dev)
    test = Feed(dataset.splits.x_test, dataset.splits.y_test, dev)
    loss, acc, pred = evaluate_chunks(model, test.chunks(1000), scale=scale)
    y_np = dataset.splits.y_test
    cm = confusion_matrix(y_np, pred.numpy(), desc.classes)
    metrics_path = run_dir / "metrics.json"
    metrics: dict[str, Any] = read_metrics(run_dir) if metrics_path.exists() else {}
    metrics.update({"test_accuracy": acc, "test_loss": loss, "best_epoch": ckpt["epoch"]})
    metrics.setdefault("model", checkpoint.run_name(ckpt))
    fileio.write_json(metrics_path, metrics)
    fileio.write_json(run_dir / "confusion.json", cm.tolist())
    title = f"{checkpoint.run_name(ckpt)}: test accuracy {acc:.4f}"
    names = dataset.classes + [str(i) for i in range(len(dataset.classes), desc.classes)]
    plot_confusion(cm, run_dir / "confusion.png", title=title, classes=names)
    return metrics

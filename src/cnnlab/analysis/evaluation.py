"""A finished run's test score: loss, accuracy and confusion matrix of its best checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnlab import fileio
from cnnlab.analysis.metrics import confusion_matrix
from cnnlab.analysis.run_data import as_dataset, check_fits, scale_for
from cnnlab.data import MNIST, Dataset
from cnnlab.engine.choice import for_model
from cnnlab.engine.device import resolve_device
from cnnlab.engine.feed import Feed
from cnnlab.engine.inference import evaluate_chunks
from cnnlab.train import checkpoint
from cnnlab.train.records import read_metrics
from cnnlab.train.schemas import read_run

CHUNK = 1000  # test examples evaluated at once (cnnlab.budget checks one chunk)


def evaluate_run(
    run_dir: Path, data: MNIST | Dataset, device: str = "cpu", chunk: int = CHUNK
) -> dict[str, Any]:
    """Test loss/accuracy of ``run_dir/best.pt``; updates metrics.json, writes confusion.png.

    ``data`` is the run's dataset (or MNIST itself): only its test set is used, ``chunk``
    examples at a time (fewer where the memory budget asks), its stored
    values scaled as the run recorded (:func:`cnnlab.analysis.run_data.scale_for`).
    """
    run_dir = Path(run_dir)
    from cnnlab.plots import plot_confusion  # matplotlib only where a figure is drawn

    dev = resolve_device(device)
    model, ckpt = checkpoint.load_model(run_dir, "best")
    dataset = as_dataset(data)
    desc = model.description
    check_fits(run_dir, desc, dataset)
    scale = scale_for(run_dir, desc, dataset)
    model.to(dev)
    # the engine the run was trained with (native=False: no C++ kernel here either)
    config, _ = read_run(run_dir)
    choice = (
        for_model(model, engine=config.engine, native=config.native) if config else for_model(model)
    )
    test = Feed(dataset.splits.x_test, dataset.splits.y_test, dev)
    loss, acc, pred = evaluate_chunks(model, test.chunks(chunk), choice=choice, scale=scale)
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

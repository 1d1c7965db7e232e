"""Figures drawn from files a run wrote (history.csv, metrics); never from inside the loop."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or wanted
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from cnnlab import fileio

# A history: one row per epoch with epoch, loss, accuracy, val_loss, val_accuracy (the
# columns of a run's history.csv, read by cnnlab.train.runs.read_history).
History = Sequence[Mapping[str, float]]


def save_figure(fig: Figure, path: Path, dpi: int = 150) -> None:
    """Render ``fig`` to PNG and write it atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    fileio.write_bytes(Path(path), buf.getvalue())


def plot_curves(rows: History, out_png: Path, title: str = "") -> None:
    """The chapter's two panels: loss and accuracy, training vs validation, per epoch."""
    epochs = [r["epoch"] for r in rows]
    fig = plt.figure(figsize=(13, 4))
    for panel, key in enumerate(("loss", "accuracy")):
        ax = fig.add_subplot(1, 2, panel + 1)
        ax.plot(epochs, [r[key] for r in rows], "b", label=f"training {key}")
        ax.plot(epochs, [r[f"val_{key}"] for r in rows], "r", label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
    if title:
        fig.suptitle(title)
    save_figure(fig, out_png)


def plot_confusion(
    cm: np.ndarray, out_png: Path, title: str = "", classes: list[str] | None = None
) -> None:
    """A confusion matrix (rows: true class, columns: predicted), counts in the cells; the
    axes name the classes (digits by default)."""
    k = cm.shape[0]
    side = min(6.5 + max(0, k - 10) * 0.35, 24.0)
    fig, ax = plt.subplots(figsize=(side, side * 0.85))
    # Log colour scale so the few errors stay visible next to the large diagonal.
    im = ax.imshow(np.log1p(cm), cmap="Blues")
    if k <= 40:  # beyond that, numbers in the cells are unreadable
        for i in range(k):
            for j in range(k):
                colour = "white" if cm[i, j] > cm.max() / 3 else "black"
                ax.text(
                    j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7, color=colour
                )
    names = classes if classes is not None and len(classes) == k else [str(i) for i in range(k)]
    digits = names == [str(i) for i in range(k)]
    ax.set_xticks(
        range(k),
        [n[:14] for n in names],
        rotation=0 if digits else 60,
        fontsize=7 if k > 12 else None,
    )
    ax.set_yticks(range(k), [n[:14] for n in names], fontsize=7 if k > 12 else None)
    ax.set_xlabel("predicted " + ("digit" if digits and k == 10 else "class"))
    ax.set_ylabel("true " + ("digit" if digits and k == 10 else "class"))
    ax.set_title(title or "confusion matrix (test set)")
    fig.colorbar(im, ax=ax, label="log(1 + count)")
    save_figure(fig, out_png)


def plot_compare(histories: Mapping[str, History], out_png: Path) -> None:
    """Validation loss and accuracy per epoch of several runs on shared axes."""
    fig = plt.figure(figsize=(13, 4))
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    for name, rows in histories.items():
        epochs = [r["epoch"] for r in rows]
        for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
            (line,) = ax.plot(epochs, [r[f"val_{key}"] for r in rows], label=f"{name} validation")
            ax.plot(
                epochs,
                [r[key] for r in rows],
                "--",
                color=line.get_color(),
                alpha=0.6,
                label=f"{name} training",
            )
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend(fontsize=7)
    fig.suptitle("learning curves")
    save_figure(fig, out_png)

"""Compare finished runs: a Markdown table and a figure of their learning curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnlab import fileio
from cnnlab.errors import CnnlabError
from cnnlab.plots import plot_compare
from cnnlab.train import records, runs

COLUMNS = (
    "run",
    "model",
    "params",
    "epochs",
    "best epoch",
    "train s",
    "s/epoch",
    "test accuracy",
    "test loss",
)


def run_summary(run_dir: Path) -> dict[str, Any]:
    metrics_path = Path(run_dir) / "metrics.json"
    if not metrics_path.exists():
        raise CnnlabError(f"{run_dir} has no metrics.json: is it a finished cnnlab run?")
    m = records.read_metrics(run_dir)
    if "test_accuracy" not in m or "test_loss" not in m:
        raise CnnlabError(f"{run_dir} has no test metrics yet: run cnnlab evaluate {run_dir}")
    # Imported runs (cnnlab import-keras) have no training record: those cells show "-".
    epochs, seconds = m.get("epochs_run"), m.get("train_seconds")
    return {
        "run": Path(run_dir).name,
        "model": m.get("model", m.get("case", "?")),  # runs before the model key had case
        "params": m.get("params", "?"),
        "epochs": epochs if epochs is not None else "-",
        "best epoch": m.get("best_epoch") or "-",
        "train s": seconds if seconds is not None else "-",
        "s/epoch": seconds / max(epochs, 1) if seconds is not None and epochs else "-",
        "test accuracy": m["test_accuracy"],
        "test loss": m["test_loss"],
    }


def markdown_table(rows: list[dict[str, Any]]) -> str:
    def cell(key: str, v: Any) -> str:
        if key == "params" and isinstance(v, int):
            return f"{v:,}"
        if key == "test accuracy":
            return f"{100 * v:.2f}%"
        if key == "test loss":
            return f"{v:.4f}"
        if isinstance(v, float):
            return f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(k, r[k]) for k in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _label(row: dict[str, Any]) -> str:
    """A curve's name: the model, and the run folder where it is not named after it."""
    model, run = str(row["model"]), str(row["run"])
    return model if run == model else f"{model} ({run})"


def compare(run_dirs: list[Path], out_dir: Path) -> str:
    """Write ``compare.md`` and ``compare.png`` (curves of the runs that have a history)
    into ``out_dir``; returns the table."""
    rows = [run_summary(d) for d in run_dirs]
    table = markdown_table(rows)
    fileio.write_text(out_dir / "compare.md", table)
    histories = {
        _label(r): runs.read_history(Path(d) / "history.csv")
        for r, d in zip(rows, run_dirs, strict=True)
        if (Path(d) / "history.csv").exists()
    }
    if histories:
        plot_compare(histories, out_dir / "compare.png")
    return table

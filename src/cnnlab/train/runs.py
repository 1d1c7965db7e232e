"""Run folders: creating them, the history file, random-number state for resuming.

A run folder holds ``config.json`` (the resolved config), ``model.json`` (the network's
description), ``history.csv`` (one row per epoch), ``best.pt`` and ``last.pt``
(:mod:`cnnlab.train.checkpoint`), ``metrics.json`` and the plots. Every file is written
atomically (:mod:`cnnlab.fileio`): a crash never leaves a half-written file where a good
one was.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from cnnlab import fileio
from cnnlab.errors import CnnlabError

HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


def save_torch(path: Path, obj: Any) -> None:
    fileio.atomic_write(path, lambda f: torch.save(obj, f))


def write_history(path: Path, rows: Iterable[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in HISTORY_FIELDS})
    fileio.write_text(path, buf.getvalue())


def read_history(path: Path) -> list[dict[str, float]]:
    try:
        with Path(path).open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise CnnlabError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return [{k: float(r[k]) for k in HISTORY_FIELDS} for r in rows]
    except (KeyError, TypeError, ValueError) as exc:
        raise CnnlabError(f"{path} is not a cnnlab history file") from exc


def new_run_dir(root: Path, stem: str) -> Path:
    """A fresh, empty folder ``root/stem-YYYYmmdd-HHMMSS[-k]``; never an existing one."""
    base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    for k in range(1000):
        path = Path(root) / (base if k == 0 else f"{base}-{k}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise CnnlabError(f"cannot create run folder {path}: {exc.strerror or exc}") from exc
    raise CnnlabError(f"cannot find a free run folder name under {root}")


def prepare_out_dir(path: Path) -> Path:
    """Create ``path`` for a new run; refuse one that already holds a run's files."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CnnlabError(f"output path {path} exists and is not a folder")
    if (path / "config.json").exists() or (path / "last.pt").exists():
        raise CnnlabError(
            f"{path} already holds a run; choose another --out, or continue it with --resume {path}"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnlabError(f"cannot create output folder {path}: {exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK):
        raise CnnlabError(f"output folder {path} is not writable")
    return path


def rng_state(gen: torch.Generator) -> dict[str, Any]:
    """Every random stream a resumed run needs: shuffling, dropout (CPU and CUDA)."""
    state: dict[str, Any] = {"shuffle": gen.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(gen: torch.Generator, state: dict[str, Any]) -> None:
    gen.set_state(state["shuffle"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

"""Run folders: atomic file writes, history/metrics/config files and checkpoints.

A run folder holds ``config.json`` (the resolved config), ``history.csv`` (one row per
epoch), ``best.pt`` and ``last.pt`` checkpoints, ``metrics.json`` and the plots. Every
file is written to a temporary file in the same folder and renamed into place, so a
crash never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models import create_model

CHECKPOINT_FORMAT = "cnnlab-checkpoint-1"
# mkstemp makes owner-only files; run files get the usual mode, as open() would give them.
_UMASK = os.umask(0)
os.umask(_UMASK)
HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise CnnlabError(f"cannot write in {path.parent}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise CnnlabError(f"{path} not found") from exc
    except (OSError, ValueError) as exc:
        raise CnnlabError(f"cannot read {path}: {exc}") from exc


def save_torch(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def write_history(path: Path, rows: Iterable[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in HISTORY_FIELDS})
    write_text(path, buf.getvalue())


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


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a cnnlab checkpoint (tensors and plain data only: no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CnnlabError(f"{path} is not a readable cnnlab checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CnnlabError(f"{path} is not a cnnlab checkpoint")
    return ckpt


def load_model(run_dir: Path, which: str = "best") -> tuple[nn.Module, dict[str, Any]]:
    """The model of a run folder in eval mode, with its checkpoint dict."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CnnlabError(f"run folder {run_dir} not found")
    ckpt = load_checkpoint(run_dir / f"{which}.pt")
    model = create_model(ckpt["case"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CnnlabError(f"{run_dir / f'{which}.pt'} does not fit model {ckpt['case']}") from exc
    model.eval()
    return model, ckpt


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

"""Atomic file writes and JSON reads: importable without torch.

Every file is written to a temporary file in the same folder and renamed into place, so a
crash never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import IO, Any

from cnnlab.errors import CnnlabError


@cache
def _umask() -> int:
    """The process umask, read once on first use (reading it means setting it briefly)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
        # mkstemp makes owner-only files; give the usual mode, as open() would.
        os.chmod(tmp, 0o666 & ~_umask())
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
    """Parse a JSON file; a missing or malformed file is a CnnlabError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise CnnlabError(f"{path} not found") from exc
    except RecursionError as exc:
        raise CnnlabError(f"cannot read {path}: JSON nested too deeply") from exc
    except (OSError, ValueError) as exc:
        raise CnnlabError(f"cannot read {path}: {exc}") from exc

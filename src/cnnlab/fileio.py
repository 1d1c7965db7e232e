"""Atomic file writes and JSON reads: importable without torch.

Every file is written to a temporary file in the same folder and renamed into place, so a
crash never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import IO, Any

from cnnlab.errors import CnnlabError

TMP_SUFFIX = ".tmp"
# mkstemp's names: the prefix, eight characters of [a-z0-9_], the suffix
_TMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


@cache
def _umask() -> int:
    """The process umask, read once on first use (reading it means setting it briefly)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it over ``path``.

    A failure to write (a full disk, a folder where the file should go) is a CnnlabError
    naming ``path``; the temporary file is removed and a good ``path`` stays as it was.
    """
    path = Path(path)
    if path.is_dir():
        raise CnnlabError(f"cannot write {path}: it is a folder; give a file name")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
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
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CnnlabError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def stale_temporaries(folder: Path) -> list[Path]:
    """Temporary files of :func:`atomic_write` in ``folder`` (``.NAME.XXXXXXXX.tmp``),
    which only a killed process leaves behind."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    return sorted(p for p in entries if _TMP_NAME.fullmatch(p.name) and p.is_file())


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

"""Atomic file writes and bounded reads: importable without torch.

Every file is written to a temporary file in the same folder and renamed into place, so a
crash never leaves a half-written file where a good one was. Every file cnnlab reads from a
user or a run folder goes through :func:`open_regular` / :func:`read_bounded`: regular files
only (no FIFO, device or socket, a symlink's target checked) and a size limit per kind of
file, checked before reading and while reading.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import IO, Any, BinaryIO

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


@dataclass(frozen=True)
class FileKind:
    """A kind of file cnnlab reads, with the most bytes it accepts of one."""

    noun: str  # for messages: "a JSON record is at most 16 MiB"
    limit: int


MiB = 1 << 20
# The limits: far above any file cnnlab writes, far below what would exhaust memory.
JSON_RECORD = FileKind("a JSON record", 16 * MiB)  # config/model/metrics/shift.json
MODEL_DESCRIPTION = FileKind("a model description", 1 * MiB)  # --model FILE.yaml/.json
NPY_ARRAY = FileKind("a .npy array", 512 * MiB)
NPZ_ARCHIVE = FileKind("an .npz archive", 2048 * MiB)
TS_FILE = FileKind("a .ts file", 1024 * MiB)
IMAGE = FileKind("an image", 64 * MiB)
CHECKPOINT = FileKind("a checkpoint", 1024 * MiB)
KERAS_FILE = FileKind("a .keras file", 64 * MiB)
HISTORY = FileKind("a history file", 64 * MiB)
FIGURE = FileKind("a figure", 64 * MiB)
# For readers that bound what they read themselves (IDX, images): the type check only.
ANY_SIZE = FileKind("a file", 1 << 62)
_CHUNK = 1 << 20


def human_size(n: int) -> str:
    """``n`` bytes as '3 GiB', '2.5 GiB', '16 MiB', '512 bytes': the figure a message gives."""
    if n < 1024:
        return f"{n} bytes"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"  # unreachable: n >= 1024 matched KiB


def describe_mode(mode: int) -> str:
    """What a file of ``st_mode`` is, for messages: 'a directory', 'a FIFO (named pipe)', ..."""
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    )
    return next((text for test, text in kinds if test(mode)), "not a regular file")


class FileTooLarge(CnnlabError):
    """A file over its kind's size limit (callers may map it to their own error class)."""


def _too_large(path: Path, size: int, kind: FileKind, more: bool = False) -> FileTooLarge:
    figure = f"over {human_size(kind.limit)}" if more else human_size(size)
    return FileTooLarge(f"{path} is {figure}; {kind.noun} is at most {human_size(kind.limit)}")


def check_size(f: BinaryIO, path: Path, kind: FileKind) -> None:
    """FileTooLarge if the opened file ``f`` is over ``kind``'s limit by its fstat size."""
    size = os.fstat(f.fileno()).st_size
    if size > kind.limit:
        raise _too_large(Path(path), size, kind)


def open_regular(path: Path, kind: FileKind) -> BinaryIO:
    """``path`` opened for reading if it is a regular file within ``kind``'s limit.

    Symlinks are followed and their target checked like any file. O_NONBLOCK: opening a
    FIFO returns at once instead of waiting for a writer; fstat on the opened descriptor
    then refuses it, so nothing can be swapped between the check and the read.
    """
    path = Path(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        if os.path.islink(path):
            target = os.readlink(path)
            raise CnnlabError(f"{path} is a dangling symbolic link (to {target})") from None
        raise CnnlabError(f"cannot read {path}: not found") from None
    except OSError as exc:
        raise CnnlabError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CnnlabError(f"{path} is {describe_mode(info.st_mode)}, not a regular file")
        if info.st_size > kind.limit:
            raise _too_large(path, info.st_size, kind)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: Path, kind: FileKind) -> bytes:
    """The bytes of the regular file ``path``: at most ``kind.limit`` + 1 are ever read,
    so a file that grows or lies about its size is cut off, not held."""
    with open_regular(path, kind) as f:
        chunks: list[bytes] = []
        total = 0
        try:
            while total <= kind.limit:
                # os.read, not the buffered f.read: no read-ahead past limit + 1
                chunk = os.read(f.fileno(), min(_CHUNK, kind.limit + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        except OSError as exc:
            raise CnnlabError(f"cannot read {path}: {exc.strerror or exc}") from None
    if total > kind.limit:
        raise _too_large(Path(path), total, kind, more=True)
    return b"".join(chunks)


def read_text_bounded(path: Path, kind: FileKind) -> str:
    """:func:`read_bounded`, decoded as UTF-8; bad bytes are a CnnlabError naming ``path``."""
    try:
        return read_bounded(path, kind).decode("utf-8")
    except UnicodeDecodeError:
        raise CnnlabError(f"{path} is not UTF-8 text") from None


def read_json(path: Path, kind: FileKind = JSON_RECORD) -> Any:
    """Parse a JSON file (bounded as ``kind``); a missing or malformed file is a CnnlabError."""
    text = read_text_bounded(path, kind)
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise CnnlabError(f"cannot read {path}: JSON nested too deeply") from exc
    except ValueError as exc:
        raise CnnlabError(f"cannot read {path}: {exc}") from exc

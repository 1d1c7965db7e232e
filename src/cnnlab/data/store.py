"""Where dataset files are found and cached, and how they are downloaded.

A dataset ``NAME`` is looked for in, most preferred first:

1. ``<data_dir>/NAME/`` when a data folder is given (``--data-dir``), else
   ``$CNNLAB_DATA/NAME/`` when that is set (either may be read-only);
2. the user cache ``~/.cache/cnnlab/NAME/`` (``$XDG_CACHE_HOME/cnnlab/NAME/`` if set).

A missing file is downloaded into the cache: streamed to a temporary file beside its final
name, stopped past a byte cap, checked (checksum, or a parse), and only then renamed into
place, so a half-downloaded or wrong file never takes a good file's name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from tqdm import tqdm

from cnnlab import fileio
from cnnlab.data.preprocess import IMAGE_SUFFIXES
from cnnlab.errors import CnnlabError

DATA_ENV = "CNNLAB_DATA"
CHUNK = 1 << 20
PEEK = 64  # entries looked at per folder when telling a folder of images from a data folder


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/cnnlab``, or ``~/.cache/cnnlab``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cnnlab"


def default_cache_dir(name: str) -> Path:
    """The user cache's folder for dataset ``name``."""
    return cache_root() / name


def search_dirs(name: str, data_dir: Path | None = None) -> list[Path]:
    """The folders searched for dataset ``name``, most preferred first."""
    first = data_dir if data_dir is not None else os.environ.get(DATA_ENV)
    return ([Path(first) / name] if first else []) + [default_cache_dir(name)]


def _subfolders(folder: Path) -> list[Path]:
    """The first :data:`PEEK` visible subfolders of ``folder`` (none if unreadable)."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)[:PEEK]
    except OSError:
        return []
    return [Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir()]


def _holds_images(folder: Path) -> bool:
    """Whether ``folder`` itself holds an image file (among its first entries)."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)[:PEEK]
    except OSError:
        return False
    return any(e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file() for e in entries)


def check_data_dir(name: str, data_dir: Path | str) -> None:
    """One line when ``--data-dir`` names a folder of images instead of the standard sets'.

    ``--data-dir myimages`` would otherwise look for ``myimages/mnist/``, then download
    MNIST and train on it, or fail on the download: neither says what the user meant.
    Only ``folder:``'s layouts count (``PATH/cat/*.png``, ``PATH/train/cat/*.png``): a data
    folder that also keeps photos deeper down is left alone.
    """
    data_dir = Path(data_dir)  # the Python API takes a str too (the notebook passes one)
    if (data_dir / name).exists() or not data_dir.is_dir():
        return
    classes = []
    for sub in _subfolders(data_dir):
        classes += _subfolders(sub) if sub.name in ("train", "test") else [sub]
    if any(_holds_images(c) for c in classes):
        raise CnnlabError(
            f"--data-dir {data_dir} has no {name}/ but folders of images: --data-dir names the "
            f"folder holding {name}/ and the other standard sets; for your images use "
            f"--data folder:{data_dir}"
        )


def missing_hint(name: str, what: str, data_dir: Path | str | None) -> str:
    """The end of a failed download's line: where to put ``what`` (the files of ``name``)."""
    if data_dir is None:
        folder = default_cache_dir(name)
        return f"put {what} in {folder} or set {DATA_ENV} to a folder holding {name}/"
    return (
        f"--data-dir {data_dir} has no {name}/ (--data-dir names the folder holding {name}/ "
        f"and the other standard sets): put {what} in {Path(data_dir) / name}"
    )


def locate(name: str, candidates: Sequence[str], data_dir: Path | None = None) -> Path | None:
    """The first ``folder/candidate`` that exists in any form (a directory or a dangling
    symlink too: reading it then says what it is), over the search folders of ``name``.

    CnnlabError when ``data_dir`` is a folder of images (:func:`check_data_dir`).
    """
    if data_dir is not None:
        check_data_dir(name, data_dir)
    for folder in search_dirs(name, data_dir):
        for candidate in candidates:
            path = folder / candidate
            if os.path.lexists(path):
                return path
    return None


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with fileio.open_regular(path, fileio.ANY_SIZE) as f:  # regular files only
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_bounded(src: IO[bytes], out: IO[bytes], limit: int, what: str) -> int:
    """Copy ``src`` to ``out``; ValueError once more than ``limit`` bytes came."""
    total = 0
    while chunk := src.read(CHUNK):
        total += len(chunk)
        if total > limit:
            raise ValueError(f"{what} is over cnnlab's limit of {limit} bytes")
        out.write(chunk)
    return total


def fetch(url: str, dest: Path, max_bytes: int, *, progress: bool = True) -> None:
    """Stream ``url`` into ``dest``, refusing more than ``max_bytes`` (ValueError)."""
    with urllib.request.urlopen(url, timeout=60) as resp:
        declared = int(resp.headers.get("Content-Length") or 0)
        if declared > max_bytes:
            raise ValueError(f"{dest.name} is {declared} bytes, over the limit of {max_bytes}")
        bar = {"total": declared or None, "unit": "B", "unit_scale": True, "desc": dest.name}
        with tqdm.wrapattr(dest.open("wb"), "write", disable=not progress, **bar) as out:
            copy_bounded(resp, out, max_bytes, dest.name)


def check_file(path: Path, size: int, sha256: str) -> None:
    """ValueError unless ``path`` has exactly ``size`` bytes with SHA-256 ``sha256``."""
    got = path.stat().st_size
    if got != size:
        raise ValueError(f"{got:,} bytes, expected {size:,}")
    digest = sha256_file(path)
    if digest != sha256:
        raise ValueError(f"SHA-256 mismatch ({digest[:16]}..., expected {sha256[:16]}...)")


def download(
    urls: Sequence[str],
    dest: Path,
    *,
    max_bytes: int,
    check: Callable[[Path], None],
    what: str,
    hint: str,
    fetcher: Callable[[str, Path], None] | None = None,
) -> Path:
    """Try each of ``urls`` until one gives a file that passes ``check``; rename it to ``dest``.

    ``check(tmp)`` raises (ValueError, CnnlabError, OSError) for a wrong file. Every
    failure is kept for the one-line error naming ``what``, which ends with ``hint``.
    ``fetcher(url, tmp)`` replaces the capped :func:`fetch` (tests stand in for it).
    """
    folder = dest.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnlabError(f"cannot create the cache folder {folder}: {exc}") from exc
    errors: list[str] = []
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=folder)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            if fetcher is not None:
                fetcher(url, tmp)
            else:
                fetch(url, tmp, max_bytes)
            check(tmp)
            os.replace(tmp, dest)
            return dest
        except (OSError, ValueError, urllib.error.URLError, CnnlabError) as exc:
            errors.append(f"{url}: {exc}")
        finally:
            tmp.unlink(missing_ok=True)
    raise CnnlabError(f"could not download {what} ({'; '.join(errors)}); {hint}")

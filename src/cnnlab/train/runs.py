"""Run folders: creating them, the history file, random-number state for resuming.

A run folder holds ``config.json`` (the resolved config), ``model.json`` (the network's
description), ``history.csv`` (one row per epoch), ``best.pt`` and ``last.pt``
(:mod:`cnnlab.train.checkpoint`), ``metrics.json`` and the plots. Every file is written
atomically (:mod:`cnnlab.fileio`): a crash never leaves a half-written file where a good
one was, and the temporaries a kill leaves are removed when the folder is next trained in.

``cnnlab train`` holds an exclusive lock (``flock`` on ``.lock``) on its run folder while it
runs (:func:`claim`), so a second ``train --out``/``--resume`` on it gets one line naming the
holder. Every other command that writes into a run folder (import-keras, compare, evaluate,
export, report, shift, ...) takes the same lock while it runs (:func:`writing`). A folder
that a run killed during its first epoch left (``config.json``, no ``last.pt``) is reused by
``train --out``; ``--resume`` on it says so.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch

from cnnlab import fileio
from cnnlab.errors import CnnlabError

HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")
# Files that mean a folder holds a run, not one that a kill left before any last.pt
RUN_FILES = ("last.pt", "metrics.json")
# What a new run writes: removed again if it fails before its first checkpoint
WRITTEN = ("config.json", "model.json", "history.csv", "best.pt", "last.pt", "metrics.json")
LOCK = ".lock"  # flock'ed by the command training into the folder; never removed while used


def save_torch(path: Path, obj: Any) -> None:
    """``torch.save`` atomically. Serialised in memory first: a full disk then fails as an
    OSError of the write (one line naming ``path``), not inside torch's zip writer."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    fileio.write_bytes(path, buf.getvalue())


def write_history(path: Path, rows: Iterable[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in HISTORY_FIELDS})
    fileio.write_text(path, buf.getvalue())


def read_history(path: Path) -> list[dict[str, float]]:
    text = fileio.read_text_bounded(Path(path), fileio.HISTORY)  # regular, bounded
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    try:
        return [{k: float(r[k]) for k in HISTORY_FIELDS} for r in rows]
    except (KeyError, TypeError, ValueError) as exc:
        raise CnnlabError(f"{path} is not a cnnlab history file") from exc


def new_run_dir(root: Path, stem: str) -> Path:
    """A fresh, empty folder ``root/stem-YYYYmmdd-HHMMSS[-k]``; never an existing one."""
    return _new_run_dir(root, stem)[0]


def _new_run_dir(root: Path, stem: str) -> tuple[Path, list[Path]]:
    """:func:`new_run_dir` and the folders this call created (``root`` too, if new)."""
    base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    created = _make_dirs(Path(root))
    for k in range(1000):
        path = Path(root) / (base if k == 0 else f"{base}-{k}")
        try:
            path.mkdir(exist_ok=False)
            return path, [*created, path]
        except FileExistsError:
            continue
        except OSError as exc:
            raise CnnlabError(f"cannot create run folder {path}: {exc.strerror or exc}") from exc
    raise CnnlabError(f"cannot find a free run folder name under {root}")


def _make_dirs(path: Path) -> list[Path]:
    """``mkdir -p path``; the folders it created, outermost first."""
    missing = [p for p in (path, *path.parents) if not p.exists()][::-1]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnlabError(f"cannot create output folder {path}: {exc.strerror or exc}") from exc
    return missing


def check_out_dir(path: Path, log: Callable[[str], None] | None = None) -> None:
    """Refuse ``path`` as a new run's folder if it holds a run (``last.pt`` or metrics).
    A folder that a run killed during its first epoch left (``config.json``, perhaps
    ``best.pt``, no ``last.pt``: nothing to resume) is reused: ``log`` says so."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CnnlabError(f"output path {path} exists and is not a folder")
    # a folder to be created: its nearest existing parent must be one (known before the
    # data is loaded, not after an hour of decoding)
    above = next((p for p in path.parents if p.exists()), None)
    if not path.exists() and above is not None and not above.is_dir():
        raise CnnlabError(f"cannot create output folder {path}: {above} is not a folder")
    held = [name for name in RUN_FILES if (path / name).exists()]
    if held:
        hint = f", or continue it with --resume {path}" if (path / "last.pt").exists() else ""
        raise CnnlabError(f"{path} already holds a run ({held[0]}); choose another --out{hint}")
    started = [n for n in WRITTEN if (path / n).exists()]
    if started and log is not None:
        log(f"reusing {path}: it holds no last.pt yet (a run stopped in its first epoch)")


def prepare_out_dir(path: Path) -> Path:
    """Create ``path`` for a new run; refuse one that already holds a run's files."""
    path = Path(path)
    check_out_dir(path)
    _make_dirs(path)
    if not os.access(path, os.W_OK):
        raise CnnlabError(f"output folder {path} is not writable")
    return path


@contextmanager
def claim(
    path: Path | None,
    *,
    resume: bool = False,
    stem: str = "run",
    log: Callable[[str], None] = print,
    command: str = "train",
) -> Iterator[Path]:
    """The run folder of one ``train`` command (or another that makes a run, ``command``),
    locked for as long as the command runs.

    A new run (``resume=False``) goes into ``path`` (created, or reused if it holds no
    ``last.pt`` yet: :func:`check_out_dir`) or into a new folder under ``runs/`` when
    ``path`` is None. If the command fails before any checkpoint exists, the folders it
    created are removed again, with what it wrote into them. Stale temporaries that a
    killed run left are removed first. A second command on a locked folder gets one line.
    """
    created: list[Path] = []
    if resume:
        if path is None or not Path(path).is_dir():
            raise CnnlabError(f"run folder {path} not found")
    elif path is None:
        path, created = _new_run_dir(Path("runs"), stem)
    else:
        check_out_dir(path)
        created = _make_dirs(Path(path))
    path = Path(path)
    with _locked(path, remove_on_error=not resume, command=command):
        try:
            if not resume:
                check_out_dir(path, log)  # again: another command may have started it
                if not os.access(path, os.W_OK):
                    raise CnnlabError(f"output folder {path} is not writable")
            stale = fileio.stale_temporaries(path)
            for tmp in stale:
                tmp.unlink(missing_ok=True)
            if stale:
                log(f"removed {len(stale)} temporary file(s) a killed run left in {path}")
            yield path
        except BaseException:
            if created and not any((path / n).exists() for n in ("best.pt", "last.pt")):
                _remove_created(path, created)
            raise


def _remove_created(path: Path, created: list[Path]) -> None:
    """Undo a failed new run: the files a run writes, the lock, then the empty folders."""
    for name in (*WRITTEN, "curves.png", LOCK):
        (path / name).unlink(missing_ok=True)
    for tmp in fileio.stale_temporaries(path):
        tmp.unlink(missing_ok=True)
    for folder in reversed(created):
        try:
            folder.rmdir()  # only if empty: never what someone else put there
        except OSError:
            return


@contextmanager
def _locked(path: Path, remove_on_error: bool = False, command: str = "train") -> Iterator[None]:
    """An exclusive ``flock`` on ``path/.lock``, held until the block ends, with the holder
    (pid, command) written into it for a refused command to name. A lock file this call
    created is removed again if the block fails and ``remove_on_error``."""
    lock = path / LOCK
    created = not lock.exists()
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CnnlabError(f"cannot create the lock file {lock}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CnnlabError(
                f"{path} is in use: held by a running {_holder(fd)}; wait for it to finish "
                "or choose another folder"
            ) from None
        except OSError as exc:
            raise CnnlabError(f"cannot lock {lock}: {exc.strerror or exc}") from exc
        _note_holder(fd, command)
        try:
            yield
        except BaseException:
            if created and remove_on_error:
                lock.unlink(missing_ok=True)
            raise
        finally:
            _note_holder(fd, None)
    finally:
        os.close(fd)


def _note_holder(fd: int, command: str | None) -> None:
    """Write "PID cnnlab COMMAND" into the held lock file (emptied again on release).
    Best effort: the flock is the lock; the text only names its holder."""
    try:
        os.ftruncate(fd, 0)
        if command is not None:
            os.pwrite(fd, f"{os.getpid()} cnnlab {command}\n".encode(), 0)
    except OSError:
        pass


def _holder(fd: int) -> str:
    """Who holds a lock, from the text its holder wrote: "cnnlab train (pid 12)"; only a
    pid and a command name are believed (the file is anyone's to write)."""
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace")
    except OSError:
        text = ""
    found = re.fullmatch(r"(\d{1,10}) cnnlab ([a-z][a-z-]{0,19})\n?", text)
    if found is None:
        return "cnnlab command"
    return f"cnnlab {found[2]} (pid {found[1]})"


def check_unlocked(path: Path, command: str = "train") -> None:
    """Fail at once, before any slow work, if a command holds ``path`` now (the lock itself
    is taken later, by :func:`claim`)."""
    if (Path(path) / LOCK).is_file():
        with _locked(Path(path), command=command):
            pass


def run_folder_of(path: Path) -> Path | None:
    """The run folder that ``path`` (a folder or a file, existing or to be written) is in:
    ``path`` itself or its nearest folder above that holds a lock file or a checkpoint (a
    lone config.json is not enough: a project's own folder may hold one)."""
    for folder in (Path(path), *Path(path).parents):
        if folder.is_dir() and any((folder / n).exists() for n in (LOCK, "best.pt", "last.pt")):
            return folder
    return None


@contextmanager
def writing(targets: Iterable[Path | None], command: str) -> Iterator[None]:
    """The lock of every run folder that a command writes into (``targets``: the folders
    and files it writes, see :func:`run_folder_of`), held while the block runs. A folder
    that another command holds is refused in one line naming it, before anything is
    written. Folders outside any run are not locked (no lock file is left in them)."""
    folders: dict[Path, Path] = {}
    for target in targets:
        found = run_folder_of(target) if target is not None else None
        if found is not None:
            folders.setdefault(found.resolve(), found)  # one flock per folder: a second
            # one on the same file in this process would conflict with the first
    with ExitStack() as stack:
        for folder in folders.values():
            if not (folder / LOCK).exists() and not os.access(folder, os.W_OK):
                continue  # nobody can be training into it: train would make the lock file
            stack.enter_context(_locked(folder, command=command))
        yield


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

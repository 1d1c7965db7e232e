"""Decoding a folder of images in parallel into an on-disk cache, and finding it again.

``<cache>/folders/<key>/`` holds ``images.npy`` (uint8 ``(N, H, W, C)``, one row per listed
file, in listing order), ``labels.npy`` (int64 ``(N,)``, -1 for a file that did not
decode), ``parts.npy`` (int8 ``(N,)``: 0 training pool, 1 ``test/``) and
``manifest.json``. The key hashes every file's path, size and modification time and the
preprocessing, so a changed file, a new one or other settings make a new cache; a second
load with nothing changed opens the cache at once.

The cache is built in a temporary folder beside it and renamed into place, under a lock
file (processes started together, as under ``torchrun``, decode once). Workers decode
chunks of files and write their rows straight into ``images.npy`` with ``os.pwrite``:
no process ever holds more than a chunk of images, whatever the dataset's size.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cnnlab import fileio
from cnnlab.data import images
from cnnlab.data.folder_scan import Listing
from cnnlab.data.rows import read_npy_header
from cnnlab.errors import CnnlabError

CACHE_VERSION = 2  # 2: large JPEGs decoded at a reduced DCT scale
OK, SKIP, FATAL = 0, 1, 2
MAX_SIDE = 128  # a size decided from the data keeps its aspect ratio within this


# ---- work done in each process (module-level: picklable) ---------------------------------
def _init_worker() -> None:
    """Decoding workers: cnnlab's explicit pixel limit rules, and Ctrl-C is the parent's."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # images.open_image checks each header itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _outcome(exc: images.ImageRejected, strict: bool, root: str) -> tuple[int, str]:
    """What a failed file means: FATAL (unreadable, a bomb; any failure when ``strict``)
    or SKIP, and the message with paths relative to the dataset's folder."""
    message = _relative(str(exc), root)
    if isinstance(exc, images.UnreadableImage | images.ImageTooLarge):
        return FATAL, message
    return (FATAL, f"{message}; strict mode refuses it") if strict else (SKIP, message)


def probe_chunk(root: str, rels: Sequence[str], max_pixels: int, strict: bool) -> list[Any]:
    """(OK, height, width, mode) or (SKIP|FATAL, message) for each file."""
    out: list[Any] = []
    for rel in rels:
        try:
            out.append((OK, *images.probe(Path(root) / rel, max_pixels)))
        except images.ImageRejected as exc:
            out.append(_outcome(exc, strict, root))
    return out


def decode_chunk(
    root: str, items: Sequence[tuple[int, str]], settings: dict[str, Any], target: str
) -> list[tuple[int, int, str]]:
    """Decode ``(row, rel)`` files into their rows of the ``.npy`` at ``target``."""
    config = images.ImageSettings.from_dict(settings, settings["max_pixels"])
    _shape, _dtype, offset = read_npy_header(Path(target))
    row_bytes = int(np.prod(config.shape))
    out: list[tuple[int, int, str]] = []
    run: list[bytes] = []  # decoded rows waiting to be written, consecutive from run_start
    run_start = -1
    fd = os.open(target, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))

    def flush() -> None:
        data = b"".join(run)
        if os.pwrite(fd, data, offset + run_start * row_bytes) != len(data):
            raise OSError(f"short write to {target}")
        run.clear()

    try:
        for row, rel in items:
            try:
                pixels = images.decode(images.read_file(Path(root) / rel), rel, config)
            except images.ImageRejected as exc:
                out.append((row, *_outcome(exc, settings["strict"], root)))
                continue
            if run and row != run_start + len(run):
                flush()
            if not run:
                run_start = row
            run.append(pixels.tobytes())
            out.append((row, OK, ""))
        if run:
            flush()
    finally:
        os.close(fd)
    return out


def _relative(message: str, root: str) -> str:
    return message.replace(root.rstrip("/") + "/", "")


# ---- running chunks, in this process or a pool ------------------------------------------
def default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def run_chunks(
    work: Callable[..., list[Any]],
    calls: list[tuple[Any, ...]],
    sizes: list[int],
    workers: int,
    progress: bool,
    desc: str,
    stop: Callable[[list[Any]], bool],
) -> Iterator[tuple[int, list[Any]]]:
    """(call number, its results) as they come; ``stop(results)`` True ends the run early."""
    bar = tqdm(total=sum(sizes), desc=desc, unit="img", disable=not progress, leave=False)
    with bar:
        if workers <= 1 or len(calls) < 2:
            for k, (args, size) in enumerate(zip(calls, sizes, strict=True)):
                result = work(*args)
                bar.update(size)
                yield k, result
                if stop(result):
                    return
            return
        # fork on Linux, as PyTorch's DataLoader: the workers only run Pillow and NumPy
        # (no OpenMP, no torch), and the caller's script is not imported again, so a
        # script without an `if __name__ == "__main__":` guard works. Elsewhere fork is
        # unsafe (macOS frameworks) or absent (Windows): spawn, which needs that guard.
        context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)
        try:
            pending: dict[Future[list[Any]], tuple[int, int]] = {}
            queue = iter(enumerate(zip(calls, sizes, strict=True)))
            for k, (args, size) in queue:  # a few chunks ahead per worker, not all at once
                pending[pool.submit(work, *args)] = (k, size)
                if len(pending) >= 4 * workers:
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    k, size = pending.pop(fut)
                    bar.update(size)
                    result = fut.result()
                    yield k, result
                    if stop(result):
                        return
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending[pool.submit(work, *nxt[1][0])] = (nxt[0], nxt[1][1])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def chunked(n: int, workers: int) -> list[range]:
    size = max(16, min(256, n // max(1, workers * 16)))
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


# ---- the cache ---------------------------------------------------------------------------
def cache_key(listing: Listing, settings: dict[str, Any]) -> str:
    """Hash of the files (paths, sizes, times) and of the preprocessing asked for."""
    from PIL import __version__ as pillow

    asked = {**settings, "version": CACHE_VERSION, "pillow": pillow.split(".")[0]}
    text = listing.digest() + json.dumps(asked, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (a lock file), where the system has flock."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; the atomic rename still keeps the cache whole
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The cache's manifest if the cache is whole and current; None otherwise."""
    try:
        manifest = fileio.read_json(folder / "manifest.json")
        shape, dtype, _ = read_npy_header(folder / "images.npy")
        # fileio's reader: a FIFO or device in a damaged cache is refused, never waited on
        with fileio.open_regular(folder / "labels.npy", fileio.NPY_ARRAY) as f:
            labels = np.load(f, allow_pickle=False)
        with fileio.open_regular(folder / "parts.npy", fileio.NPY_ARRAY) as f:
            parts = np.load(f, allow_pickle=False)
    except (OSError, ValueError, CnnlabError):
        return None
    n = manifest.get("n")
    if (
        manifest.get("version") != CACHE_VERSION
        or shape != (n, *manifest.get("shape", ()))
        or dtype != np.uint8
        or labels.shape != (n,)
        or parts.shape != (n,)
    ):
        return None
    return dict(manifest)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 1 << 62


def remove_stale(folders: Path, root: str, files_digest: str, keep: str) -> None:
    """Drop caches of the same folder made from other file contents (they are stale)."""
    with contextlib.suppress(OSError):
        for entry in folders.iterdir():
            if entry.name == keep or entry.name.startswith("."):
                continue
            try:
                manifest = fileio.read_json(entry / "manifest.json")
            except (OSError, ValueError, CnnlabError):
                continue
            if manifest.get("root") == root and manifest.get("files_digest") != files_digest:
                shutil.rmtree(entry, ignore_errors=True)
                (folders / f".{entry.name}.lock").unlink(missing_ok=True)


def write_arrays(tmp: Path, listing: Listing, shape: tuple[int, int, int]) -> Path:
    """``images.npy`` allocated (sparse: nothing written yet), labels and parts saved."""
    n = len(listing.files)
    need = n * int(np.prod(shape))
    if need > free_bytes(tmp) - (64 << 20):
        raise CnnlabError(
            f"the decoded images need {need / 1e9:.1f} GB in {tmp.parent}, which has "
            f"{free_bytes(tmp) / 1e9:.1f} GB free: free some space or choose another cache_dir"
        )
    target = tmp / "images.npy"
    mm = np.lib.format.open_memmap(target, mode="w+", dtype=np.uint8, shape=(n, *shape))
    del mm  # only the header and the file's length: the rows are written by pwrite
    np.save(tmp / "parts.npy", np.array([f.part for f in listing.files], dtype=np.int8))
    return target


def finish(tmp: Path, labels: np.ndarray, manifest: dict[str, Any]) -> None:
    np.save(tmp / "labels.npy", labels)
    fd = os.open(tmp / "images.npy", os.O_RDONLY)
    try:
        os.fsync(fd)  # the rows are on disk before the cache's name is
    finally:
        os.close(fd)
    fileio.write_json(tmp / "manifest.json", manifest)


def build(
    folders: Path,
    key: str,
    listing: Listing,
    decide: Callable[[], tuple[dict[str, Any], dict[str, Any], dict[int, str]]],
    workers: int,
    progress: bool,
) -> dict[str, Any]:
    """Decode ``listing`` into ``folders/key``; the manifest.

    ``decide()`` gives the image settings (with ``strict`` and ``max_pixels``), how they
    were decided, and the rows already known not to decode (from reading headers).
    """
    settings, decided, bad = decide()
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=folders))
    try:
        target = write_arrays(tmp, listing, tuple(settings["shape"]))
        labels = np.array([f.label for f in listing.files], dtype=np.int64)
        todo = [k for k in range(len(listing.files)) if k not in bad]
        chunks = chunked(len(todo), workers)
        root = str(listing.root)
        calls = [
            (root, [(todo[i], listing.files[todo[i]].rel) for i in c], settings, str(target))
            for c in chunks
        ]
        failed: dict[int, str] = dict(bad)
        fatal: list[str] = []

        def stop(result: list[tuple[int, int, str]]) -> bool:
            for row, status, message in result:
                if status == FATAL:
                    fatal.append(message)
                elif status == SKIP:
                    failed[row] = message
            return bool(fatal)

        desc = f"decoding {listing.root.name or listing.root}"
        for _ in run_chunks(
            decode_chunk, calls, [len(c) for c in chunks], workers, progress, desc, stop
        ):
            pass
        if fatal:
            raise CnnlabError(fatal[0])
        rows = sorted(failed)
        labels[rows] = -1
        root_path, files_digest = str(listing.root.resolve()), listing.digest()
        manifest: dict[str, Any] = {
            "version": CACHE_VERSION,
            "root": root_path,
            "files_digest": files_digest,
            "n": len(listing.files),
            "shape": list(settings["shape"]),
            "settings": {k: settings[k] for k in ("shape", "interpolation", "fit")},
            "decided": decided,
            "classes": listing.classes,
            "layout": listing.layout,
            "skipped": [[listing.files[r].rel, failed[r]] for r in rows],
            "seconds": round(time.perf_counter() - start, 3),
        }
        finish(tmp, labels, manifest)
        final = folders / key
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it owner-only
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first (no flock on this system)
            shutil.rmtree(tmp, ignore_errors=True)
        remove_stale(folders, root_path, files_digest, key)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def most_common_size(sizes: Counter[tuple[int, int]]) -> tuple[tuple[int, int], int]:
    """The most frequent (height, width); ties go to the larger image, then the taller."""
    (h, w), count = max(sizes.items(), key=lambda kv: (kv[1], kv[0][0] * kv[0][1], kv[0]))
    return (h, w), count


def capped(h: int, w: int, side: int = MAX_SIDE) -> tuple[int, int]:
    """(h, w) scaled so the longer side is at most ``side``, keeping the aspect ratio."""
    if max(h, w) <= side:
        return h, w
    scale = side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))

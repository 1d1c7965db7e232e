"""``folder:PATH``: your images, one subfolder per class (or ``train/`` and ``test/`` of those).

What happens (docs/data.md tells it for users):

1. the folder is listed (:mod:`cnnlab.data.folder_scan`): classes in natural order, hidden
   and non-image files left out;
2. the image shape: ``DataOptions.image_shape`` if given, else decided from the headers
   (no pixel decoded): 1 channel if every image is greyscale, else 3; the most common
   size, its longer side capped at 128 keeping the aspect ratio;
3. every file is decoded in parallel (:mod:`cnnlab.data.images`, one code path with
   ``predict``) into the on-disk cache (:mod:`cnnlab.data.folder_cache`), or the cache is
   reused when no file and no setting changed;
4. the splits are lazy :class:`~cnnlab.data.rows.RowView` s over the cache: ``test/`` is
   the test split when present, else one is drawn (seeded, stratified, recorded);
   validation is always drawn from the training part.

A file that does not decode is skipped with one warning line counting them and naming the
first few; ``strict`` refuses instead. An unreadable file, a link loop or a decompression
bomb is one error line whatever ``strict`` says.
"""

from __future__ import annotations

import shutil
from collections import Counter
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab import fileio
from cnnlab.data import folder_cache as fc
from cnnlab.data.base import DataOptions, Dataset, Source, Splits, register_source, warn
from cnnlab.data.folder_scan import Listing, scan
from cnnlab.data.images import GREY_MODES
from cnnlab.data.rows import RowView
from cnnlab.data.splits import split_indices, split_record
from cnnlab.data.store import cache_root
from cnnlab.errors import CnnlabError

SHOWN = 3  # skipped files named in the warning


def _modes(counts: Counter[str]) -> str:
    return ", ".join(f"{mode} {n}" for mode, n in counts.most_common())


def decide_settings(
    listing: Listing, options: DataOptions, workers: int
) -> tuple[dict[str, Any], dict[str, Any], dict[int, str]]:
    """The image settings, how they were decided, and rows whose header did not read."""
    base = {
        "interpolation": options.interpolation,
        "fit": options.fit,
        "strict": options.strict,
        "max_pixels": options.max_image_pixels,
    }
    if options.image_shape is not None:
        h, w, c = options.image_shape
        return {**base, "shape": [h, w, c]}, {"shape": "given"}, {}
    root, rels = str(listing.root), [f.rel for f in listing.files]
    chunks = fc.chunked(len(rels), workers)
    calls = [(root, [rels[i] for i in c], options.max_image_pixels, options.strict) for c in chunks]
    sizes: Counter[tuple[int, int]] = Counter()
    modes: Counter[str] = Counter()
    bad: dict[int, str] = {}
    fatal: list[str] = []

    def stop(result: list[Any]) -> bool:
        return any(r[0] == fc.FATAL for r in result)

    results = fc.run_chunks(
        fc.probe_chunk,
        calls,
        [len(c) for c in chunks],
        workers,
        options.progress,
        "reading image headers",
        stop,
    )
    for k, result in results:
        for row, r in zip(chunks[k], result, strict=True):
            if r[0] == fc.OK:
                sizes[(r[1], r[2])] += 1
                modes[r[3]] += 1
            elif r[0] == fc.SKIP:
                bad[row] = r[1]
            else:
                fatal.append(r[1])
    if fatal:
        raise CnnlabError(fatal[0])
    if not sizes:
        raise CnnlabError(f"no image in {listing.root} can be read ({len(bad)} tried)")
    (h0, w0), count = fc.most_common_size(sizes)
    h, w = fc.capped(h0, w0)
    size = f"{h}x{w}: the most common size, {h0}x{w0} ({count} of {sum(sizes.values())} images)"
    if (h, w) != (h0, w0):
        size += f", its longer side capped at {fc.MAX_SIDE} keeping the aspect ratio"
    grey = set(modes) <= GREY_MODES
    channels = (
        f"1: every image is greyscale ({_modes(modes)})"
        if grey
        else f"3: not every image is greyscale ({_modes(modes)})"
    )
    return {**base, "shape": [h, w, 1 if grey else 3]}, {"size": size, "channels": channels}, bad


def load_cache(listing: Listing, options: DataOptions) -> tuple[Path, dict[str, Any], str]:
    """The cache folder for ``listing`` (built if needed), its manifest, and its key."""
    workers = options.workers or fc.default_workers()
    folders = (options.cache_dir or cache_root()) / "folders"
    try:
        folders.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnlabError(f"cannot create the cache folder {folders}: {exc}") from None
    asked = {
        "shape": list(options.image_shape) if options.image_shape else None,
        "interpolation": options.interpolation,
        "fit": options.fit,
        "max_pixels": options.max_image_pixels,
    }
    key = fc.cache_key(listing, asked)
    if options.image_shape is not None:  # a shape decided before (a run replayed) is reused
        decided = fc.cache_key(listing, {**asked, "shape": None})
        manifest = fc.read_manifest(folders / decided)
        if manifest is not None and tuple(manifest["shape"]) == options.image_shape:
            return folders / decided, {**manifest, "cache": "reused"}, decided
    with fc.locked(folders / f".{key}.lock"):
        manifest = fc.read_manifest(folders / key)
        if manifest is None:
            if (folders / key).exists():
                warn(f"the cache {folders / key} is damaged: decoding the images again")
                shutil.rmtree(folders / key, ignore_errors=True)
            try:
                manifest = fc.build(
                    folders,
                    key,
                    listing,
                    lambda: decide_settings(listing, options, workers),
                    workers,
                    options.progress,
                )
            except OSError as exc:
                raise CnnlabError(f"cannot write the image cache in {folders}: {exc}") from None
            except BrokenProcessPool:
                raise CnnlabError(
                    "a decoding process died (out of memory?): try fewer workers"
                ) from None
            manifest["cache"] = f"built in {manifest['seconds']} s"
        else:
            manifest["cache"] = "reused"
    return folders / key, manifest, key


def _skipped(manifest: dict[str, Any], options: DataOptions, root: Path) -> dict[str, Any]:
    skipped = manifest["skipped"]
    if skipped and options.strict:
        raise CnnlabError(f"{skipped[0][1]} (in {root}); strict mode refuses it")
    if skipped:
        named = "; ".join(why if rel in why else f"{rel}: {why}" for rel, why in skipped[:SHOWN])
        more = f"; and {len(skipped) - SHOWN} more" if len(skipped) > SHOWN else ""
        warn(
            f"skipped {len(skipped):,} of {manifest['n']:,} image files in {root} that do not "
            f"decode: {named}{more}"
        )
    return {"count": len(skipped), "first": [rel for rel, _ in skipped[:10]]}


def draw_rows(
    labels: np.ndarray, parts: np.ndarray, layout: str, options: DataOptions
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """File rows of train, validation and test (sorted: the cache is read in order)."""
    good = labels >= 0
    if layout == "train/test":
        pool, test = np.flatnonzero(good & (parts == 0)), np.flatnonzero(good & (parts == 1))
    else:
        every = np.flatnonzero(good)
        kept, held = split_indices(
            labels[every], options.seed, options.test_fraction, what="image", one_per_class=True
        )
        pool, test = every[kept], every[held]
    kept, held = split_indices(
        labels[pool], options.seed, options.val_fraction, what="training", one_per_class=True
    )
    return np.sort(pool[kept]), np.sort(pool[held]), np.sort(test)


def split_rows(
    folder: Path, labels: np.ndarray, parts: np.ndarray, layout: str, options: DataOptions
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`draw_rows`, kept beside the cache: a second load needs no draw (and no
    scikit-learn import, a second of a fresh process)."""
    path = folder / f"split-{options.seed}-{options.test_fraction!r}-{options.val_fraction!r}.npz"
    try:
        with fileio.open_regular(path, fileio.NPZ_ARCHIVE) as f:  # never a FIFO's wait
            with np.load(f, allow_pickle=False) as saved:
                rows = (saved["train"], saved["val"], saved["test"])
        every = np.concatenate(rows)
        if every.dtype.kind == "i" and len(np.unique(every)) == len(every):
            if every.size and every.min() >= 0 and (labels[every] >= 0).all():
                return rows
    except (OSError, ValueError, KeyError, IndexError, CnnlabError):
        pass  # missing or damaged: drawn again
    rows = draw_rows(labels, parts, layout, options)
    try:
        fileio.atomic_write(path, lambda f: np.savez(f, train=rows[0], val=rows[1], test=rows[2]))
    except CnnlabError:
        pass  # a read-only cache: drawn again next time
    return rows


def make_splits(
    folder: Path, listing: Listing, options: DataOptions
) -> tuple[Splits, dict[str, Any]]:
    """Lazy splits over the cache: ``test/`` or a drawn test split, then validation."""
    with fileio.open_regular(folder / "labels.npy", fileio.NPY_ARRAY) as f:
        labels = np.load(f, allow_pickle=False)  # (N,) int64, -1: skipped
    with fileio.open_regular(folder / "parts.npy", fileio.NPY_ARRAY) as f:
        parts = np.load(f, allow_pickle=False)  # (N,) int8, 1: test/
    good = labels >= 0
    if not good.any():
        raise CnnlabError(f"no image in {listing.root} decodes")
    for k in sorted(set(range(len(listing.classes))) - set(labels[good & (parts == 0)].tolist())):
        raise CnnlabError(f"class {listing.classes[k]!r} has no training image that decodes")
    if listing.layout == "train/test":
        if not (good & (parts == 1)).any():
            raise CnnlabError(f"{listing.root}/test holds no image that decodes")
        test_record: dict[str, Any] = {"drawn": False, "from": "test/"}
    else:
        test_record = {"drawn": True, **split_record(options.seed, options.test_fraction)}
    train, val, test = split_rows(folder, labels, parts, listing.layout, options)
    images = RowView(folder / "images.npy")
    splits = Splits(
        images.take(train),
        labels[train],
        images.take(val),
        labels[val],
        images.take(test),
        labels[test],
    )
    k = len(listing.classes)
    per_class = {
        name: np.bincount(labels[rows], minlength=k).tolist()
        for name, rows in (("train", train), ("val", val), ("test", test))
    }
    record = {
        "val_split": split_record(options.seed, options.val_fraction),
        "test_split": test_record,
        "counts": splits.counts(),
        "per_class": per_class,
    }
    return splits, record


@register_source("folder")
class FolderSource(Source):
    """``folder:PATH``: image files in one subfolder per class."""

    argument = "PATH"
    summary = "your images, one subfolder per class"
    order = 60

    def load(self, options: DataOptions) -> Dataset:
        assert self.arg is not None
        root = Path(self.arg).expanduser()
        listing = scan(root)
        if listing.loose:
            warn(
                f"{listing.loose} image files at the top of {root} are in no class folder: left out"
            )
        folder, manifest, key = load_cache(listing, options)
        skipped = _skipped(manifest, options, root)
        splits, split_info = make_splits(folder, listing, options)
        h, w, c = manifest["shape"]
        record = {
            "source": "folder",
            "root": manifest["root"],
            "layout": listing.layout,
            "image": manifest["settings"],
            "decided": manifest["decided"],
            "files": {
                "images": len(listing.files),
                "skipped": skipped,
                "ignored_non_images": listing.ignored,
                "ignored_hidden": listing.hidden,
                "ignored_outside_classes": listing.loose,
            },
            "cache_key": key,
            "cache": manifest["cache"],
            **split_info,
        }
        n = sum(split_info["counts"].values())
        what = f"{n} images of {len(listing.classes)} classes from {root}, as {h}x{w}x{c}"
        return Dataset(self.spec, splits, list(listing.classes), what, "images", True, record)

"""``npz:PATH``: your arrays, as ``np.savez`` writes them.

Members: ``x_train`` and ``y_train``, optionally ``x_test`` and ``y_test`` (else a test
split is drawn, seeded and stratified, and recorded) and ``class_names``. Inputs are
channels-last and their rank says what they are:

- (N, L) a one-channel series, (N, L, C) series (float), -> the time-series recipe;
- (N, H, W) uint8 one-channel images, (N, H, W, C) images -> the image recipe;
- (N, T, H, W, C) clips.

uint8 inputs are 0-255 pixels (divided by 255 on the way in, unless the network starts
with a Rescaling layer); floats are used as they are (NaN and inf refused). Labels are
integers 0..K-1 (named by ``class_names``, else "0".."K-1") or strings (classes in
natural order, or in ``class_names``' order).

The file is read as data: ``allow_pickle=False``, and every member's shape and dtype are
read from its header and checked against the member's size and this machine's memory
*before* anything is allocated, so a hostile file claiming huge arrays is one line.
Inputs over :data:`cnnlab.data.npz_rows.LOAD_WHOLE_BYTES` are never loaded: their splits
are :class:`~cnnlab.data.rows.RowView` s read a batch at a time (:mod:`.npz_rows`).
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from cnnlab import fileio
from cnnlab.data.base import DataOptions, Dataset, Rows, Source, Splits, register_source
from cnnlab.data.folder_scan import natural_key
from cnnlab.data.npz_rows import lazy, row_view
from cnnlab.data.rows import RowView
from cnnlab.data.splits import split_indices, split_record
from cnnlab.errors import CnnlabError

MEMBERS = ("x_train", "y_train", "x_test", "y_test", "class_names")
MAX_MEMBERS = 64
MAX_HEADER = 10_000
KINDS = {2: "series", 3: "series", 4: "images", 5: "clips"}
CHUNK_ROWS = 4096


@dataclass(frozen=True)
class Member:
    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def available_memory() -> int:
    """Bytes this machine can give (MemAvailable on Linux, physical memory elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def inspect(path: Path, source: BinaryIO | None = None) -> dict[str, Member]:
    """Each ``.npy`` member's shape and dtype, from its header, checked against its size
    (read from ``source``, the file opened by :func:`cnnlab.fileio.open_regular`, if given)."""
    found: dict[str, Member] = {}
    try:
        with zipfile.ZipFile(path if source is None else source) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                raise CnnlabError(f"{path} holds {len(infos)} members, over {MAX_MEMBERS}")
            for info in infos:
                name = info.filename.removesuffix(".npy")
                if name not in MEMBERS or not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _fortran, dtype = read(f, max_header_size=MAX_HEADER)
                    header = f.tell()
                member = Member(tuple(int(s) for s in shape), dtype)
                if dtype.hasobject:
                    raise CnnlabError(
                        f"{path}: {name} holds Python objects (pickled data), which cnnlab "
                        "never loads: save plain numeric or string arrays"
                    )
                if info.file_size != header + member.nbytes:
                    raise CnnlabError(
                        f"{path}: {name} declares shape {member.shape} {dtype} "
                        f"({member.nbytes:,} bytes) but the member holds "
                        f"{info.file_size - header:,}"
                    )
                found[name] = member
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as exc:
        detail = str(exc) or ("it ends early" if isinstance(exc, EOFError) else repr(exc))
        raise CnnlabError(f"{path} is not a readable .npz file: {detail}") from None
    return found


def check_members(path: Path, members: dict[str, Member]) -> None:
    """Required members, matching lengths, and a memory budget, before any load."""
    for name in ("x_train", "y_train"):
        if name not in members:
            have = ", ".join(members) or "no arrays"
            raise CnnlabError(f"{path} has no {name} (it holds {have}); see docs/data.md")
    if ("x_test" in members) != ("y_test" in members):
        raise CnnlabError(f"{path} has one of x_test and y_test: give both, or neither")
    for split in ("train", "test"):
        x, y = members.get(f"x_{split}"), members.get(f"y_{split}")
        if x is None or y is None:
            continue
        if x.dtype != np.uint8 and x.dtype.kind != "f":
            raise CnnlabError(
                f"{path}: x_{split} is {x.dtype}: give uint8 pixels (0-255) or floats "
                "(used as they are)"
            )
        if len(x.shape) not in KINDS:
            raise CnnlabError(
                f"{path}: x_{split} has shape {x.shape}: give (N, L[, C]) series, "
                "(N, H, W[, C]) images or (N, T, H, W, C) clips"
            )
        if min(x.shape) < 1:
            raise CnnlabError(f"{path}: x_{split} has shape {x.shape}, with nothing in it")
        if y.shape not in ((x.shape[0],), (x.shape[0], 1)):
            one_hot = len(y.shape) == 2 and y.shape[0] == x.shape[0]
            hint = ": labels are class indices or names, not one-hot rows (y.argmax(1))"
            hint = hint if one_hot else ""
            raise CnnlabError(
                f"{path}: y_{split} has shape {y.shape} for {x.shape[0]} inputs{hint}"
            )
    if "x_test" in members and members["x_test"].shape[1:] != members["x_train"].shape[1:]:
        raise CnnlabError(
            f"{path}: x_test has rows of {members['x_test'].shape[1:]}, "
            f"x_train of {members['x_train'].shape[1:]}"
        )
    # Loaded, then converted to float32 (floats) and copied into the splits; a large
    # input is read by rows instead (npz_rows), a batch at a time.
    need = 0
    for key, m in members.items():
        if key.startswith("x_") and lazy(m.nbytes):
            continue
        need += m.nbytes
        if key.startswith("x_"):
            need += 2 * math.prod(m.shape) * (4 if m.dtype.kind == "f" else 1)
    free = available_memory()
    if need > free:
        raise CnnlabError(
            f"{path} declares arrays needing about {need / 1e9:.1f} GB to load and split; "
            f"this machine has {free / 1e9:.1f} GB available (use folder: for data that large)"
        )


def pick(x: Rows, index: np.ndarray) -> Rows:
    """Rows ``index`` of ``x``: copied from an array, a narrower view of a RowView."""
    return x.take(index) if isinstance(x, RowView) else x[index]


def as_inputs(x: Rows, name: str) -> tuple[Rows, str]:
    """Channels-last inputs and what the rank made of them; floats checked, as float32
    (a RowView's floats are float32 and checked already: see npz_rows)."""
    if not isinstance(x, RowView) and x.dtype.kind == "f":
        with np.errstate(over="ignore"):  # what overflows float32 is refused just below
            x = x.astype(np.float32, copy=False)
        for start in range(0, len(x), CHUNK_ROWS):  # a bounded temporary, not a full mask
            finite = np.isfinite(x[start : start + CHUNK_ROWS])
            if not finite.all():
                row = start + int(np.flatnonzero(~finite.reshape(len(finite), -1).all(1))[0])
                raise CnnlabError(
                    f"{name}[{row}] holds NaN or inf (in float32): cnnlab does not impute"
                )
    if x.ndim == 2 or (x.ndim == 3 and x.dtype == np.uint8):
        one = {2: "2-D (N, L): one-channel series", 3: "3-D uint8 (N, H, W): one-channel images"}
        return (x.with_channel() if isinstance(x, RowView) else x[..., np.newaxis]), one[x.ndim]
    what = {3: "(N, L, C) series", 4: "(N, H, W, C) images", 5: "(N, T, H, W, C) clips"}
    return x, what[x.ndim]


def as_labels(
    ys: dict[str, np.ndarray], names: np.ndarray | None, path: Path
) -> tuple[dict[str, np.ndarray], list[str], str]:
    """Labels as int64 class indices, the class names, and how they were read."""
    kinds = {y.dtype.kind for y in ys.values()}
    given = None if names is None else [str(n) for n in np.asarray(names).reshape(-1)]
    if given is not None and (len(set(given)) != len(given) or not given):
        raise CnnlabError(f"{path}: class_names must be distinct names, not {given[:5]}")
    if kinds <= {"U", "S"}:
        text = {k: np.char.decode(y, "utf-8") if y.dtype.kind == "S" else y for k, y in ys.items()}
        seen = set().union(*(set(y.tolist()) for y in text.values()))
        classes = given or sorted(seen, key=natural_key)
        missing = sorted(seen - set(classes), key=natural_key)
        if missing:
            raise CnnlabError(f"{path}: label {missing[0]!r} is not in class_names")
        index = {c: k for k, c in enumerate(classes)}
        out = {k: np.array([index[v] for v in y.tolist()], dtype=np.int64) for k, y in text.items()}
        return out, classes, "strings" + (" (classes in class_names' order)" if given else "")
    if not kinds <= {"i", "u", "f"}:
        raise CnnlabError(f"{path}: labels are {sorted(kinds)}: give integers or strings")
    out = {}
    for k, y in ys.items():
        if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise CnnlabError(f"{path}: {k} holds non-integer values: labels are class indices")
        out[k] = y.astype(np.int64)
        if out[k].size and out[k].min() < 0:
            raise CnnlabError(f"{path}: {k} holds a negative label ({int(out[k].min())})")
    top = max(int(y.max(initial=0)) for y in out.values())
    classes = given or [str(k) for k in range(top + 1)]
    if top >= len(classes):
        raise CnnlabError(f"{path}: a label is {top}, but class_names lists {len(classes)} classes")
    return out, classes, "integers" + (" named by class_names" if given else "")


@register_source("npz")
class NpzSource(Source):
    """``npz:PATH``: x_train, y_train[, x_test, y_test][, class_names] in one .npz file."""

    argument = "PATH"
    summary = "your arrays: x_train, y_train[, x_test, y_test, class_names]"
    order = 70

    def load(self, options: DataOptions) -> Dataset:
        assert self.arg is not None
        path = Path(self.arg).expanduser()
        if path.is_dir():
            raise CnnlabError(f"{path} is not a file: npz:PATH takes an .npz file")
        # fileio's reader: a regular file within the size limit; the checked descriptor is
        # the one read, never the path again.
        # fileio's reader: a regular file; the checked descriptor is the one read for the
        # small members, never the path again. No size cap: large inputs are read by rows.
        with fileio.open_regular(path, fileio.ANY_SIZE) as f:
            members = inspect(path, f)
            check_members(path, members)
            big = {k for k in ("x_train", "x_test") if k in members and lazy(members[k].nbytes)}
            try:
                f.seek(0)
                with np.load(f, allow_pickle=False) as npz:
                    arrays: dict[str, Any] = {k: npz[k] for k in members if k not in big}
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                raise CnnlabError(f"{path} does not load: {exc}") from None
            for k in sorted(big):
                arrays[k] = row_view(path, f, k, members[k].shape, members[k].dtype)
        ys = {k: arrays[k].reshape(-1) for k in ("y_train", "y_test") if k in arrays}
        labels, classes, label_kind = as_labels(ys, arrays.get("class_names"), path)
        if len(classes) < 2:
            raise CnnlabError(f"{path}: labels name a single class ({classes[0]!r}); need two+")
        x, layout = as_inputs(arrays["x_train"], "x_train")
        y = labels["y_train"]
        if "x_test" in arrays:
            x_test, _ = as_inputs(arrays["x_test"], "x_test")
            y_test = labels["y_test"]
            unseen = sorted(set(y_test.tolist()) - set(y.tolist()))
            if unseen:
                raise CnnlabError(
                    f"{path}: y_test holds class {classes[unseen[0]]!r}, y_train none"
                )
            test_record: dict[str, Any] = {"drawn": False, "from": "x_test, y_test"}
        else:
            kept, held = split_indices(
                y, options.seed, options.test_fraction, what="example", one_per_class=True
            )
            x_test, y_test, x, y = pick(x, held), y[held], pick(x, kept), y[kept]
            test_record = {"drawn": True, **split_record(options.seed, options.test_fraction)}
        train, val = split_indices(y, options.seed, options.val_fraction, one_per_class=True)
        splits = Splits(pick(x, train), y[train], pick(x, val), y[val], x_test, y_test)
        kind = KINDS[x.ndim]  # after as_inputs: 3 series, 4 images, 5 clips
        record = {
            "source": "npz",
            "path": str(path.resolve()),
            "arrays": {
                k: {"shape": list(m.shape), "dtype": str(m.dtype)} for k, m in members.items()
            },
            "layout": layout,
            "values": "uint8 pixels (0-255)" if x.dtype == np.uint8 else "floats, as stored",
            "labels": label_kind,
            "val_split": split_record(options.seed, options.val_fraction),
            "test_split": test_record,
            "counts": splits.counts(),
        }
        shape = "x".join(map(str, x.shape[1:]))
        what = f"{len(y) + len(y_test)} {kind} of {shape} from {path}, {len(classes)} classes"
        return Dataset(self.spec, splits, classes, what, kind, x.dtype == np.uint8, record)

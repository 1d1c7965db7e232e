"""UCR/UEA time-series classification archive: find, download, read and split a dataset.

A dataset is the archive's pair ``NAME/NAME_TRAIN.ts``, ``NAME/NAME_TEST.ts``, looked for in
``$CNNLAB_DATA/ucr/`` (or ``data_dir/ucr/``; may be read-only), then in the user cache
``~/.cache/cnnlab/ucr/`` (``$XDG_CACHE_HOME`` honoured), then among the eight that sktime
ships in its package (read in place). A missing one is downloaded as the
archive's zip (size-bounded), its two members extracted to a temporary folder (size-bounded,
unsafe paths refused), parsed, and only then renamed into the cache.

The data lines are parsed by sktime's reader, imported on first use. cnnlab reads the header
itself, bounds file and line sizes before the parse and checks the result after it (channels,
lengths, labels against the header; finite values); every failure is one CnnlabError line.

Unequal lengths are zero-padded at the end to the longest series of TRAIN and TEST together,
``lengths_*`` keeping each true length: padding keeps every measured value at its sampling
rate, where resampling would put each series on its own time scale and invent values
(docs/timeseries-data.md).
"""

from __future__ import annotations

import importlib.util
import os
import re
import tempfile
import urllib.error
import warnings
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import numpy as np

from cnnlab import budget, fileio
from cnnlab.data import store, ts_budget
from cnnlab.data.base import DataOptions, Dataset, Source, Splits, register_source, warn
from cnnlab.data.splits import split_indices, split_record
from cnnlab.data.store import DATA_ENV
from cnnlab.errors import MAX_DIGITS, CnnlabError, check_digits, printable, short
from cnnlab.extras import extra

# Where sktime and aeon fetch the archive: f"{mirror}{NAME}.zip", .ts files at the zip's top.
UCR_MIRRORS: tuple[str, ...] = (
    "https://timeseriesclassification.com/aeon-toolkit/",
    "https://github.com/sktime/sktime-datasets/raw/main/TSC/",
)
MAX_TS_BYTES = fileio.TS_FILE.limit  # one .ts file, on disk or decompressed out of the zip
MAX_ZIP_BYTES = 1 << 30  # one downloaded zip
MAX_HEADER_BYTES = 1 << 20  # everything before @data
SIZE, HOW = f"[1-9][0-9]{{0,{MAX_DIGITS - 1}}}", f"a whole number of at most {MAX_DIGITS} digits"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class TimeSeriesData:
    """A UCR/UEA classification dataset, channels-last, zero-padded at the end.

    Series ``i`` holds measured values in ``x[i, :lengths[i]]`` and zeros after. Labels are
    indices into ``classes``: the ``@classLabel`` strings, sorted (by value where all are
    integers, so that "10" follows "9"; as strings otherwise).
    """

    name: str
    x_train: np.ndarray  # (N_train, T, C) float32, T = longest series in TRAIN and TEST
    y_train: np.ndarray  # (N_train,) int64 in 0..K-1
    x_test: np.ndarray  # (N_test, T, C) float32
    y_test: np.ndarray  # (N_test,) int64 in 0..K-1
    classes: list[str]  # (K,) label strings as the file writes them
    lengths_train: np.ndarray  # (N_train,) int64, true length of each series
    lengths_test: np.ndarray  # (N_test,) int64
    source: Path  # the folder the two files were read from

    @property
    def n_channels(self) -> int:
        return int(self.x_train.shape[2])

    @property
    def n_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class _Header:
    labels: list[str]  # the @classLabel values, as written
    dimensions: int | None  # @dimensions (1 for @univariate true); None when undeclared
    equal_length: bool | None
    series_length: int | None


def _bad(path: Path, problem: str) -> CnnlabError:
    return CnnlabError(f"{path}: {problem}")


def _one_line(exc: BaseException, limit: int = 200) -> str:
    return printable(" ".join(str(exc).split()) or type(exc).__name__, limit)


def default_cache_dir() -> Path:
    return store.default_cache_dir("ucr")


def search_dirs(data_dir: Path | None = None) -> list[Path]:
    """The ``ucr/`` folders searched, most preferred first (:mod:`cnnlab.data.store`)."""
    return store.search_dirs("ucr", data_dir)


def sktime_dir() -> Path | None:
    """The folder of the datasets sktime ships (``NAME/NAME_TRAIN.ts``, eight classification
    sets), or None without sktime; found without importing it (that takes seconds)."""
    spec = importlib.util.find_spec("sktime")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "datasets" / "data"
    return folder if folder.is_dir() else None


def locate(name: str, data_dir: Path | None = None) -> Path | None:
    """The first ``ucr/NAME/`` folder holding either of the dataset's two files; then
    sktime's own copy (:func:`sktime_dir`), read where it lies, before any download."""
    for root in search_dirs(data_dir) + [d for d in [sktime_dir()] if d is not None]:
        folder = root / name
        if any((folder / f"{name}_{split}.ts").exists() for split in ("TRAIN", "TEST")):
            return folder
    return None


def _read_header(path: Path) -> _Header:
    """The metadata lines before ``@data``, case preserved (sktime lower-cases them)."""
    with fileio.open_regular(path, fileio.FileKind(fileio.TS_FILE.noun, MAX_TS_BYTES)) as f:
        head = f.read(MAX_HEADER_BYTES)
    tags: dict[str, list[str]] = {}
    for lineno, raw in enumerate(head.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise _bad(path, f"line {lineno} is not UTF-8 text") from None
        if not line or line.startswith(("#", "%")):  # comments, as sktime skips them
            continue
        if not line.startswith("@"):
            raise _bad(path, f"line {lineno} holds data before the @data line")
        tag, *values = line.split()
        if tag.lower() == "@data":
            break
        tags[tag.lower()] = values
    else:
        raise _bad(path, "has no @data line (truncated, or not a .ts file)")

    def value(tag: str, allowed: str, what: str = "") -> str | None:
        """The tag's first value, lower-cased, or None where the tag is absent."""
        if tag not in tags:
            return None
        if not re.fullmatch(allowed, " ".join(tags[tag][:1]), re.IGNORECASE):
            raise _bad(path, f"{tag} must be {what or allowed}, not {short(' '.join(tags[tag]))}")
        return tags[tag][0].lower()

    flags = {t: value(t, "true|false") for t in ("@timestamps", "@classlabel", "@univariate")}
    equal, length = value("@equallength", "true|false"), value("@serieslength", SIZE, HOW)
    dims = "1" if flags["@univariate"] == "true" else value("@dimensions", SIZE, HOW)
    if flags["@timestamps"] == "true":
        raise _bad(path, "uses @timeStamps true, which cnnlab does not read")
    if flags["@classlabel"] != "true":
        raise _bad(path, "declares no class labels (@classLabel): not a classification dataset")
    labels = tags["@classlabel"][1:]
    if not labels:
        raise _bad(path, "@classLabel true lists no labels")
    for label in (x for x in labels if re.fullmatch(r"[+-]?[0-9]+", x)):  # int() sorts them: bound
        check_digits(label, f"{path}: @classLabel")
    if len({label.lower() for label in labels}) != len(labels):
        raise _bad(path, f"@classLabel repeats a label (ignoring case): {short(' '.join(labels))}")
    equal_length = None if equal is None else equal == "true"
    return _Header(labels, int(dims) if dims else None, equal_length, int(length or 0) or None)


def _parse(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """sktime's reading of the data lines: float64 (T_i, C) cases, lower-cased labels."""
    with extra("timeseries", f"reading {path.name} (UCR/UEA .ts data)"):  # sktime, pandas
        from sktime.datasets import load_from_tsfile_to_dataframe
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame, labels = load_from_tsfile_to_dataframe(
                str(path), return_separate_X_and_y=True, replace_missing_vals_with="NaN"
            )
        cases: list[np.ndarray] = []
        for i, row in enumerate(frame.to_numpy(dtype=object)):  # (N, C) cells of pd.Series
            channels = [np.asarray(cell, dtype=np.float64) for cell in row]
            lengths = sorted({len(c) for c in channels})
            if len(lengths) > 1:
                raise _bad(path, f"case {i + 1} has channels of lengths {lengths}")
            cases.append(np.stack(channels, axis=1))  # (T_i, C)
        return cases, [str(label) for label in labels]
    except CnnlabError:
        raise
    except Exception as exc:  # sktime raises OSError, ValueError, TypeError, NameError...
        raise _bad(path, f"does not parse as a .ts file: {_one_line(exc)}") from None


def _read_ts(path: Path) -> tuple[list[np.ndarray], list[str], _Header]:
    """Cases (T_i, C) float64, their labels as declared, and the header; all checked."""
    header = _read_header(path)
    cases, raw = _parse(path)
    if not cases:
        raise _bad(path, "has no cases after @data")
    declared = {label.lower(): label for label in header.labels}
    for i, label in enumerate(raw):
        if label not in declared:
            raise _bad(path, f"case {i + 1} has label {label[:40]!r}, not declared in @classLabel")
    n_channels = cases[0].shape[1]
    if header.dimensions is not None and n_channels != header.dimensions:
        raise _bad(path, f"declares {header.dimensions} channels but its cases have {n_channels}")
    lo, hi = min(len(c) for c in cases), max(len(c) for c in cases)
    for i, case in enumerate(cases):
        if len(case) == 0:
            raise _bad(path, f"case {i + 1} is empty")
        with np.errstate(over="ignore", invalid="ignore"):  # 1e39: the error below says it
            finite = np.isfinite(case.astype(np.float32)).all()  # also what float32 overflows
        if not finite:
            what = "a missing value ('?' or NaN)" if np.isnan(case).any() else "an infinite value"
            raise _bad(path, f"case {i + 1} has {what} (in float32); cnnlab does not impute")
    if header.equal_length and lo != hi:
        raise _bad(path, f"declares @equalLength true but has lengths {lo}..{hi}")
    if header.equal_length and header.series_length not in (None, lo):
        raise _bad(path, f"declares @seriesLength {header.series_length} but has {lo}")
    return cases, [declared[label] for label in raw], header


def _load_folder(folder: Path, name: str, limit: int = budget.DEFAULT_BYTES) -> TimeSeriesData:
    paths = [folder / f"{name}_{split}.ts" for split in ("TRAIN", "TEST")]
    for path in paths:
        ts_budget.check_file(path, MAX_TS_BYTES)
    ts_budget.check_budget(folder, paths, MAX_HEADER_BYTES, limit)  # before sktime parses
    (tr_cases, tr_labels, tr_head), (te_cases, te_labels, te_head) = map(_read_ts, paths)
    if tr_cases[0].shape[1] != te_cases[0].shape[1]:
        raise CnnlabError(f"{folder}: TRAIN and TEST have different numbers of channels")
    if set(tr_head.labels) != set(te_head.labels):
        raise CnnlabError(f"{folder}: TRAIN and TEST declare different @classLabel lists")
    numeric = all(re.fullmatch(r"[+-]?[0-9]+", label) for label in tr_head.labels)
    classes = sorted(tr_head.labels, key=int if numeric else None)  # "10" after "9"
    if unseen := [c for c in classes if c not in set(tr_labels)]:  # warn: the rest still train
        text = short(" ".join(unseen), 60)
        warn(f"{folder.name}: @classLabel declares {text}, never in TRAIN: cannot be learnt")
    index = {label: k for k, label in enumerate(classes)}
    length = max(len(c) for c in tr_cases + te_cases)
    x_train, lengths_train = ts_budget.pad(tr_cases, length)
    x_test, lengths_test = ts_budget.pad(te_cases, length)
    y_train, y_test = (
        np.array([index[c] for c in ls], dtype=np.int64) for ls in (tr_labels, te_labels)
    )
    return TimeSeriesData(
        name, x_train, y_train, x_test, y_test, classes, lengths_train, lengths_test, folder
    )


def _fetch(url: str, dest: Path, max_bytes: int) -> None:
    """Stream ``url`` into ``dest``, refusing more than ``max_bytes``."""
    store.fetch(url, dest, max_bytes)


def _extract(archive: Path, name: str, dest: Path) -> None:
    """Copy ``NAME_TRAIN.ts`` and ``NAME_TEST.ts`` out of the zip into ``dest``, bounded."""
    wanted = {f"{name}_TRAIN.ts", f"{name}_TEST.ts"}
    try:
        with zipfile.ZipFile(archive) as zf:
            found: dict[str, zipfile.ZipInfo] = {}
            for info in zf.infolist():
                member = PurePosixPath(info.filename.replace("\\", "/"))
                if member.is_absolute() or ".." in member.parts or ":" in info.filename:
                    raise CnnlabError(f"{archive.name}: unsafe member path {info.filename!r}")
                if member.name in wanted and not info.is_dir():
                    found.setdefault(member.name, info)  # the first of that name
            for missing in sorted(wanted - found.keys()):
                raise CnnlabError(f"{archive.name} holds no {missing}")
            for fname, info in found.items():
                with zf.open(info) as src, (dest / fname).open("wb") as out:
                    store.copy_bounded(src, out, MAX_TS_BYTES, f"{archive.name}: {fname}")
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError, zlib.error) as exc:
        raise CnnlabError(f"{archive.name} is not a readable zip: {_one_line(exc)}") from None


def _download(name: str, root: Path, limit: int = budget.DEFAULT_BYTES) -> TimeSeriesData:
    """Fetch, extract and parse ``name`` in a temporary folder, then rename it into ``root``."""
    errors: list[str] = []
    for mirror in UCR_MIRRORS:
        url = f"{mirror}{name}.zip"
        try:
            root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=root) as tmp:
                stage, archive = Path(tmp) / name, Path(tmp) / f"{name}.zip"
                stage.mkdir()
                _fetch(url, archive, MAX_ZIP_BYTES)
                _extract(archive, name, stage)
                loaded = _load_folder(stage, name, limit)  # refuse what does not parse
                dest = root / name
                try:
                    os.replace(stage, dest)  # atomic; fails if another process got there first
                except OSError:
                    if not (dest / f"{name}_TRAIN.ts").is_file():
                        raise
                return replace(loaded, source=dest)
        except CnnlabError as exc:
            errors.append(f"{url}: {exc}")
        except (OSError, ValueError, urllib.error.URLError) as exc:
            errors.append(f"{url}: {_one_line(exc)}")
    raise CnnlabError(
        f"could not download UCR dataset {name} (names are case-sensitive): {'; '.join(errors)}; "
        f"put {name}_TRAIN.ts and {name}_TEST.ts in {root / name}, "
        f"or set {DATA_ENV} to a folder holding ucr/{name}/"
    )


def load_ucr(
    name: str,
    data_dir: Path | None = None,
    *,
    allow_download: bool = True,
    max_memory_bytes: int = budget.DEFAULT_BYTES,
) -> TimeSeriesData:
    """Load UCR/UEA dataset ``name`` (e.g. "GunPoint"), downloading it into the cache if needed;
    refused before parsing past ``max_memory_bytes`` (:mod:`cnnlab.data.ts_budget`)."""
    if not _NAME.fullmatch(name):
        raise CnnlabError(f"invalid UCR dataset name {name!r}: letters, digits, '_' and '-' only")
    folder = locate(name, data_dir)
    if folder is not None:
        return _load_folder(folder, name, max_memory_bytes)
    if not allow_download:
        dirs = search_dirs(data_dir) + [d for d in [sktime_dir()] if d is not None]
        where = ", ".join(str(d / name) for d in dirs)
        raise CnnlabError(f"UCR dataset {name} not found (looked in {where})")
    return _download(name, default_cache_dir(), max_memory_bytes)


def ucr_split_indices(
    y: np.ndarray, seed: int = 42, val_fraction: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded (train, validation) indices into the TRAIN labels ``y``.

    :func:`cnnlab.data.splits.split_indices`: a class with one example goes to train (it
    cannot be stratified, and must be seen in training); refused where a class would be
    left with no train example.
    """
    return split_indices(y, seed, val_fraction, what="TRAIN")


def ucr_splits(
    data: TimeSeriesData, seed: int = 42, val_fraction: float = 0.25
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_val, y_val, x_test, y_test): validation drawn from TRAIN only.

    The TEST file is kept whole for the final score. For the lengths of the same rows,
    index ``data.lengths_train`` with :func:`ucr_split_indices`. ``val_fraction`` 0: no
    split, the published protocol (Wang et al. 2017): train on all of TRAIN, and the
    "validation" rows are TRAIN again, so the model kept is the one of lowest training loss.
    """
    x, y = data.x_train, data.y_train
    if val_fraction == 0:
        return x, y, x, y, data.x_test, data.y_test
    train, val = ucr_split_indices(data.y_train, seed, val_fraction)
    return x[train], y[train], x[val], y[val], data.x_test, data.y_test


@register_source("ucr")
class UcrSource(Source):
    """``ucr:NAME``: a UCR/UEA dataset, (N, T, C) float32 series, TEST kept for the score."""

    argument = "NAME"
    summary = "a UCR/UEA time-series dataset"
    order = 40

    @classmethod
    def parse(cls, spec: str, argument: str | None) -> Source:
        if argument is None or not _NAME.fullmatch(argument):
            raise CnnlabError(
                f"invalid UCR dataset name {argument!r}: letters, digits, '_' and '-' only"
            )
        return cls(spec, argument)

    def load(self, options: DataOptions) -> Dataset:
        assert self.arg is not None
        ts = load_ucr(
            self.arg,
            options.data_dir,
            allow_download=options.allow_download,
            max_memory_bytes=options.max_memory_bytes,
        )
        splits = Splits(*ucr_splits(ts, options.seed, options.val_fraction))
        t, c = ts.x_train.shape[1:]
        what = f"UCR/UEA {ts.name}: {c} channel(s), length {t}, {ts.n_classes} classes"
        record = {
            "source": "ucr",
            "name": ts.name,
            "padding": "zeros at the end, to the longest series of TRAIN and TEST",
            "length": int(t),
            "val_split": split_record(options.seed, options.val_fraction)
            if options.val_fraction
            else {"held_out": False, "validation": f"all of {ts.name}_TRAIN.ts again"},
            "test_split": {"drawn": False, "from": f"{ts.name}_TEST.ts"},
            "counts": splits.counts(),
        }
        return Dataset(self.spec, splits, list(ts.classes), what, "series", False, record)

"""Reading a Keras 3 ``.keras`` file as data only: a bounded zip, its JSON, its HDF5 arrays.

A ``.keras`` file is a zip holding ``config.json`` (the architecture), ``model.weights.h5``
(the weights) and ``metadata.json`` (the Keras version). Every member's size is checked
before it is decompressed, and no read inflates more than its limit, whatever the zip's
headers claim. The JSON is parsed with :func:`json.loads` (no NaN, nothing nested past
Python's recursion limit); the weights are read with h5py as plain arrays, following hard
links only, so no external file is ever opened. No Keras code, no pickle: nothing in the
file is executed.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab import fileio
from cnnlab.errors import CnnlabError
from cnnlab.extras import extra

with extra("keras", "reading a .keras file"):
    import h5py

# Upper bounds, checked before anything is decompressed. The chapter's largest model
# (case 1) is a 0.8 MB file, the zoo's about 60 kB: these leave room, and refuse a zip bomb.
MAX_FILE_BYTES = fileio.KERAS_FILE.limit
MAX_MEMBERS = 1000
MAX_MEMBER_BYTES = {"config.json": 1 << 20, "metadata.json": 64 << 10, "model.weights.h5": 64 << 20}
REQUIRED_MEMBERS = ("config.json", "model.weights.h5")
# What zipfile raises on a damaged archive (RuntimeError: an encrypted member).
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    RuntimeError,
    ValueError,
    NotImplementedError,
)


@dataclass(frozen=True)
class KerasArchive:
    """The parts of a ``.keras`` file an import needs, read and bounded."""

    path: Path
    config: Any  # config.json, parsed
    weights: bytes  # model.weights.h5, still to be read with :class:`Weights`
    sha256: str
    keras_version: str | None


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(data: bytes, what: str) -> Any:
    """``data`` parsed as strict JSON; a one-line CnnlabError naming ``what`` otherwise."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise CnnlabError(f"{what} is nested too deeply") from None
    except UnicodeDecodeError:
        raise CnnlabError(f"{what} is not UTF-8 text") from None
    except ValueError as exc:
        raise CnnlabError(f"{what} is not valid JSON ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _members(path: Path, raw: bytes) -> dict[str, bytes]:
    """The known members' bytes, each size checked before and during decompression."""
    out: dict[str, bytes] = {}
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise CnnlabError(f"{path}: the zip holds {len(infos):,} members; refusing it")
        by_name: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if info.filename in MAX_MEMBER_BYTES and info.filename in by_name:
                raise CnnlabError(f"{path}: the zip holds {info.filename} twice; refusing it")
            by_name[info.filename] = info
        missing = [m for m in REQUIRED_MEMBERS if m not in by_name]
        if missing:
            raise CnnlabError(f"{path} is not a Keras 3 .keras file: it lacks {', '.join(missing)}")
        for name, limit in MAX_MEMBER_BYTES.items():
            if name not in by_name:
                continue
            if by_name[name].file_size > limit:
                raise CnnlabError(
                    f"{path}: {name} would unpack to {by_name[name].file_size:,} bytes "
                    f"(limit {limit:,}); refusing it"
                )
            # At most limit + 1 bytes: a header that lies about the size cannot make us
            # inflate more than the limit.
            with zf.open(by_name[name]) as f:
                data = f.read(limit + 1)
            if len(data) > limit:
                raise CnnlabError(f"{path}: {name} unpacks to more than {limit:,} bytes")
            out[name] = data
    return out


def read_archive(path: Path) -> KerasArchive:
    """Read and bound a ``.keras`` file; CnnlabError (one line, naming it) if it is not one."""
    path = Path(path)
    raw = fileio.read_bounded(path, fileio.KERAS_FILE)  # regular, at most 64 MiB read
    if not zipfile.is_zipfile(io.BytesIO(raw)):
        raise CnnlabError(f"{path} is not a .keras file (not a zip archive)")
    try:
        members = _members(path, raw)
    except CnnlabError:
        raise
    except _ZIP_ERRORS as exc:
        raise CnnlabError(
            f"{path} is a damaged or unsupported zip archive ({_first_line(exc)})"
        ) from None
    config = parse_json(members["config.json"], f"{path}: config.json")
    version = None
    if "metadata.json" in members:
        try:
            meta = parse_json(members["metadata.json"], "metadata.json")
        except CnnlabError:
            meta = None  # informative only; the model itself is checked in full
        found = meta.get("keras_version") if isinstance(meta, dict) else None
        version = found if isinstance(found, str) and len(found) <= 40 else None
    return KerasArchive(
        path=path,
        config=config,
        weights=members["model.weights.h5"],
        sha256=hashlib.sha256(raw).hexdigest(),
        keras_version=version,
    )


class Weights:
    """Plain in-file arrays of a ``model.weights.h5``, looked up by path through hard links."""

    def __init__(self, h5: h5py.File, path: Path) -> None:
        self.h5, self.path = h5, path

    def _node(self, key: str) -> h5py.Group | h5py.Dataset | str:
        """The object at ``key``, or why there is none (a missing name, a link refused)."""
        # One step at a time, hard links only: an external (or soft) link would make HDF5
        # open another file on this machine, or look somewhere the name does not say.
        node: h5py.Group | h5py.Dataset = self.h5
        for part in key.split("/"):
            link = node.get(part, getlink=True) if isinstance(node, h5py.Group) else None
            if link is None:
                return "missing"
            if not isinstance(link, h5py.HardLink):
                kind = {h5py.ExternalLink: "an external link", h5py.SoftLink: "a soft link"}
                return kind.get(type(link), "a link")
            node = node[part]
        return node

    def exists(self, key: str) -> bool:
        """Whether anything at all is linked at ``key`` (of any kind, not followed)."""
        parent, _, last = key.rpartition("/")
        group = self._node(parent) if parent else self.h5
        return isinstance(group, h5py.Group) and group.get(last, getlink=True) is not None

    def array(self, key: str, shape: tuple[int, ...], where: str = "") -> np.ndarray:
        """A float32 copy of dataset ``key``, if it is a plain, finite array of ``shape``.

        ``where`` (the layer it belongs to) is named in every refusal.
        """
        prefix = f"{self.path}: {where}: " if where else f"{self.path}: "
        ds = self._node(key)
        if isinstance(ds, str):
            if ds == "missing":
                raise CnnlabError(f"{prefix}model.weights.h5 has no array at {key}")
            raise CnnlabError(f"{prefix}{key} in model.weights.h5 is {ds}; links are not followed")
        if not isinstance(ds, h5py.Dataset) or ds.is_virtual or ds.external:
            raise CnnlabError(f"{prefix}{key} in model.weights.h5 is not a plain array")
        if tuple(ds.shape) != shape:
            raise CnnlabError(
                f"{prefix}{key} in model.weights.h5 has shape {tuple(ds.shape)}, expected {shape}"
            )
        if ds.dtype.kind != "f":
            raise CnnlabError(f"{prefix}{key} in model.weights.h5 holds {ds.dtype}, not floats")
        arr = np.asarray(ds[()], dtype=np.float32)
        if not np.isfinite(arr).all():
            raise CnnlabError(f"{prefix}{key} in model.weights.h5 holds NaN or infinite weights")
        return arr


@contextmanager
def open_weights(archive: KerasArchive) -> Iterator[Weights]:
    """The archive's weights file, opened from memory (HDF5 errors become one line)."""
    try:
        h5 = h5py.File(io.BytesIO(archive.weights), "r")
    except (OSError, ValueError) as exc:
        raise CnnlabError(
            f"{archive.path}: model.weights.h5 is not a readable HDF5 file ({_first_line(exc)})"
        ) from None
    try:
        yield Weights(h5, archive.path)
    except CnnlabError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CnnlabError(
            f"{archive.path}: model.weights.h5 is damaged ({_first_line(exc)})"
        ) from None
    finally:
        h5.close()

"""Listing a ``folder:`` dataset: class folders, image files, and what is left out.

Layouts (as Keras' ``image_dataset_from_directory`` and torchvision's ``ImageFolder``):

- ``PATH/<class>/...``: one subfolder per class; the test split is drawn later;
- ``PATH/train/<class>/...`` and ``PATH/test/<class>/...``: the splits as given.

Class names are the folder names in natural order ("2" before "10", case ignored), image
files are found at any depth under their class folder, in natural order of their paths.
Hidden entries (dotfiles such as ``.DS_Store`` and ``._x.jpg``, ``__MACOSX``,
``Thumbs.db``, ``desktop.ini``) and files without an image suffix are left out and
counted. Symbolic links are followed; one that loops, dangles (with an image suffix) or
leads to a special file is one error line, as are an empty class folder, a single class
and no class folders.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.data.images import SUFFIXES
from cnnlab.errors import CnnlabError

IGNORED = frozenset(
    {"__MACOSX", "Thumbs.db", "desktop.ini", "@eaDir", "$RECYCLE.BIN", "System Volume Information"}
)
MAX_FILES = 20_000_000
MAX_DEPTH = 64
SPLIT_NAMES = ("train", "test")


def natural_key(text: str) -> tuple[object, ...]:
    """Sort key: digit runs by value, the rest case-insensitively; ties by the raw text."""
    parts = [p for p in re.split(r"([0-9]+)", text) if p]
    key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p.casefold()) for p in parts)
    return (key, text)


def hidden(name: str) -> bool:
    return name.startswith(".") or name in IGNORED


@dataclass(frozen=True)
class ImageFile:
    rel: str  # path relative to the root, "/"-separated
    size: int
    mtime_ns: int
    label: int  # index into the listing's classes
    part: int  # 0: training pool, 1: the test/ folder


@dataclass
class Listing:
    root: Path
    layout: str  # "classes" (one subfolder per class) or "train/test"
    classes: list[str]
    files: list[ImageFile] = field(default_factory=list)
    ignored: int = 0  # files without an image suffix
    hidden: int = 0  # dotfiles and system clutter
    loose: int = 0  # image files outside any class folder

    def digest(self) -> str:
        """SHA-256 of every file's path, size and modification time (the cache's key)."""
        h = hashlib.sha256(f"{self.layout}\n{len(self.classes)}\n".encode())
        for f in self.files:
            h.update(f"{f.part}\0{f.rel}\0{f.size}\0{f.mtime_ns}\n".encode())
        return h.hexdigest()


def _stat(path: Path, rel: str) -> os.stat_result:
    """``os.stat`` (links followed) with one-line errors naming ``rel``."""
    try:
        return os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CnnlabError(f"{rel} is a symbolic link loop") from None
        if exc.errno == errno.ENOENT and os.path.islink(path):
            raise CnnlabError(
                f"{rel} is a dangling symbolic link (to {os.readlink(path)})"
            ) from None
        raise CnnlabError(f"cannot read {rel}: {exc.strerror or exc}") from None


def _entries(folder: Path, rel: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            found = [e for e in it]
    except OSError as exc:
        raise CnnlabError(f"cannot list {rel or folder}: {exc.strerror or exc}") from None
    return sorted(found, key=lambda e: natural_key(e.name))


class _Walker:
    def __init__(self, root: Path, listing: Listing) -> None:
        self.root, self.listing = root, listing

    def is_dir(self, entry: os.DirEntry[str], rel: str) -> bool:
        """Whether ``entry`` is (or links to) a folder; link loops and dangling links fail."""
        if entry.is_symlink():
            mode = _stat(Path(entry.path), rel).st_mode if not self._dangling(entry) else 0
            return stat.S_ISDIR(mode)
        return entry.is_dir(follow_symlinks=False)

    def _dangling(self, entry: os.DirEntry[str]) -> bool:
        """A link to nothing: an error for an image name, left out otherwise."""
        if os.path.exists(entry.path):
            return False
        try:
            os.stat(entry.path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                return False  # a loop: _stat says so
        return Path(entry.name).suffix.lower() not in SUFFIXES

    def walk(
        self, folder: Path, rel: str, label: int, part: int, seen: tuple[tuple[int, int], ...]
    ) -> int:
        """Add the images under ``folder`` (a class folder, at any depth); their count."""
        if len(seen) > MAX_DEPTH:
            raise CnnlabError(f"{rel} is nested more than {MAX_DEPTH} folders deep")
        count = 0
        for entry in _entries(folder, rel):
            name, sub = entry.name, f"{rel}/{entry.name}"
            if hidden(name):
                self.listing.hidden += 1
                continue
            if self.is_dir(entry, sub):
                st = _stat(Path(entry.path), sub)
                ident = (st.st_dev, st.st_ino)
                if ident in seen:
                    raise CnnlabError(
                        f"{sub} is a symbolic link loop: it leads back to a folder above it"
                    )
                count += self.walk(Path(entry.path), sub, label, part, (*seen, ident))
            elif Path(name).suffix.lower() in SUFFIXES:
                st = _stat(Path(entry.path), sub)
                if not stat.S_ISREG(st.st_mode):
                    raise CnnlabError(f"{sub} is not a regular file")
                self.listing.files.append(ImageFile(sub, st.st_size, st.st_mtime_ns, label, part))
                if len(self.listing.files) > MAX_FILES:
                    raise CnnlabError(f"more than {MAX_FILES:,} image files under {self.root}")
                count += 1
            else:
                self.listing.ignored += 1
        return count

    def class_folders(self, folder: Path, rel: str) -> list[tuple[str, Path]]:
        """(name, path) of the class folders in ``folder``; loose files are counted."""
        out = []
        for entry in _entries(folder, rel):
            sub = f"{rel}/{entry.name}" if rel else entry.name
            if hidden(entry.name):
                self.listing.hidden += 1
            elif self.is_dir(entry, sub):
                out.append((entry.name, Path(entry.path)))
            elif Path(entry.name).suffix.lower() in SUFFIXES:
                self.listing.loose += 1
            else:
                self.listing.ignored += 1
        return out


def scan(root: Path) -> Listing:
    """List the dataset under ``root``; one CnnlabError line for what cannot be used."""
    root = Path(root).expanduser()
    if not os.path.lexists(root):
        raise CnnlabError(f"folder {root} not found")
    st = _stat(root, str(root))
    if not stat.S_ISDIR(st.st_mode):
        raise CnnlabError(
            f"{root} is a file, not a folder: folder:PATH takes a folder with one subfolder "
            "per class (or train/ and test/ holding those)"
        )
    listing = Listing(root, "classes", [])
    walker = _Walker(root, listing)
    top = walker.class_folders(root, "")
    names = {name for name, _ in top}
    if set(SPLIT_NAMES) <= names:
        listing.layout = "train/test"
        others = sorted(names - set(SPLIT_NAMES), key=natural_key)
        if others:
            raise CnnlabError(
                f"{root} has train/ and test/ and also {others[0]}/: with train/ and test/, "
                "every class folder goes inside both (validation is drawn from train/)"
            )
        parts = {name: walker.class_folders(path, name) for name, path in top}
    else:
        parts = {"": top}
    train = parts.get("train", parts.get(""))
    assert train is not None
    classes = sorted((name for name, _ in train), key=natural_key)
    listing.classes = classes
    index = {name: k for k, name in enumerate(classes)}
    for part_name, folders in parts.items():
        part = 1 if part_name == "test" else 0
        for name, path in folders:
            rel = f"{part_name}/{name}" if part_name else name
            if name not in index:
                raise CnnlabError(f"{rel}/ is a class that train/ does not have")
            st = _stat(path, rel)
            if walker.walk(path, rel, index[name], part, ((st.st_dev, st.st_ino),)) == 0:
                raise CnnlabError(
                    f"class folder {rel}/ holds no images ({' '.join(SUFFIXES)}); "
                    "remove it or add its images"
                )
    where = f"{root}/train" if listing.layout == "train/test" else str(root)
    if not classes:
        loose = f" ({listing.loose} image files lie at its top level)" if listing.loose else ""
        raise CnnlabError(
            f"{where} holds no class folders{loose}: put each class's images in a subfolder "
            "named after the class"
        )
    if len(classes) == 1:
        raise CnnlabError(
            f"{where} has a single class folder ({classes[0]}/): a classifier needs two or "
            "more, one subfolder per class"
        )
    return listing

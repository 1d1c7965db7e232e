"""What a UCR/UEA ``.ts`` pair costs in memory: counted before parsing, then the padding.

sktime's reader splits a line into Python strings, and :mod:`cnnlab.data.ucr` pads every
series to the longest: a 10 MB file with one series of 5,000,000 values among 300 short
ones claims 6 GB. Counting the separators of each line while streaming the file gives both
figures first, and :func:`check_budget` refuses them in one line (:mod:`cnnlab.budget`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from cnnlab import budget, fileio
from cnnlab.errors import CnnlabError

CHUNK = 1 << 20
MAX_LINE_BYTES = 64 << 20  # one line (one case) of a .ts file
PARSE_BYTES_PER_VALUE = 100  # peak bytes sktime's reader holds per value of its longest line
_DATA_LINE = re.compile(rb"(?im)^[ \t]*@data\b[^\n]*\n?")


def check_file(path: Path, max_bytes: int) -> None:
    """Refuse what is no bounded text file, streaming it: no line is held in memory."""
    if not os.path.lexists(path):
        raise CnnlabError(f"{path}: not found")
    # fileio's reader: a regular file (no FIFO, device, socket) within the size limit
    kind = fileio.FileKind(fileio.TS_FILE.noun, max_bytes)
    total, run = 0, 0  # run: bytes of the line still open at the end of the previous chunk
    with fileio.open_regular(path, kind) as f:
        while chunk := f.read(CHUNK):
            total += len(chunk)
            if total > max_bytes:  # it grew since fstat, or lies about its size
                raise CnnlabError(f"{path}: holds more than {kind.noun} may ({max_bytes:,} bytes)")
            if b"\0" in chunk:
                raise CnnlabError(f"{path}: contains NUL bytes: not a text file")
            newlines = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
            gaps = np.diff(np.concatenate([[-run - 1], newlines, [len(chunk)]])) - 1
            run = int(gaps[-1])  # gaps: lengths of the lines in (or open across) the chunk
            if gaps.max() > MAX_LINE_BYTES:
                raise CnnlabError(f"{path}: has a line longer than {MAX_LINE_BYTES} bytes")
    if total == 0:
        raise CnnlabError(f"{path}: is empty")


def value_counts(path: Path, header_bytes: int) -> np.ndarray:
    """Values on each data line (after ``@data``), counted while streaming the file.

    A case ``v,v:v,v:label`` holds as many values as separators (',' and ':'; the label's
    ':' stands for the last value's missing ','), so the counts bound what parsing and
    padding will allocate before either starts.
    """
    with fileio.open_regular(path, fileio.TS_FILE) as f:  # regular, bounded
        head = f.read(header_bytes)
    at = _DATA_LINE.search(head)
    if at is None:  # no @data line: _read_header says so in its own words
        return np.zeros(0, dtype=np.int64)
    counts: list[np.ndarray] = []
    run = 0  # separators on the line still open at the end of the previous chunk
    with fileio.open_regular(path, fileio.TS_FILE) as f:  # regular, bounded
        f.seek(at.end())
        while chunk := f.read(CHUNK):
            data = np.frombuffer(chunk, dtype=np.uint8)
            seps = np.cumsum((data == ord(",")) | (data == ord(":")), dtype=np.int64)
            ends = np.flatnonzero(data == ord("\n"))
            if not len(ends):
                run += int(seps[-1])
                continue
            per_line = np.diff(seps[ends], prepend=0)
            per_line[0] += run
            counts.append(per_line)
            run = int(seps[-1] - seps[ends[-1]])
    lines = np.concatenate(counts + [np.array([run], dtype=np.int64)])
    return lines[lines > 0]  # blank and comment lines hold none


def check_budget(folder: Path, paths: list[Path], header_bytes: int, limit: int) -> None:
    """Refuse a pair of files whose parse or padded arrays would exceed ``limit`` bytes."""
    counts = [value_counts(path, header_bytes) for path in paths]
    rows = sum(len(c) for c in counts)
    longest = max((int(c.max()) for c in counts if len(c)), default=0)
    total = sum(int(c.sum()) for c in counts)
    # sktime splits a line into Python strings (~85 bytes a value, measured), then holds
    # float64 Series; cnnlab copies them to float64 cases and checks them in float32.
    budget.check(
        longest * PARSE_BYTES_PER_VALUE + total * 8 * 3,
        f"{folder}: parsing {total:,} values (the longest case {longest:,})",
        limit,
    )
    budget.check(
        rows * longest * budget.FLOAT,
        f"{folder}: padding {rows:,} series to {longest:,} values each",
        limit,
    )


def pad(cases: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Cases (T_i, C) -> zero-padded float32 (N, length, C) and int64 lengths (N,)."""
    x = np.zeros((len(cases), length, cases[0].shape[1]), dtype=np.float32)
    for i, case in enumerate(cases):
        x[i, : len(case)] = case
    return x, np.array([len(c) for c in cases], dtype=np.int64)

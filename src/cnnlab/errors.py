"""User-facing errors: the CLI prints their message in one line and exits non-zero."""

from __future__ import annotations

import unicodedata

MAX_DIGITS = 18  # digits a number written as text may have (int64 holds 18 for sure)
MAX_FLOAT_CHARS = 40  # a float's text: 17 significant digits, sign, zeros, point, exponent
MAX_LINE = 1000  # characters of one printed error line before it is shortened


class CnnlabError(Exception):
    """A problem the user can fix (bad path, corrupt file, bad flag value).

    The command line prints ``cnnlab: error: <message>`` with no traceback.
    """


def _escape(char: str) -> str:
    """A control, format or separator character as a visible escape (\\n, \\x1b, \\u2028)."""
    if char == "\n":
        return "\\n"
    if char == "\t":
        return "\\t"
    if char == "\r":
        return "\\r"
    code = ord(char)
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )


def printable(text: object, limit: int = MAX_LINE) -> str:
    """``text`` as one printable line: control characters (newlines, terminal escapes)
    escaped, and past ``limit`` characters its start and its length, e.g.
    ``'xxxx… (1,048,576 characters)'``."""
    raw = str(text)
    size = len(raw)
    head = raw[: limit + 1]  # escape only what may be shown: a 1 MB value costs nothing
    out = "".join(
        _escape(c) if c != " " and unicodedata.category(c)[0] in "CZ" else c for c in head
    )
    if size <= limit and len(out) <= limit:
        return out
    return f"{out[:limit]}… ({size:,} characters)"


def short(value: object, limit: int = 80) -> str:
    """``repr(value)`` made printable and cut at ``limit`` characters (for one value)."""
    return printable(repr(value), limit)


def check_digits(text: str, what: str, limit: int = MAX_DIGITS) -> None:
    """Refuse a number written with more than ``limit`` digits, before int() or float()
    meets it (int() refuses past 4,300 digits, and is quadratic up to there)."""
    digits = sum(c.isdigit() for c in text)
    if digits > limit:
        raise CnnlabError(f"{what}: {printable(text, 40)} has {digits:,} digits; at most {limit}")

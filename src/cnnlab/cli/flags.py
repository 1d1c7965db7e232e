"""The CLI's flag types: numbers with bounded digits and stated ranges, a non-empty --model.

argparse calls these on the text; a refusal is argparse's one line, exit 2.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

from cnnlab.errors import MAX_DIGITS, MAX_FLOAT_CHARS, printable

MAX_COUNT = 1_000_000_000  # any count flag: far past every use, far inside int64
MAX_SEED = 2**32 - 1


def whole_number(text: str, lo: int, hi: int) -> int:
    """``text`` as an int in [lo, hi]; its digits bounded before int() reads them."""
    t = text.strip()
    if not re.fullmatch(rf"[+-]?[0-9]{{1,{MAX_DIGITS}}}", t):
        if re.fullmatch(r"[+-]?[0-9]+", t):
            raise argparse.ArgumentTypeError(f"must be at most {hi:,}, got {len(t):,} digits")
        raise argparse.ArgumentTypeError(
            f"expected a whole number, got {printable(repr(text), 60)}"
        )
    value = int(t)
    if value < lo:
        raise argparse.ArgumentTypeError(f"must be at least {lo}, got {value}")
    if value > hi:
        raise argparse.ArgumentTypeError(f"must be at most {hi:,}, got {value:,}")
    return value


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``lo`` to ``hi``, stated when refused."""

    def parse(text: str) -> int:
        return whole_number(text, lo, hi)

    parse.__name__ = f"int_in_{lo}_{hi}"
    return parse


def positive_int(text: str) -> int:
    return whole_number(text, 1, MAX_COUNT)


def non_negative_int(text: str) -> int:
    return whole_number(text, 0, MAX_COUNT)


def positive_float(text: str) -> float:
    if len(text) > MAX_FLOAT_CHARS:  # float() takes any length; the echo should not
        raise argparse.ArgumentTypeError(f"expected a number, got {len(text):,} characters")
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """0 or a positive, finite number (an interval; 0: off)."""
    if text.strip() in ("0", "0.0"):
        return 0.0
    return positive_float(text)


def plateau_factor(text: str) -> float:
    """ReduceLROnPlateau's factor: 0 (off) or more, below 1 (not NaN, not infinite)."""
    value = 1.0 if len(text) > MAX_FLOAT_CHARS else None
    try:
        value = float(text) if value is None else value
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or more, below 1, got {text:.40}")
    return value


def seed_int(text: str) -> int:
    return whole_number(text, 0, MAX_SEED)


def model_arg(text: str) -> str:
    """--model as given; an empty one is refused (it used to mean case 1, silently)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty network; name one, or leave --model out")
    return text

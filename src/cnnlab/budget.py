"""A memory budget, checked from the shapes before anything is allocated.

A valid-looking input can still claim more memory than the machine has: a ``.ts`` file whose
one long series pads every other one, a network whose single example fits but whose training
batch does not, a ``predict --array`` file converted whole. Each place that is about to
allocate from such shapes asks :func:`check` first; a refusal is one line naming the figure,
the limit and the option that raises it (``--max-memory-gb``, the same on every command).

The estimates are deliberately simple upper bounds in float32 values (4 bytes each):

- a dataset as held: every value, padding included;
- one training batch: ``batch x (input + every layer's output) x 3`` (the forward
  activations, their gradients, and the engine's saved buffers) plus ``params x 4`` (the
  weights, their gradients and Adam's two moments);
- one inference chunk: ``chunk x 3 x the largest of the input and the layers' outputs``
  plus the weights: without gradients a layer's input is freed once it has run, so a layer's
  input, its output and a residual branch are what is alive at once.

The default, 3 GB, leaves room for torch itself under the 4 GB a small machine has.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any

from cnnlab.errors import CnnlabError

OPTION = "--max-memory-gb"
DEFAULT_GB = 3.0
DEFAULT_BYTES = int(DEFAULT_GB * 1e9)
MAX_GB = 1e6  # a petabyte: beyond it the option is a typo, and turns the budget off in effect
FLOAT = 4  # bytes of one float32 value
TRAIN_FACTOR = 3  # activations, their gradients, saved buffers
LIVE_FACTOR = 3  # maps alive at once in a forward pass without gradients
ADAM_FACTOR = 4  # weights, gradients, Adam's m and v


def gigabytes(n: float) -> str:
    """``n`` bytes for a message: "11.2 GB", "12.6 MB" below 0.1 GB, "9,000 bytes" below
    0.1 MB (a limit given in GB can be that small)."""
    if n >= 1e8:
        return f"{n / 1e9:,.1f} GB"
    return f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n:,.0f} bytes"


def check(need: float, what: str, limit: int = DEFAULT_BYTES, hint: str = "") -> None:
    """Refuse, in one line, ``what`` that ``needs`` more bytes than ``limit``.

    ``what`` says what would be allocated ("padding 300 series to 5,000,000 values each");
    ``hint`` an alternative to raising the limit ("or a smaller --batch-size").
    """
    if need > limit:
        how = f"{OPTION} to raise it" + (f", {hint}" if hint else "")
        raise CnnlabError(
            f"{what} needs {gigabytes(need)}; the limit is {gigabytes(limit)} ({how})"
        )


def parse_gb(text: str) -> float:
    """``--max-memory-gb``'s value: a positive number of GB, at most :data:`MAX_GB`."""
    if len(text) > 32:
        raise argparse.ArgumentTypeError(f"not a number of GB ({len(text)} characters)")
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of GB: {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= MAX_GB):
        raise argparse.ArgumentTypeError(f"must be in (0, {MAX_GB:,.0f}] GB, got {text!r}")
    return value


def add_option(p: argparse.ArgumentParser | Any) -> None:
    """Add ``--max-memory-gb`` to a parser (or argument group)."""
    p.add_argument(
        OPTION,
        type=parse_gb,
        default=DEFAULT_GB,
        metavar="GB",
        help="refuse, before allocating, a dataset, training batch or inference chunk "
        f"estimated to need more memory than this (default: {DEFAULT_GB:g})",
    )


def limit_bytes(args: argparse.Namespace) -> int:
    """The budget the parsed flags give, in bytes (the default where the command has none)."""
    return int(getattr(args, "max_memory_gb", DEFAULT_GB) * 1e9)


def _values(desc: Any) -> tuple[list[int], int]:
    """(values of one example's input and of every layer's output, parameters) of a
    :class:`~cnnlab.models.ModelDescription`."""
    values = [math.prod(desc.input_shape)] + [math.prod(i.out_shape) for i in desc.info]
    params = sum(i.trainable + i.non_trainable for i in desc.info)
    return values, params


def training_bytes(desc: Any, batch_size: int) -> int:
    """Estimated bytes to train ``desc`` on one batch (module docstring)."""
    values, params = _values(desc)
    return batch_size * sum(values) * FLOAT * TRAIN_FACTOR + params * FLOAT * ADAM_FACTOR


def inference_bytes(desc: Any, chunk: int) -> int:
    """Estimated bytes to run ``desc`` forward on one chunk of ``chunk`` examples."""
    values, params = _values(desc)
    return chunk * max(values) * FLOAT * LIVE_FACTOR + params * FLOAT


def fit_chunk(desc: Any, wanted: int, limit: int, doing: str = "running") -> int:
    """The largest chunk up to ``wanted`` whose forward pass fits ``limit`` (halved from
    ``wanted``): a chunk only sets how much runs at once, never a result. Refused, in one
    line, where one example's would not fit."""
    check_inference(desc, 1, limit, doing)
    chunk = max(1, wanted)
    while chunk > 1 and inference_bytes(desc, chunk) > limit:
        chunk //= 2
    return chunk


def fit_eval_chunk(config: Any, desc: Any, limit: int) -> Any:
    """A training config with an evaluation chunk (``eval_batch_size``) that fits ``limit``:
    long series and large images are evaluated fewer at a time, to the same numbers."""
    chunk = fit_chunk(desc, config.eval_batch_size, limit, "evaluating")
    return dataclasses.replace(config, eval_batch_size=chunk)


def check_training(desc: Any, batch_size: int, eval_chunk: int, limit: int) -> None:
    """Refuse a network whose training batch or evaluation chunk would exceed ``limit``."""
    check(
        training_bytes(desc, batch_size),
        f"training {desc.name} on batches of {batch_size:,}",
        limit,
        "or a smaller --batch-size",
    )
    check_inference(desc, eval_chunk, limit, "evaluating")


def check_inference(desc: Any, chunk: int, limit: int, doing: str = "running") -> None:
    """Refuse a network whose forward pass over ``chunk`` examples would exceed ``limit``."""
    check(inference_bytes(desc, chunk), f"{doing} {desc.name} on chunks of {chunk:,}", limit)

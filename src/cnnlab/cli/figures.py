"""The ``cnnlab figures`` sub-command: write the chapter's figures to a folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cnnlab.figures.writer import FIGURES, write_figures


def register(sub: Any) -> None:
    """Add ``figures [--out DIR] [--only NAME ...]`` to the ``cnnlab`` sub-parsers."""
    p = sub.add_parser(
        "figures",
        help="draw the chapter's figures from cnnlab.ops (PNG, GIF for the sliding ones)",
        description=(
            "Write the figures of section 14.2 (correlation vs convolution, padding, strides, "
            "dilation, pooling, the multi-channel case, ...) as PNG, the sliding ones also as "
            "GIF, plus figures.json with every number drawn."
        ),
    )
    p.add_argument(
        "--out",
        type=folder_path,
        default=Path("figures"),
        metavar="DIR",
        help="folder to write into, created if needed (default: figures/)",
    )
    p.add_argument(
        "--only",
        action="append",
        choices=list(FIGURES),
        metavar="NAME",
        help="write only this figure (repeatable); one of: " + ", ".join(FIGURES),
    )
    p.set_defaults(func=cmd_figures)


def folder_path(text: str) -> Path:
    """--out DIR: an empty one would silently mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (the current folder?); name a folder")
    return Path(text)


def cmd_figures(args: argparse.Namespace) -> int:
    """Write the figures (progress per figure: a bar on a terminal, else a line each, on
    stderr: stdout stays one path per line, for a pipe), then print the paths."""
    from cnnlab.cli.progress import Progress

    count = len(set(args.only)) if args.only else len(FIGURES)
    prog = Progress(Progress.of(args).bars, say=lambda line: print(line, file=sys.stderr))
    from cnnlab.train import runs

    with runs.writing([args.out], "figures"), prog.items("figure", count) as done:
        paths = write_figures(args.out, args.only, done)
    for path in paths:
        print(path)
    return 0

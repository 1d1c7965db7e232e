"""The ``cnnlab`` command: one sub-command per feature module.

Each module listed in ``COMMANDS`` exposes ``register(subparsers)``, which adds its
sub-command(s) and sets ``func`` (taking the parsed ``argparse.Namespace`` and
returning an exit code) as the parser default.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from cnnlab import __version__
from cnnlab.errors import CnnlabError, printable

# Modules that contribute sub-commands, in the order ``cnnlab --help`` lists them.
COMMANDS: tuple[str, ...] = (
    "cnnlab.cli.core",
    "cnnlab.cli.compare",
    "cnnlab.cli.interop",
    "cnnlab.cli.predict",
    "cnnlab.cli.mechanism",
    "cnnlab.cli.explain",
    "cnnlab.cli.perf",
    "cnnlab.cli.figures",
)


class Parser(argparse.ArgumentParser):
    """Bad flags end in one line naming the problem, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        # argparse echoes a bad value whole (a 5,000-digit number, a terminal escape)
        self.exit(2, f"{self.prog}: error: {printable(message, 400)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="cnnlab",
        description="Convolutional neural networks made real, verifiable and fast.",
    )
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):  # into a log or a pipe, as on a terminal:
        sys.stdout.reconfigure(line_buffering=True)  # each epoch's line when it is written
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CnnlabError as exc:
        # the one place errors reach the terminal: one line, escaped and shortened
        print(f"cnnlab: error: {printable(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (cnnlab predict ... | head): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own advice: no error at exit either
        return 141


if __name__ == "__main__":
    sys.exit(main())

"""The ``cnnlab`` command line."""

from cnnlab.cli.main import build_parser, main

__all__ = ["build_parser", "main"]

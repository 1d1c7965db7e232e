"""The ``cnnlab mechanism`` sub-command: the mechanism page alone, no trained run needed."""

from __future__ import annotations

import argparse
from typing import Any

from cnnlab.cli.predict import add_address_args


def register(sub: Any) -> None:
    """Add ``mechanism`` with the server address flags of ``serve``."""
    p = sub.add_parser(
        "mechanism",
        help="a web page that slides a convolution over small grids (no trained run needed)",
        description=(
            "Serve the mechanism page: choose input and kernel size, padding, stride, "
            "dilation and pooling in 1-D or 2-D, step the window and see every number, as "
            "cnnlab.ops computes it. The same page is at /mechanism under cnnlab serve."
        ),
    )
    add_address_args(p)
    p.set_defaults(func=cmd_mechanism)


def cmd_mechanism(args: argparse.Namespace) -> int:
    """Serve the page until interrupted; print its address once it listens."""
    from cnnlab.extras import require

    require("serve", "cnnlab mechanism")
    from cnnlab.serving.guards import ServerOptions
    from cnnlab.serving.mechanism import create_app
    from cnnlab.serving.server import bind, raise_fd_limit, run

    options = ServerOptions(
        bound_host=args.host,
        allow_hosts=tuple(args.allow_host),
        allow_origins=tuple(args.allow_origin),
    )
    raise_fd_limit()
    socks = bind(args.host, args.port)  # a busy port or a bad host: a CnnlabError
    try:
        port = socks[0].getsockname()[1]
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"mechanism page on http://{host}:{port}/mechanism; Ctrl-C stops", flush=True)
        run(create_app(options), socks)
    finally:
        for sock in socks:
            sock.close()
    return 0

"""Sub-commands for one's own digits: ``predict`` (image files) and ``serve`` (web page)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cnnlab import fileio
from cnnlab.cli.core import positive_int
from cnnlab.errors import CnnlabError


def port_number(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number up to 65535, got {value}")
    return value


def add_invert_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--invert",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="treat images as dark-on-light (--invert) or light-on-dark (--no-invert); "
        "default: detect from the border",
    )


def register(sub: Any) -> None:
    p = sub.add_parser("predict", help="predict the digits in image files with a trained run")
    p.add_argument(
        "run_dir", type=Path, metavar="RUN_DIR", help="a finished run folder (its best.pt is used)"
    )
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files or folders")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument(
        "--show-input",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the 28x28 image the network saw for each image into DIR",
    )
    add_invert_arg(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("serve", help="a web page to draw digits and watch the network predict")
    p.add_argument(
        "run_dir", type=Path, metavar="RUN_DIR", help="a finished run folder (its best.pt is used)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=8000, help="port (default: 8000)")
    p.add_argument(
        "--max-upload-mb", type=positive_int, default=4, help="largest upload in MiB (default: 4)"
    )
    p.add_argument(
        "--max-megapixels",
        type=positive_int,
        default=16,
        help="largest image in millions of pixels (default: 16)",
    )
    p.set_defaults(func=cmd_serve)


def cmd_predict(args: argparse.Namespace) -> int:
    from cnnlab.data.preprocess import ImageRejected, list_images, to_png
    from cnnlab.serving.predict import Predictor

    predictor = Predictor.from_run(args.run_dir)
    paths = list_images(args.images)
    if args.show_input is not None:
        try:
            args.show_input.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CnnlabError(f"cannot create {args.show_input}: {exc.strerror or exc}") from exc
    results: list[dict[str, Any]] = []
    failed = 0
    used_names: set[str] = set()
    for path in paths:
        try:
            (pred,) = predictor.predict_files([path], invert=args.invert)
        except ImageRejected as exc:
            print(f"cnnlab: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        results.append(pred.to_dict())
        if args.show_input is not None:
            name = _unique(f"{path.stem}.input.png", used_names)
            fileio.write_bytes(args.show_input / name, to_png(pred.input))
        if not args.json:
            probs = " ".join(f"{d}:{p:.3f}" for d, p in enumerate(pred.probabilities))
            flag = "  (inverted)" if pred.inverted else ""
            print(f"{path}  digit {pred.digit}  p={pred.probabilities[pred.digit]:.3f}{flag}")
            print(f"    {probs}")
    if args.json:
        print(json.dumps(results, indent=2))
    if args.show_input is not None and results:
        print(f"wrote {len(results)} network input(s) to {args.show_input}/", file=sys.stderr)
    if failed:
        raise CnnlabError(f"{failed} of {len(paths)} image(s) could not be used")
    return 0


def _unique(name: str, used: set[str]) -> str:
    """``name``, or ``stem-2.input.png``... when two images share a file name."""
    stem = name.removesuffix(".input.png")
    k = 1
    while name in used:
        k += 1
        name = f"{stem}-{k}.input.png"
    used.add(name)
    return name


def cmd_serve(args: argparse.Namespace) -> int:
    from cnnlab.data.preprocess import ImageLimits
    from cnnlab.serving.predict import Predictor
    from cnnlab.serving.serve import serve

    predictor = Predictor.from_run(args.run_dir)
    limits = ImageLimits(
        max_bytes=args.max_upload_mb * 1024 * 1024, max_pixels=args.max_megapixels * 1_000_000
    )
    print(
        f"serving {predictor.case} from {args.run_dir} on http://{args.host}:{args.port}/ "
        f"(API docs at /docs); Ctrl-C stops"
    )
    serve(predictor, host=args.host, port=args.port, limits=limits)
    return 0

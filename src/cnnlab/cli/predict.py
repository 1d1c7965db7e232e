"""Sub-commands for one's own data: ``predict`` (image files or a .npy array), ``serve``.

``cnnlab predict RUN_DIR IMAGE...`` reads image files the run's way (any 2-D image network:
:mod:`cnnlab.train.run_inputs`); ``--array X.npy`` reads the array without trusting it
(:mod:`cnnlab.cli.npy`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab import budget, fileio
from cnnlab.cli.core import non_negative_int, positive_int
from cnnlab.cli.npy import array_probs, open_npy
from cnnlab.errors import CnnlabError

if TYPE_CHECKING:
    from cnnlab.serving.predict import Predictor

TABLE_CLASSES = 10  # a table row lists every class up to this many, else the top ones
TOP_CLASSES = 3


def port_number(text: str) -> int:
    """A TCP port, 0 to 65535 (0: the system picks a free one, printed once listening)."""
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number up to 65535, got {value}")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600 s, got {text}")
    return value


def origin_arg(text: str) -> str:
    """An origin as browsers send it: scheme://host[:port], or * (any), or null."""
    from urllib.parse import urlsplit

    if text in ("*", "null"):
        return text
    try:
        parts = urlsplit(text.rstrip("/"))
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        ok = ok and not (parts.path or parts.query or parts.fragment or parts.username)
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(
            f"must be an origin such as https://example.org or http://host:8080, got {text!r}"
        )
    return text.rstrip("/").lower()


def host_arg(text: str) -> str:
    """A host name the server answers to: name, name:port, [v6]:port, or * (any)."""
    from cnnlab.extras import MissingExtra, extra

    try:  # parsed before any command runs: argparse's one line, not a traceback
        with extra("serve", "--allow-host (cnnlab serve, mechanism)"):
            from cnnlab.serving.guards import bad_hosts
    except MissingExtra as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None

    if bad_hosts([text]):
        raise argparse.ArgumentTypeError(
            f"must be a host name such as example.org or example.org:8443, got {text!r}"
        )
    return text.lower()


def add_invert_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--invert",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="for runs trained on MNIST digits: treat images as dark-on-light (--invert) or "
        "light-on-dark (--no-invert); default: detect from the border",
    )


def add_address_args(p: argparse.ArgumentParser) -> None:
    """Where a web server listens and whom it answers: --host, --port, --allow-origin,
    --allow-host (``serve`` and ``mechanism``)."""
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument(
        "--port", type=port_number, default=8000, help="port (default: 8000; 0: any free one)"
    )
    p.add_argument(
        "--allow-origin",
        type=origin_arg,
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a foreign origin whose pages may call the API, e.g. https://example.org "
        "(repeatable; * allows any); other cross-origin requests get a 403",
    )
    p.add_argument(
        "--allow-host",
        type=host_arg,
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the server answers to besides --host and localhost, e.g. the "
        "public name behind a reverse proxy (NAME or NAME:PORT, repeatable; * for any)",
    )


def register(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="predict with a trained run: image files (any image network), or inputs in a .npy",
    )
    p.add_argument(
        "run_dir", type=Path, metavar="RUN_DIR", help="a finished run folder (its best.pt is used)"
    )
    p.add_argument(
        "images",
        type=Path,
        nargs="*",
        metavar="IMAGE",
        help="image files or folders of them (for a network that takes H x W x 1, 3 or 4 "
        "images), made as the run's own images were",
    )
    p.add_argument(
        "--array",
        type=Path,
        default=None,
        metavar="X.npy",
        help="a .npy array of inputs in Keras' channels-last layout, (N, *input_shape) or one "
        "input: uint8 arrays are pixels, scaled as the run's (/255, or raw for a network "
        "that begins with Rescaling); float arrays are taken as network inputs",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list (label, class_index, probabilities) instead of a table",
    )
    budget.add_option(p)
    p.add_argument(
        "--show-input",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the image the network saw for each file into DIR (PNG; in colour for "
        "a colour network)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse (exit 2) at the first image that does not decode (default: skip it "
        "with one line, and fail only if none decodes)",
    )
    add_invert_arg(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "serve",
        help="a web page: upload or drop an image (or draw a digit) and watch the network predict",
    )
    p.add_argument(
        "run_dir", type=Path, metavar="RUN_DIR", help="a finished run folder (its best.pt is used)"
    )
    add_address_args(p)
    p.add_argument(
        "--max-upload-mb", type=positive_int, default=4, help="largest upload in MiB (default: 4)"
    )
    p.add_argument(
        "--max-megapixels",
        type=positive_int,
        default=16,
        help="largest image in millions of pixels (default: 16)",
    )
    p.add_argument(
        "--max-uploads",
        type=positive_int,
        default=16,
        help="full-size uploads held in memory at once; more wait, then get a 503 (default: 16)",
    )
    p.add_argument(
        "--max-connections",
        type=positive_int,
        default=512,
        help="open connections; past it the longest-idle one is closed (default: 512)",
    )
    p.add_argument(
        "--header-timeout",
        type=positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="time a client has to send a request's headers (default: 10)",
    )
    p.add_argument(
        "--body-timeout",
        type=positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="time a client has to send a request's body (default: 30)",
    )
    p.set_defaults(func=cmd_serve)


def cmd_predict(args: argparse.Namespace) -> int:
    from cnnlab.serving.predict import Predictor

    if bool(args.images) == (args.array is not None):
        raise CnnlabError(
            "give image files (IMAGE ...) or --array X.npy, not both"
            if args.images
            else "give image files (IMAGE ...) or --array X.npy to predict on"
        )
    if args.array is not None and (
        args.show_input is not None or args.invert is not None or args.strict
    ):
        raise CnnlabError("--show-input, --invert and --strict are for image files, not --array")
    predictor = Predictor.from_run(args.run_dir)
    if args.array is not None:
        return _predict_array(predictor, args.array, args.json, budget.limit_bytes(args))
    return _predict_images(predictor, args)


def _name(predictor: Predictor, k: int) -> str:
    """Class ``k`` for a table: its name, or "class 3" for a run without names."""
    return predictor.class_names[k] if predictor.named else f"class {k}"


def _spread(predictor: Predictor, p: np.ndarray) -> str:
    """The probabilities line: every class where there are few, else the top three."""
    if len(p) <= TABLE_CLASSES:
        order: Any = range(len(p))
        lead = "    "
    else:
        order = np.argsort(-p, kind="stable")[:TOP_CLASSES]
        lead = f"    top {TOP_CLASSES}: "
    sep = "  " if predictor.named else " "
    return lead + sep.join(f"{predictor.class_names[c]}:{p[c]:.3f}" for c in order)


def _predict_array(predictor: Predictor, path: Path, as_json: bool, limit: int) -> int:
    x = open_npy(path)
    try:
        probs = array_probs(predictor, x, limit)
    except CnnlabError as exc:
        raise CnnlabError(f"{path}: {exc}") from None
    classes = [int(k) for k in probs.argmax(axis=1)]
    if as_json:
        rows = [
            {
                "label": predictor.class_names[k],
                "class_index": k,
                "class": k,
                "probabilities": [float(v) for v in p],
            }
            for p, k in zip(probs, classes, strict=True)
        ]
        print(json.dumps(rows, indent=2))
        return 0
    width = len(str(max(len(probs) - 1, 0)))
    for i, (p, k) in enumerate(zip(probs, classes, strict=True)):
        print(f"input {i:>{width}}  {_name(predictor, k)}  p={p[k]:.3f}")
        print(_spread(predictor, p))
    return 0


def _predict_images(predictor: Predictor, args: argparse.Namespace) -> int:
    from cnnlab.data.preprocess import ImageRejected, list_images
    from cnnlab.train.run_inputs import image_png

    predictor.require_images("predicting image files")
    if args.invert is not None and not predictor.digits:
        raise CnnlabError(
            "--invert and --no-invert are for runs trained on MNIST digits; this run reads "
            f"images as it was trained ({predictor.recipe.describe()})"
        )
    paths = list_images(args.images)
    if args.show_input is not None:
        from cnnlab.train import runs

        held = runs.run_folder_of(args.show_input)  # its pictures into a held run: refused
        if held is not None:
            runs.check_unlocked(held, "predict")
        try:
            args.show_input.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CnnlabError(f"cannot create {args.show_input}: {exc.strerror or exc}") from exc
    results: list[dict[str, Any]] = []
    used_names: set[str] = set()
    for path in paths:
        try:
            (pred,) = predictor.predict_files([path], invert=args.invert)
        except ImageRejected as exc:
            if args.strict or len(paths) == 1:
                raise
            print(f"cnnlab: warning: skipped: {exc}", file=sys.stderr)
            continue
        results.append(pred.to_dict())
        if args.show_input is not None:
            name = _unique(f"{path.stem}.input.png", used_names)
            fileio.write_bytes(args.show_input / name, image_png(pred.input))
        if args.json:
            continue
        p, k = pred.probabilities, pred.class_index
        if predictor.digits:
            flag = "  (inverted)" if pred.inverted else ""
            print(f"{path}  digit {k}  p={p[k]:.3f}{flag}")
        else:
            print(f"{path}  {_name(predictor, k)}  p={p[k]:.3f}")
        print(_spread(predictor, p))
    if not results:
        raise CnnlabError(f"none of the {len(paths)} images could be used")
    if args.json:
        print(json.dumps(results, indent=2))
    if args.show_input is not None:
        print(f"wrote {len(results)} network input(s) to {args.show_input}/", file=sys.stderr)
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
    from cnnlab.extras import require

    require("serve", "cnnlab serve")  # before the run is loaded
    from cnnlab.serving.predict import Predictor
    from cnnlab.serving.serve import ServerOptions, serve

    predictor = Predictor.from_run(args.run_dir)
    predictor.require_images("cnnlab serve (a page for image networks)")
    limits = ImageLimits(
        max_bytes=args.max_upload_mb * 1024 * 1024, max_pixels=args.max_megapixels * 1_000_000
    )
    options = ServerOptions(
        allow_hosts=tuple(args.allow_host),
        allow_origins=tuple(args.allow_origin),
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        max_uploads=args.max_uploads,
        max_connections=args.max_connections,
    )

    def ready(url: str) -> None:
        print(
            f"serving {predictor.name} from {args.run_dir} on {url} "
            "(API schema at /openapi.json); Ctrl-C stops",
            flush=True,
        )

    serve(predictor, host=args.host, port=args.port, limits=limits, options=options, on_ready=ready)
    return 0

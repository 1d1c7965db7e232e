"""Interop sub-commands: ``export`` (a run to ONNX) and ``import-keras`` (a Keras .keras file)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnnlab.cli.core import add_data_arg, add_device_arg
from cnnlab.cli.progress import Progress
from cnnlab.train import runs


def register(sub: Any) -> None:
    p = sub.add_parser(
        "export", help="export a run's model (with its softmax) to ONNX, checked in onnxruntime"
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument("--onnx", type=Path, required=True, metavar="FILE", help="the .onnx file")
    p.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default="best",
        help="which checkpoint to export (default: best)",
    )
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "import-keras",
        help="turn a Keras 3 .keras file (a Sequential CNN) into a cnnlab run folder",
    )
    p.add_argument("keras_file", type=Path, metavar="MODEL.keras")
    p.add_argument(
        "--case",
        choices=("1", "2", "3"),
        default=None,
        help="also check that it is the chapter's case N (same layers and arguments, "
        "layer names aside); the run is then named caseN",
    )
    p.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="new run folder")
    p.add_argument(
        "--evaluate",
        action="store_true",
        help="then evaluate it on the MNIST test set (as `cnnlab evaluate RUN_DIR`)",
    )
    add_data_arg(p)
    add_device_arg(p)
    p.set_defaults(func=cmd_import_keras)


def cmd_export(args: argparse.Namespace) -> int:
    with runs.writing([args.onnx], "export"):  # FILE inside a run folder: that run's lock
        return _export(args)


def _export(args: argparse.Namespace) -> int:
    from cnnlab.extras import require

    require("onnx", "cnnlab export")  # before the run is read
    from cnnlab.interop.onnx_export import PARITY_ATOL, export_run

    result = export_run(args.run_dir, args.onnx, args.checkpoint, args.force)
    print(
        f"wrote {result.path} ({result.n_bytes:,} bytes, opset {result.opset}); onnxruntime "
        f"matches PyTorch on a probe batch (max |diff| {result.probe_max_abs_diff:.2g} "
        f"<= {PARITY_ATOL:g})"
    )
    return 0


def cmd_import_keras(args: argparse.Namespace) -> int:
    from cnnlab.errors import CnnlabError
    from cnnlab.extras import require

    runs.check_unlocked(args.out, "import-keras")  # a held folder fails before the file is read
    require("keras", "cnnlab import-keras")  # before the file is read
    from cnnlab.interop.keras_import import read_keras, write_run

    prog = Progress.of(args)
    if args.keras_file.is_file():  # else read_keras says what is wrong, in one line
        prog.say(f"reading {args.keras_file} ({_size(args.keras_file.stat().st_size)})")
    with prog.step(f"reading {args.keras_file.name}"):
        km = read_keras(args.keras_file, args.case)
    desc = km.description
    if args.evaluate and (desc.input_shape != (28, 28, 1) or desc.output_shape != (10,)):
        raise CnnlabError(
            f"--evaluate scores on MNIST (28x28x1 inputs, 10 classes); {desc.name} maps "
            f"{_fmt(desc.input_shape)} to {_fmt(desc.output_shape)}"
        )
    # the folder is made, locked and checked as a train's (a failed import leaves nothing)
    with runs.claim(args.out, log=prog.say, command="import-keras") as out:
        with prog.step(f"writing {out}/"):
            metrics = write_run(km, out)
        return _imported(args, desc, km, metrics, prog)


def _imported(args: argparse.Namespace, desc: Any, km: Any, metrics: Any, prog: Progress) -> int:
    """Say what was imported; evaluate it if asked (its folder still locked)."""
    checked = f", checked to be the chapter's {km.case}" if km.case else ""
    print(
        f"imported {args.keras_file} as {desc.name}: {len(desc.layers)} layers, "
        f"{metrics['params']:,} parameters, input {_fmt(desc.input_shape)} -> "
        f"{_fmt(desc.output_shape)}{checked}; wrote {args.out}/"
    )
    if args.evaluate:
        from cnnlab import data
        from cnnlab.analysis.evaluation import evaluate_run

        with prog.step("evaluation on MNIST's test set"):
            result = evaluate_run(args.out, data.load_mnist(args.data_dir), args.device)
        print(f"test_accuracy {result['test_accuracy']:.4f}  test_loss {result['test_loss']:.4f}")
    return 0


def _fmt(shape: tuple[int, ...]) -> str:
    """``(28, 28, 1)`` as ``28x28x1``."""
    return "x".join(str(s) for s in shape)


def _size(n: int) -> str:
    """A file's size for a progress line: "812 bytes", "3.4 MB"."""
    if n < 1000:
        return f"{n} bytes"
    if n < 1_000_000:
        return f"{n / 1000:.1f} kB"
    return f"{n / 1_000_000:.1f} MB"

"""Interop sub-commands: ``export`` (a run to ONNX) and ``import-keras`` (a chapter .keras file)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnnlab.cli.core import add_data_arg, add_device_arg


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
        help="turn a .keras file saved by the chapter's code into a cnnlab run folder",
    )
    p.add_argument("keras_file", type=Path, metavar="MODEL.keras")
    p.add_argument("--case", required=True, choices=("1", "2", "3"))
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
    from cnnlab.interop.onnx_export import PARITY_ATOL, export_run

    result = export_run(args.run_dir, args.onnx, args.checkpoint, args.force)
    print(
        f"wrote {result.path} ({result.n_bytes:,} bytes, opset {result.opset}); onnxruntime "
        f"matches PyTorch on a probe batch (max |diff| {result.probe_max_abs_diff:.2g} "
        f"<= {PARITY_ATOL:g})"
    )
    return 0


def cmd_import_keras(args: argparse.Namespace) -> int:
    from cnnlab.interop.keras_import import import_keras

    metrics = import_keras(args.keras_file, args.case, args.out)
    print(
        f"imported {args.keras_file} as {metrics['case']} ({metrics['params']:,} parameters) "
        f"into {args.out}/"
    )
    if args.evaluate:
        from cnnlab import data
        from cnnlab.analysis.evaluation import evaluate_run

        result = evaluate_run(args.out, data.load_mnist(args.data_dir), args.device)
        print(f"test_accuracy {result['test_accuracy']:.4f}  test_loss {result['test_loss']:.4f}")
    return 0

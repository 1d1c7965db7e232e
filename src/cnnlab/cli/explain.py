"""Sub-commands that look inside trained models: explain, verify-numpy, export-numpy, shift,
receptive, baselines, report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cnnlab import data, fileio
from cnnlab.cli.core import add_data_arg, add_model_args, model_description, writes
from cnnlab.cli.datasets import add_dataset_arg, add_image_args, run_dataset
from cnnlab.cli.flags import non_negative_int, positive_int, seed_int
from cnnlab.cli.progress import Progress
from cnnlab.errors import CnnlabError

DEFAULT_BASELINES = Path("runs/baselines/baselines.json")


def _run_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="a finished cnnlab run folder (holds best.pt)")


def _shift_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-shift", type=non_negative_int, default=4, help="pixels (default: 4)")
    p.add_argument(
        "--shift-images",
        type=positive_int,
        default=None,
        metavar="N",
        help="test images for the accuracy grid (default: the whole test set)",
    )
    p.add_argument(
        "--invariance-images",
        type=positive_int,
        default=500,
        metavar="N",
        help="test images for the per-layer fractions (default: 500)",
    )
    p.add_argument(
        "--recompute",
        action="store_true",
        help="compute the run's stored results again (shift.json; for a report also "
        "confusion.json and numpy_check.json); by default they are reused where they were "
        "made from the same best.pt, data and settings",
    )


def _data_args(p: argparse.ArgumentParser) -> None:
    """--data (another dataset for the run's network), --data-dir and the image flags."""
    add_dataset_arg(p, default=None)
    add_data_arg(p)
    add_image_args(p)


def register(sub: Any) -> None:
    p = sub.add_parser("explain", help="feature maps and kernels of a run for one input")
    _run_arg(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=non_negative_int, help="an example of the run's test set")
    which.add_argument(
        "--image",
        type=Path,
        help="an image file, put through the run's preprocessing (an MNIST run's: centred "
        "like a digit)",
    )
    p.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/explain/<image>/")
    _data_args(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser(
        "verify-numpy", help="re-compute the test set with the NumPy engine and compare"
    )
    _run_arg(p)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--batch-size", type=positive_int, default=1000)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--random-inputs",
        action="store_true",
        help="check on 1,000 seeded random inputs of the network's shape instead of the "
        "test set (for a run whose data cannot be rebuilt)",
    )
    _data_args(p)
    p.set_defaults(func=cmd_verify_numpy)

    p = sub.add_parser("export-numpy", help="export a run's best model as NumPy arrays (.npz)")
    _run_arg(p)
    p.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/model.npz")
    p.set_defaults(func=cmd_export_numpy)

    p = sub.add_parser("shift", help="accuracy under input shifts; equivariance and invariance")
    _run_arg(p)
    _shift_args(p)
    _data_args(p)
    p.set_defaults(func=cmd_shift)

    p = sub.add_parser("receptive", help="receptive fields and parameters per layer of a network")
    add_model_args(p, required=True)
    p.set_defaults(func=cmd_receptive)

    p = sub.add_parser("baselines", help="HOG + logreg, kNN on MNIST; MiniRocket, 1-NN on ucr")
    p.add_argument("--out", type=Path, default=DEFAULT_BASELINES.parent)
    p.add_argument("--data", default="mnist", metavar="DATASET", help="mnist or ucr:NAME")
    runs = "trained runs on the same data: their test accuracy and seconds beside"
    p.add_argument("--runs", type=Path, nargs="+", default=[], metavar="RUN_DIR", help=runs)
    p.add_argument("--seed", type=seed_int, default=42, help="split seed (default: 42)")
    p.add_argument("--knn-k", type=positive_int, default=3)
    p.add_argument("--limit-train", type=positive_int, default=None, metavar="N")
    p.add_argument("--force", action="store_true", help="retrain even if cached")
    add_data_arg(p)
    p.set_defaults(func=cmd_baselines)

    p = sub.add_parser("report", help="a self-contained HTML report of one or several runs")
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="HTML file (default: RUN_DIR/report.html; for several runs, report.html "
        "in the first run's parent folder)",
    )
    p.add_argument("--index", type=non_negative_int, default=0, help="test example to explain")
    p.add_argument(
        "--baselines",
        type=Path,
        default=None,
        help=f"baselines cache (default: {DEFAULT_BASELINES} if it exists)",
    )
    p.add_argument("--figures", type=Path, default=None, help="also copy main figures here")
    p.add_argument("--no-verify", action="store_true", help="skip the NumPy engine check")
    _shift_args(p)
    _data_args(p)
    p.set_defaults(func=cmd_report)


def _check_run(run_dir: Path) -> None:
    if not (Path(run_dir) / "best.pt").exists():  # not regular: the reader says what it is
        raise CnnlabError(f"{run_dir} has no best.pt: is it a cnnlab run folder?")


def _run_description(run_dir: Path) -> Any:
    """The description a run was trained with (its best.pt), the run folder checked first."""
    from cnnlab.train import checkpoint

    _check_run(run_dir)
    return checkpoint.load_model(run_dir, "best")[0].description


def _test_set(args: argparse.Namespace, run_dir: Path, desc: Any) -> Any:
    """The run's test set (its own data rebuilt, or --data), scaled as the run recorded."""
    from cnnlab.analysis.run_data import RunTestSet

    return RunTestSet.of(run_dir, desc, run_dataset(run_dir, args, args.data))


def _shift_config(args: argparse.Namespace) -> Any:
    from cnnlab.analysis.shift import ShiftConfig

    return ShiftConfig(args.max_shift, args.shift_images, args.invariance_images)


@writes("explain", lambda args: [args.out if args.out is not None else args.run_dir])
def cmd_explain(args: argparse.Namespace) -> int:
    from cnnlab.analysis.explain import check_images, explain_image
    from cnnlab.analysis.numpy_check import from_run
    from cnnlab.analysis.run_data import image_file_input, output_names

    desc = _run_description(args.run_dir)
    model = from_run(args.run_dir)
    if desc.rank in (1, 3):  # time series and clips: dispatched by the network's rank
        return _explain_test_input(args, desc, model)
    check_images(model)
    if args.image is not None:
        image = image_file_input(args.run_dir, desc, args.image)
        source, stem, classes = args.image.name, args.image.stem, output_names(args.run_dir, desc)
    else:
        test = _test_set(args, args.run_dir, desc)
        if args.index >= len(test):
            raise CnnlabError(f"--index must be below {len(test)}, got {args.index}")
        image, classes = test.inputs(args.index, args.index + 1)[0], test.classes
        label = test.name(int(test.y[args.index]))
        source, stem = f"test image #{args.index} (label {label})", f"test-{args.index}"
    out = args.out if args.out is not None else args.run_dir / "explain" / stem
    for path in explain_image(model, image, out, source, classes):
        print(f"wrote {path}")
    return 0


def _explain_test_input(args: argparse.Namespace, desc: Any, model: Any) -> int:
    """explain for a 1-D (time series) or 3-D (clip) network: a test input of its dataset."""
    if args.image is not None:
        rank = f"{desc.rank}-D"
        raise CnnlabError(f"--image is for image networks; {desc.name} is {rank}: give --index")
    test = _test_set(args, args.run_dir, desc)
    if args.index >= len(test):
        raise CnnlabError(f"--index must be below {len(test)}, got {args.index}")
    x = test.inputs(args.index, args.index + 1)[0]
    source = f"test {test.what} #{args.index} (label {test.name(int(test.y[args.index]))})"
    out = args.out if args.out is not None else args.run_dir / "explain" / f"test-{args.index}"
    if desc.rank == 1:
        from cnnlab.analysis.explain_series import explain_series

        paths = explain_series(model, x, out, source, test.classes)
    else:
        from cnnlab.analysis.explain_video import explain_clip

        paths = explain_clip(model, x, out, source, test.classes)
    for path in paths:
        print(f"wrote {path}")
    return 0


def _without_data(args: argparse.Namespace, desc: Any) -> bool:
    """verify-numpy on random inputs: asked for, or a bare checkpoint (no config.json, so
    no data recorded) whose network does not take MNIST's digits."""
    if args.random_inputs:
        return True
    bare = not (args.run_dir / "config.json").exists() and args.data is None
    return bare and tuple(desc.input_shape) != (28, 28, 1)


@writes("verify-numpy", lambda args: [args.run_dir])  # it writes numpy_check.json
def cmd_verify_numpy(args: argparse.Namespace) -> int:
    from cnnlab.analysis.numpy_check import verify_run

    desc = _run_description(args.run_dir)
    x = None
    if not _without_data(args, desc):
        try:
            x = _test_set(args, args.run_dir, desc)
        except CnnlabError as exc:  # the engines agree or not whatever the data: say so
            raise CnnlabError(f"{exc}; or --random-inputs to check on random inputs") from None
    r = verify_run(
        args.run_dir,
        x,
        dtype=args.dtype,
        batch_size=args.batch_size,
        progress=None if not args.json else False,
        tick=None if args.json else Progress.of(args).tick("NumPy check", " inputs"),
    )
    if args.json:
        print(json.dumps(r, indent=2, sort_keys=True))
    else:
        verdict = "ok" if r["passed"] else f"FAILED (tolerance {r['tolerance']:g})"
        print(f"{r['model']}: {r['n_images']:,} {r['inputs']}, {r['dtype']}")
        print(f"max_abs_diff {r['max_abs_diff']:.3e}  {verdict}")
        print(f"same predictions {r['same_predictions']:,} of {r['n_images']:,}")
        print(f"numpy {r['numpy_images_per_s']:,.0f} inputs/s")
        print(f"torch {r['torch_images_per_s']:,.0f} inputs/s")
    return 0 if r["passed"] else 1


@writes("export-numpy", lambda args: [args.out if args.out is not None else args.run_dir])
def cmd_export_numpy(args: argparse.Namespace) -> int:
    from cnnlab.analysis.numpy_check import from_run
    from cnnlab.engine.numpy_engine import save_npz

    _check_run(args.run_dir)
    out = args.out if args.out is not None else args.run_dir / "model.npz"
    save_npz(from_run(args.run_dir), out)
    print(f"wrote {out}")
    return 0


@writes("shift", lambda args: [args.run_dir])  # shift.json, shift.png
def cmd_shift(args: argparse.Namespace) -> int:
    from cnnlab.analysis.shift import (
        ShiftGrid,
        markdown_grid,
        markdown_layers,
        require_images,
        run_shift,
    )

    config = _shift_config(args)
    desc = _run_description(args.run_dir)
    require_images(desc)  # before the data is loaded
    test = _test_set(args, args.run_dir, desc)
    prog = Progress.of(args)
    with prog.step("shift grid"):
        result = run_shift(
            args.run_dir,
            test,
            config,
            log=prog.say,
            progress=prog.bars,
            tick=prog.tick("shift grid", " test images"),
            recompute=args.recompute,
        )
    print(markdown_grid(ShiftGrid.from_dict(result["grid"])))
    print(markdown_layers(result["layers"]))
    print(f"wrote {args.run_dir / 'shift.json'} and {args.run_dir / 'shift.png'}")
    return 0


def cmd_receptive(args: argparse.Namespace) -> int:
    from cnnlab.analysis.receptive import layer_table, markdown

    print(markdown(layer_table(model_description(args))), end="")
    return 0


@writes("baselines", lambda args: [args.out])
def cmd_baselines(args: argparse.Namespace) -> int:
    from cnnlab.analysis import baselines
    from cnnlab.extras import require

    if args.data != "mnist":  # ucr:NAME: MiniRocket and 1-NN, beside any --runs
        how = (args.out, args.data_dir, args.runs, args.seed, args.force, Progress.of(args).say)
        table, path = baselines.series_command(args.data, *how)
        print(table + f"wrote {path}")
        return 0
    config = baselines.BaselineConfig(
        seed=args.seed, knn_k=args.knn_k, limit_train=args.limit_train
    )
    path = args.out / "baselines.json"
    prog = Progress.of(args)
    results = None if args.force else baselines.cached(path, config, log=prog.say)
    if results is None:  # (cached results are shown without the extra)
        require("baselines", "cnnlab baselines")  # before MNIST is loaded
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CnnlabError(f"cannot create {args.out}: {exc.strerror or exc}") from exc
        with prog.step("MNIST loaded and split"):
            splits = data.prepare(data.load_mnist(args.data_dir), args.seed)
        results = baselines.run_baselines(config, splits, log=prog.say)
        baselines.save(results, path)
        fileio.write_text(args.out / "baselines.md", baselines.markdown_table(results))
    else:
        print(f"using cached results in {path} (--force to retrain)")
    print(baselines.markdown_table(results), end="")
    print(f"wrote {path}")
    return 0


def _report_data(args: argparse.Namespace, descs: dict[Path, Any]) -> dict[Path, Any]:
    """Each run's dataset, rebuilt before anything is computed (a run whose data is gone
    fails now, in one line naming it); runs recorded on the same data share one load."""
    from cnnlab.train.schemas import read_run_data

    loaded: dict[str, Any] = {}
    out = {}
    for run_dir, desc in descs.items():
        found = read_run_data(run_dir)
        key = json.dumps([found.record, found.spec, args.data, list(desc.input_shape)])
        if key not in loaded:
            loaded[key] = run_dataset(run_dir, args, args.data)
        out[run_dir] = loaded[key]
    return out


def _report_out(args: argparse.Namespace) -> Path:
    """The page: --out, else RUN_DIR/report.html (several runs: in the first's parent)."""
    first = Path(args.run_dirs[0])
    folder = first if len(args.run_dirs) == 1 else first.resolve().parent
    return Path(args.out) if args.out is not None else folder / "report.html"


@writes("report", lambda args: [_report_out(args), args.figures, *args.run_dirs])  # + caches
def cmd_report(args: argparse.Namespace) -> int:
    from cnnlab.report.report import ReportConfig, build_report
    from cnnlab.train.schemas import METRICS, read_metrics

    if args.figures is not None and args.figures.exists() and not args.figures.is_dir():
        raise CnnlabError(f"--figures {args.figures} is a file; give a folder for the figures")
    shift = _shift_config(args)
    descs = {}
    for run_dir in args.run_dirs:
        descs[run_dir] = _run_description(run_dir)
        if (run_dir / METRICS).exists():
            read_metrics(run_dir)  # read at the end: a damaged one fails now
    out = _report_out(args)
    base = args.baselines
    if base is None and DEFAULT_BASELINES.is_file():
        base = DEFAULT_BASELINES
    if base is not None and not base.is_file():
        raise CnnlabError(f"baselines file {base} not found (run cnnlab baselines first)")
    prog = Progress.of(args)
    config = ReportConfig(
        index=args.index,
        shift=shift,
        baselines=base,
        verify=not args.no_verify,
        figures_dir=args.figures,
        log=prog.say,
        progress=prog.bars,
        step=prog.step,
        tick=lambda what: prog.tick(what, " test images"),
        recompute=args.recompute,
    )
    with prog.step("test data"):
        datasets = _report_data(args, descs)
    for path in build_report(list(args.run_dirs), datasets, out, config):
        print(f"wrote {path}")
    if args.figures is not None:
        print(f"copied the main figures into {args.figures}/")
    return 0

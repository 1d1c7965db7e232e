"""Core sub-commands: data verify, summary, train, evaluate, compare."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnnlab import data, distributed, runs
from cnnlab.errors import CnnlabError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder holding mnist/ (default: $CNNLAB_DATA, then ~/.cache/cnnlab)",
    )


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="cpu",
        help="where to train and evaluate (default: cpu)",
    )


def register(sub: Any) -> None:
    p = sub.add_parser("data", help="check the MNIST files")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    v = dsub.add_parser("verify", help="verify the MNIST files that would be used")
    add_data_arg(v)
    v.add_argument("--download", action="store_true", help="download missing files first")
    v.set_defaults(func=cmd_data_verify)

    p = sub.add_parser("summary", help="print a Keras-like summary of a case's model")
    p.add_argument("--case", required=True, choices=("1", "2", "3"))
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser(
        "train", help="train one of the chapter's cases (its full recipe by default)"
    )
    p.add_argument("--case", choices=("1", "2", "3"), default="1")
    p.add_argument("--epochs", type=positive_int, default=200)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--patience", type=non_negative_int, default=5)
    p.add_argument("--seed", type=non_negative_int, default=42)
    p.add_argument(
        "--out", type=Path, default=None, help="run folder (default: a new folder under runs/)"
    )
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="DIR",
        help="continue an interrupted run from DIR/last.pt",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_data_arg(p)
    add_device_arg(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="re-evaluate a run's best checkpoint on the test set")
    p.add_argument("run_dir", type=Path)
    add_data_arg(p)
    add_device_arg(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="train the three cases (or read finished runs) and compare")
    p.add_argument(
        "run_dirs", type=Path, nargs="*", help="finished runs (default: train all three)"
    )
    p.add_argument("--epochs", type=positive_int, default=200)
    p.add_argument("--seed", type=non_negative_int, default=42)
    p.add_argument("--out", type=Path, default=None, help="where to write (default: under runs/)")
    add_data_arg(p)
    add_device_arg(p)
    p.set_defaults(func=cmd_compare)


def cmd_data_verify(args: argparse.Namespace) -> int:
    if args.download:
        data.load_mnist(args.data_dir)
    ok = True
    for name, path, status in data.verify(args.data_dir):
        print(f"{name:<26} {status:<8} {path if path else ''}")
        ok = ok and status == "ok"
    return 0 if ok else 1


def cmd_summary(args: argparse.Namespace) -> int:
    from cnnlab.models import create_model, summary

    print(summary(create_model(args.case)))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from cnnlab.train import TrainConfig, fit

    if args.resume is not None:
        out = args.resume
        saved = runs.read_json(out / "config.json")
        config = TrainConfig(**saved["config"])
    else:
        config = TrainConfig(
            case=args.case,
            epochs=args.epochs,
            batch_size=args.batch_size,
            patience=args.patience,
            seed=args.seed,
            device=args.device,
        )
        if distributed.launched():
            # Every process must name the same folder; rank 0 alone checks and creates it.
            if args.out is None:
                raise CnnlabError("under torchrun, give --out: every process writes one run")
            out = runs.prepare_out_dir(args.out) if distributed.launch_rank() == 0 else args.out
        elif args.out:
            out = runs.prepare_out_dir(args.out)
        else:
            out = runs.new_run_dir(Path("runs"), config.case)
    splits = data.prepare(
        data.load_mnist(args.data_dir), config.seed, config.val_fraction, scaled=False
    )
    main_process = distributed.launch_rank() == 0
    if main_process:
        print(f"training {config.case} into {out}")
    try:
        metrics = fit(config, splits, out, resume=args.resume is not None, progress=not args.quiet)
    finally:
        distributed.teardown()
    if main_process:
        print(f"test accuracy {metrics['test_accuracy']:.4f}; outputs in {out}/")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cnnlab.evaluate import evaluate_run

    if not (args.run_dir / "best.pt").is_file():
        raise CnnlabError(f"{args.run_dir} has no best.pt: is it a cnnlab run folder?")
    runs.load_checkpoint(args.run_dir / "best.pt")  # a damaged file fails before the data load
    metrics = evaluate_run(args.run_dir, data.load_mnist(args.data_dir), args.device)
    print(f"test_accuracy {metrics['test_accuracy']:.4f}  test_loss {metrics['test_loss']:.4f}")
    print(f"wrote {args.run_dir / 'metrics.json'} and {args.run_dir / 'confusion.png'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from cnnlab.compare import compare
    from cnnlab.train import TrainConfig, fit

    out = runs.prepare_out_dir(args.out) if args.out else runs.new_run_dir(Path("runs"), "compare")
    run_dirs = list(args.run_dirs)
    if not run_dirs:
        splits = data.prepare(data.load_mnist(args.data_dir), args.seed, scaled=False)
        for case in ("case1", "case2", "case3"):
            config = TrainConfig(case=case, epochs=args.epochs, seed=args.seed, device=args.device)
            run_dir = runs.prepare_out_dir(out / case)
            print(f"training {case} into {run_dir}")
            fit(config, splits, run_dir)
            run_dirs.append(run_dir)
    print(compare(run_dirs, out), end="")
    print(f"wrote {out / 'compare.md'} and {out / 'compare.png'}")
    return 0

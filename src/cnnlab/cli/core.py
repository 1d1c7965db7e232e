"""Core sub-commands: data verify, summary, train, evaluate, compare."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab import data
from cnnlab.data.datasets import check_spec, load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.train import checkpoint, distributed, runs
from cnnlab.train.recipes import settings

if TYPE_CHECKING:
    from cnnlab.models import ModelDescription


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


MAX_SEED = 2**32 - 1


def seed_int(text: str) -> int:
    value = non_negative_int(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SEED}, got {value}")
    return value


def add_model_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    """``--case N`` (a chapter case) or ``--model NAME_OR_FILE`` (any description)."""
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--case", choices=("1", "2", "3"), default=None, help="a chapter case")
    g.add_argument(
        "--model",
        default=None,
        metavar="NAME_OR_FILE",
        help="a registered network, a .json/.yaml description, or a one-line description "
        "('Input(28,28,1) Conv2D(8,3,relu) MaxPooling2D Flatten Dense(10,softmax)')",
    )


def model_spec(args: argparse.Namespace) -> str:
    """The network the user named: ``--model`` as given, ``--case N`` as ``caseN``."""
    if getattr(args, "model", None):
        return str(args.model)
    return f"case{args.case or 1}"


def model_description(args: argparse.Namespace) -> Any:
    from cnnlab.models import resolve

    return resolve(model_spec(args))


def data_description(spec: str, dataset: Any) -> Any:
    """The network ``spec`` for ``dataset``: a template (``fcn1d``, ``moving3d``, ...) built
    for its input shape and classes, any other network as :func:`~cnnlab.models.resolve`."""
    from cnnlab.models.registry import resolve_for

    return resolve_for(spec, dataset.input_shape, len(dataset.classes))


def is_template(spec: str) -> bool:
    """Whether ``spec`` names a registry template, which needs the data to be built."""
    from cnnlab.models.registry import is_template

    return is_template(spec)


def make_config(cls: Any, **kwargs: Any) -> Any:
    """A config dataclass from flags; its ValueError becomes one line."""
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise CnnlabError(str(exc)) from None


def add_dataset_arg(p: argparse.ArgumentParser, default: str | None = "mnist") -> None:
    from cnnlab.data.datasets import SPEC_HELP

    p.add_argument(
        "--data",
        default=default,
        metavar="DATASET",
        help=f"{SPEC_HELP} (default: {default or 'the one the run was trained on'})",
    )


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

    p = sub.add_parser("summary", help="print a Keras-like summary of a network")
    add_model_args(p, required=True)
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser(
        "train", help="train a network (a chapter case by default) with the chapter's recipe"
    )
    add_model_args(p)
    recipe = "(default: the dataset's recipe; the chapter's: {})"
    p.add_argument("--epochs", type=positive_int, default=None, help=recipe.format(200))
    p.add_argument("--batch-size", type=positive_int, default=None, help=recipe.format(32))
    p.add_argument("--patience", type=non_negative_int, default=None, help=recipe.format(5))
    p.add_argument("--seed", type=seed_int, default=42)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run folder (default: a new folder under runs/); one that a run killed in its "
        "first epoch left (no last.pt yet) is reused",
    )
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="DIR",
        help="continue an interrupted run from DIR/last.pt (the folder is locked while "
        "training; a run killed before its first checkpoint is started again with --out)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataset_arg(p)
    add_data_arg(p)
    add_device_arg(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="re-evaluate a run's best checkpoint on the test set")
    p.add_argument("run_dir", type=Path)
    add_dataset_arg(p, default=None)
    add_data_arg(p)
    add_device_arg(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="train the three cases (or read finished runs) and compare")
    p.add_argument("run_dirs", type=Path, nargs="*", help="finished runs (default: train --models)")
    p.add_argument(
        "--models",
        nargs="+",
        default=["case1", "case2", "case3"],
        metavar="MODEL",
        help="networks to train when no run folder is given (default: the three cases)",
    )
    add_dataset_arg(p)
    p.add_argument("--epochs", type=positive_int, default=None, help="default: the recipe's")
    p.add_argument("--seed", type=seed_int, default=42)
    p.add_argument("--out", type=Path, default=None, help="where to write (default: under runs/)")
    add_data_arg(p)
    add_device_arg(p)
    p.set_defaults(func=cmd_compare)


def run_config_or_default(run_dir: Path) -> Any:
    """A run's validated TrainConfig; the defaults for a folder without config.json."""
    from cnnlab.train.config import TrainConfig
    from cnnlab.train.records import read_run_config

    if not (Path(run_dir) / "config.json").exists():
        return TrainConfig()
    return read_run_config(run_dir)[0]


def run_dataset(run_dir: Path) -> str:
    """The dataset a run was trained on (config.json), mnist for older runs."""
    return str(run_config_or_default(run_dir).data)


def cmd_data_verify(args: argparse.Namespace) -> int:
    if args.download:
        data.load_mnist(args.data_dir)
    ok = True
    for name, path, status in data.verify(args.data_dir):
        print(f"{name:<26} {status:<8} {path if path else ''}")
        ok = ok and status == "ok"
    return 0 if ok else 1


def cmd_summary(args: argparse.Namespace) -> int:
    from cnnlab.models import summary

    desc = model_description(args)
    print(summary(desc))
    print(engine_line(desc))
    return 0


def engine_line(desc: ModelDescription) -> str:
    """Where the fast engine runs the network's training step on a CPU (engine.plan)."""
    from cnnlab.engine.plan import PYTORCH, where

    placed = where(desc, kernels=True)
    slow = [name for name, ran in placed.items() if ran == PYTORCH]
    if not slow:
        return "Fast engine, CPU: every layer in cnnlab's C++ kernels (where they compile)."
    if len(slow) == len(placed):
        return "Fast engine, CPU: PyTorch operations (no C++ kernels for these layers)."
    return f"Fast engine, CPU: {', '.join(slow)} as PyTorch operations, the rest in C++ kernels."


def cmd_train(args: argparse.Namespace) -> int:
    """Train a new run, or resume one. The run folder is locked while this runs
    (:func:`cnnlab.train.runs.claim`); a new folder that fails before its first checkpoint
    is removed again."""
    from cnnlab.train.config import TrainConfig

    dataset = None
    main_process = distributed.launch_rank() == 0
    if args.resume is not None:
        if distributed.launched() and not main_process:
            return _train(args, args.resume, None)
        with runs.claim(args.resume, resume=True) as out:
            return _train(args, out, None)
    spec = check_spec(args.data)
    if args.out is not None:
        runs.check_unlocked(args.out)  # before the data load: a taken folder fails at once
        runs.check_out_dir(args.out)
    if is_template(model_spec(args)):  # built for the data: Input(*shape) ... Dense(K)
        dataset = load_dataset(spec, args.data_dir, args.seed, TrainConfig().val_fraction)
        description = data_description(model_spec(args), dataset)
    else:
        description = model_description(args)
    given = {"epochs": args.epochs, "batch_size": args.batch_size, "patience": args.patience}
    config = make_config(
        TrainConfig,
        model=model_spec(args),
        data=spec,
        seed=args.seed,
        device=args.device,
        **settings(spec, **given),
    )
    if dataset is None:
        dataset = load_dataset(config.data, args.data_dir, config.seed, config.val_fraction)
    if distributed.launched():
        # Every process must name the same folder; rank 0 alone checks, creates and locks it.
        if args.out is None:
            raise CnnlabError("under torchrun, give --out: every process writes one run")
        if not main_process:
            return _train(args, args.out, (config, description, dataset))
    with runs.claim(args.out, stem=description.name) as out:
        return _train(args, out, (config, description, dataset))


def _train(args: argparse.Namespace, out: Path, new: tuple[Any, Any, Any] | None) -> int:
    """Train into the claimed folder ``out``: a new run (``new``), or resume the one there."""
    from cnnlab.train.loop import fit
    from cnnlab.train.records import load_model, read_last, read_run_config

    if new is None:
        config, description = read_run_config(out)
        if (out / "best.pt").exists():
            load_model(out, "best")  # read at the end: a damaged one fails now, not then
        read_last(out)  # the whole training state, checked before the data is loaded
        dataset = load_dataset(config.data, args.data_dir, config.seed, config.val_fraction)
    else:
        config, description, dataset = new
    main_process = distributed.launch_rank() == 0
    if main_process:
        print(f"training {description.name} on {dataset.description} into {out}")
    metrics = fit(
        config,
        dataset.splits,
        out,
        description=description,
        resume=new is None,
        progress=not args.quiet,
    )
    if main_process:
        print(f"test accuracy {metrics['test_accuracy']:.4f}; outputs in {out}/")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cnnlab.analysis.evaluation import evaluate_run
    from cnnlab.train.schemas import METRICS, read_metrics

    if not (args.run_dir / "best.pt").is_file():
        raise CnnlabError(f"{args.run_dir} has no best.pt: is it a cnnlab run folder?")
    checkpoint.load_model(args.run_dir, "best")  # a damaged file fails before the data load
    if (args.run_dir / METRICS).exists():
        read_metrics(args.run_dir)  # updated afterwards: a damaged one fails now
    spec = args.data or run_dataset(args.run_dir)
    config = run_config_or_default(args.run_dir)
    dataset = load_dataset(spec, args.data_dir, config.seed, config.val_fraction)
    metrics = evaluate_run(args.run_dir, dataset, args.device)
    print(f"test_accuracy {metrics['test_accuracy']:.4f}  test_loss {metrics['test_loss']:.4f}")
    print(f"wrote {args.run_dir / 'metrics.json'} and {args.run_dir / 'confusion.png'}")
    return 0


def _check_finished_run(run_dir: Path) -> None:
    """A run's records (config.json, model.json, metrics.json with test metrics), checked."""
    from cnnlab.train.schemas import METRICS, read_metrics, read_run

    read_run(run_dir)
    if (run_dir / METRICS).exists():
        found = read_metrics(run_dir)
        missing = [k for k in ("test_accuracy", "test_loss") if k not in found]
        if missing:
            raise CnnlabError(
                f"{run_dir / METRICS} lacks the field {missing[0]!r}: no test metrics yet; "
                f"run cnnlab evaluate {run_dir}"
            )


def cmd_compare(args: argparse.Namespace) -> int:
    from cnnlab.models import resolve
    from cnnlab.report.compare import compare, run_summary
    from cnnlab.train.config import TrainConfig
    from cnnlab.train.loop import fit

    run_dirs = list(args.run_dirs)
    for run_dir in run_dirs:
        _check_finished_run(run_dir)
        run_summary(run_dir)  # every run checked before anything is written
    out = runs.prepare_out_dir(args.out) if args.out else runs.new_run_dir(Path("runs"), "compare")
    if not run_dirs:
        fixed = [resolve(m) for m in args.models if not is_template(m)]  # fail before the data
        dataset = load_dataset(check_spec(args.data), args.data_dir, args.seed)
        built = iter(fixed)
        descriptions = [
            data_description(m, dataset) if is_template(m) else next(built) for m in args.models
        ]
        names = [d.name for d in descriptions]
        if len(set(names)) != len(names):
            raise CnnlabError(f"--models names a network twice ({', '.join(names)})")
        splits = dataset.splits
        for spec, desc in zip(args.models, descriptions, strict=True):
            config = make_config(
                TrainConfig,
                model=spec,
                data=dataset.spec,
                seed=args.seed,
                device=args.device,
                **settings(dataset.spec, epochs=args.epochs),
            )
            run_dir = runs.prepare_out_dir(out / desc.name)
            print(f"training {desc.name} into {run_dir}")
            fit(config, splits, run_dir, description=desc)
            run_dirs.append(run_dir)
    print(compare(run_dirs, out), end="")
    print(f"wrote {out / 'compare.md'} and {out / 'compare.png'}")
    return 0

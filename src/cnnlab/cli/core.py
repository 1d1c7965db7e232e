"""Core sub-commands: data verify, summary, train, evaluate."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab import budget, data
from cnnlab.cli.datasets import (
    add_data_dir_arg,
    add_dataset_arg,
    add_image_args,
    options,
    run_dataset,
    show_progress,
    val_fraction,
)
from cnnlab.cli.flags import (
    model_arg,
    non_negative_float,
    non_negative_int,
    plateau_factor,
    positive_float,
    positive_int,
    seed_int,
)
from cnnlab.data.datasets import check_spec, load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.train import checkpoint, distributed, runs
from cnnlab.train.recipes import settings
from cnnlab.train.records import check_same_run

if TYPE_CHECKING:
    from cnnlab.models import ModelDescription

Command = Callable[[argparse.Namespace], int]  # a sub-command: the parsed flags -> exit code


def add_model_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    """``--case N`` (a chapter case) or ``--model NAME_OR_FILE`` (any description)."""
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--case", choices=("1", "2", "3"), default=None, help="a chapter case")
    g.add_argument(
        "--model",
        type=model_arg,
        default=None,
        metavar="NAME_OR_FILE",
        help="a registered network, a .json/.yaml description, or a one-line description "
        "('Input(28,28,1) Conv2D(8,3,relu) MaxPooling2D Flatten Dense(10,softmax)')",
    )


def writes(
    command: str, targets: Callable[[argparse.Namespace], list[Path | None]]
) -> Callable[[Command], Command]:
    """A sub-command that writes into ``targets(args)`` (folders or files), run with the
    lock of every run folder among them held (:func:`cnnlab.train.runs.writing`)."""

    def wrap(cmd: Command) -> Command:
        @functools.wraps(cmd)
        def locked(args: argparse.Namespace) -> int:
            with runs.writing(targets(args), command):
                return cmd(args)

        return locked

    return wrap


def model_spec(args: argparse.Namespace) -> str:
    """The network the user named: ``--model`` as given, ``--case N`` as ``caseN``."""
    if getattr(args, "model", None):
        return str(args.model)
    return f"case{args.case or 1}"


def model_description(args: argparse.Namespace) -> Any:
    from cnnlab.models import resolve

    return resolve(model_spec(args))


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


def add_data_arg(p: argparse.ArgumentParser) -> None:
    """``--data-dir`` (kept under this name for the commands that import it from here)."""
    add_data_dir_arg(p)


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
    p.add_argument("--lr", type=positive_float, default=None, help=recipe.format("0.001"))
    p.add_argument(
        "--monitor",
        choices=("val_accuracy", "val_loss"),
        default=None,
        help="what early stopping watches " + recipe.format("val_accuracy"),
    )
    p.add_argument(
        "--val-split",
        type=val_fraction,
        default=None,
        metavar="FRACTION",
        help="of the training data held out for validation, stratified; 0 for ucr: none, "
        "the kept model has the lowest loss on all of TRAIN " + recipe.format(0.25),
    )
    p.add_argument(
        "--plateau-factor",
        type=plateau_factor,
        default=None,
        help="ReduceLROnPlateau on the training loss: the factor (0: off) " + recipe.format(0),
    )
    p.add_argument("--plateau-patience", type=positive_int, default=None, help="epochs")
    p.add_argument("--min-lr", type=positive_float, default=None, help="the plateau's floor")
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
    p.add_argument(
        "--checkpoint-every",
        type=non_negative_int,
        default=None,
        metavar="STEPS",
        help="also write last.pt every STEPS training steps, inside epochs (a killed run "
        "resumes from there to the same history; default 0: at epoch ends only)",
    )
    p.add_argument(
        "--checkpoint-minutes",
        type=non_negative_float,
        default=None,
        metavar="MINUTES",
        help="also write last.pt when MINUTES have passed since the last one (default 0: off)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataset_arg(p)
    add_data_arg(p)
    add_image_args(p)
    add_device_arg(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="re-evaluate a run's best checkpoint on the test set")
    p.add_argument("run_dir", type=Path)
    add_dataset_arg(p, default=None)
    add_data_arg(p)
    add_image_args(p)
    add_device_arg(p)
    p.set_defaults(func=cmd_evaluate)


def run_config_or_default(run_dir: Path) -> Any:
    """A run's validated TrainConfig; the defaults for a folder without config.json."""
    from cnnlab.train.config import TrainConfig
    from cnnlab.train.records import read_run_config

    if not (Path(run_dir) / "config.json").exists():
        return TrainConfig()
    return read_run_config(run_dir)[0]


def run_spec(run_dir: Path) -> str:
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
    from cnnlab.engine.choice import resolve
    from cnnlab.engine.plan import PYTORCH

    choice = resolve(desc, "cpu", available=True)  # what a CPU run chooses
    placed = choice.layers
    slow = [name for name, ran in placed.items() if ran == PYTORCH]
    if not slow:
        return "Fast engine, CPU: every layer in cnnlab's C++ kernels (where they compile)."
    if len(slow) == len(placed):
        slower = [f"a kernel measured slower: {w}" for w in choice.reasons if ": PyTorch" in w]
        why = (slower or ["no C++ kernels for these layers"])[0]
        return f"Fast engine, CPU: PyTorch operations ({why})."
    return f"Fast engine, CPU: {', '.join(slow)} as PyTorch operations, the rest in C++ kernels."


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe settings given on the command line (None: the recipe's)."""
    keys: tuple[str, ...] = ("epochs", "batch_size", "patience", "lr", "monitor")
    keys += ("plateau_factor", "plateau_patience", "min_lr")
    given = {k: getattr(args, k, None) for k in keys}
    given["val_fraction"] = getattr(args, "val_split", None)
    return given


def _schedule(args: argparse.Namespace) -> dict[str, Any]:
    """The mid-epoch checkpoint flags that were given (a resumed run keeps its others)."""
    keys = ("checkpoint_every", "checkpoint_minutes")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def load_for(
    args: argparse.Namespace, spec: str, seed: int, val_fraction: float
) -> tuple[Any, Any]:
    """(description, dataset): a template built for the data, any other network with the
    data sized for it (a folder's images resized to its input)."""
    if is_template(model_spec(args)):  # built for the data: Input(*shape) ... Dense(K)
        dataset = load_dataset(spec, options(args, seed, val_fraction))
        from cnnlab.models.registry import resolve_for

        return resolve_for(model_spec(args), dataset.input_shape, len(dataset.classes)), dataset
    description = model_description(args)
    dataset = load_dataset(spec, options(args, seed, val_fraction, description.input_shape))
    return description, dataset


def cmd_train(args: argparse.Namespace) -> int:
    """Train a new run, or resume one. The run folder is locked while this runs
    (:func:`cnnlab.train.runs.claim`); a new folder that fails before its first checkpoint
    is removed again. Under torchrun, a restarted group (a worker failed) continues the
    ``--out`` run from its last checkpoint, once its config and data are checked to match."""
    from cnnlab.train.config import TrainConfig

    main_process = distributed.launch_rank() == 0
    if args.resume is not None:
        if distributed.launched() and not main_process:
            return _train(args, args.resume, None)
        with runs.claim(args.resume, resume=True) as out:
            return _train(args, out, None)
    spec = check_spec(args.data)
    restarted = args.out is not None and (Path(args.out) / "last.pt").exists()
    if restarted:  # the same command again: only a restarted torchrun group continues
        from cnnlab.engine.device import resolve_device

        restarted = distributed.group_restarted(resolve_device(args.device))
    if args.out is not None and main_process:  # rank 0 alone: the others never lock it
        runs.check_unlocked(args.out)  # before the data load: a taken folder fails at once
        if not restarted:
            runs.check_out_dir(args.out)
    given = _given(args)
    if given["val_fraction"] is None:  # the recipe's: it is needed to load the data
        given["val_fraction"] = settings(spec).get("val_fraction", TrainConfig().val_fraction)
    description, dataset = load_for(args, spec, args.seed, given["val_fraction"])
    config = make_config(
        TrainConfig,
        model=model_spec(args),
        data=spec,
        seed=args.seed,
        device=args.device,
        **settings(dataset.kind, n_train=len(dataset.splits.y_train), **given),
        **_schedule(args),
    )
    config = budget.fit_eval_chunk(config, description, budget.limit_bytes(args))
    new = (config, description, dataset)
    if restarted:
        check_same_run(args.out, config, description, dataset)
        if main_process:
            print(f"torchrun restarted the workers: continuing {args.out} from its last.pt")
    if distributed.launched():
        # Every process must name the same folder; rank 0 alone checks, creates and locks it.
        if args.out is None:
            raise CnnlabError("under torchrun, give --out: every process writes one run")
        if not main_process:
            return _train(args, args.out, new, resume=restarted)
    with runs.claim(args.out, resume=restarted, stem=description.name) as out:
        return _train(args, out, new, resume=restarted)


def _train(
    args: argparse.Namespace, out: Path, new: tuple[Any, Any, Any] | None, resume: bool = False
) -> int:
    """Train into the claimed folder ``out``: a new run (``new``), or resume the one there
    (``new`` None: as config.json says; ``resume``: as ``new`` says, checked to match)."""
    from dataclasses import replace

    from cnnlab.train.loop import fit
    from cnnlab.train.records import load_model, read_last, read_run_config

    if new is None or resume:
        if (out / "best.pt").exists():
            load_model(out, "best")  # read at the end: a damaged one fails now, not then
        read_last(out)  # the whole training state, checked before the data is loaded
    if new is None:
        config, description = read_run_config(out)
        config = replace(config, **_schedule(args))  # the flags were checked by argparse
        config = budget.fit_eval_chunk(config, description, budget.limit_bytes(args))
        dataset = run_dataset(out, args)
    else:
        config, description, dataset = new
    # a batch that fits one example may not fit memory: refused before any allocation
    budget.check_training(
        description, config.batch_size, config.eval_batch_size, budget.limit_bytes(args)
    )
    main_process = distributed.launch_rank() == 0
    if main_process:
        print(f"training {description.name} on {dataset.description} into {out}")
    metrics = fit(
        config,
        dataset,
        out,
        description=description,
        resume=new is None or resume,
        progress=show_progress(args),
    )
    if main_process:
        test = metrics["test_accuracy"]
        score = "no test set" if test is None else f"test accuracy {test:.4f}"
        print(f"{score}; outputs in {out}/")
    return 0


@writes("evaluate", lambda args: [args.run_dir])  # it rewrites metrics.json
def cmd_evaluate(args: argparse.Namespace) -> int:
    from cnnlab.analysis.evaluation import CHUNK, evaluate_run
    from cnnlab.train.records import read_run_config
    from cnnlab.train.schemas import METRICS, read_metrics

    if not (args.run_dir / "best.pt").exists():  # not regular: the reader says what it is
        raise CnnlabError(f"{args.run_dir} has no best.pt: is it a cnnlab run folder?")
    checkpoint.load_model(args.run_dir, "best")  # a damaged file fails before the data load
    if (args.run_dir / METRICS).exists():
        read_metrics(args.run_dir)  # updated afterwards: a damaged one fails now
    _, description = read_run_config(args.run_dir)
    chunk = budget.fit_chunk(description, CHUNK, budget.limit_bytes(args), "evaluating")
    dataset = run_dataset(args.run_dir, args, args.data)
    metrics = evaluate_run(args.run_dir, dataset, args.device, chunk)
    print(f"test_accuracy {metrics['test_accuracy']:.4f}  test_loss {metrics['test_loss']:.4f}")
    print(f"wrote {args.run_dir / 'metrics.json'} and {args.run_dir / 'confusion.png'}")
    return 0

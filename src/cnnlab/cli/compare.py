"""``cnnlab compare``: train several networks on one dataset (or read finished runs), compare."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnnlab.cli.core import add_data_arg, add_device_arg, is_template, make_config
from cnnlab.cli.datasets import add_dataset_arg, add_image_args, options
from cnnlab.cli.flags import positive_int, seed_int
from cnnlab.cli.progress import Progress
from cnnlab.data.datasets import check_spec, load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.train import runs
from cnnlab.train.recipes import settings


def register(sub: Any) -> None:
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
    add_image_args(p)
    add_device_arg(p)
    p.set_defaults(func=cmd_compare)


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
    with runs.writing([args.out], "compare"):  # --out a run folder: refused while held
        return _compare(args)


def _compare(args: argparse.Namespace) -> int:
    from cnnlab.models import resolve
    from cnnlab.models.registry import resolve_for
    from cnnlab.report.compare import compare, run_summary
    from cnnlab.train.config import TrainConfig
    from cnnlab.train.loop import fit

    run_dirs = list(args.run_dirs)
    for run_dir in run_dirs:
        _check_finished_run(run_dir)
        run_summary(run_dir)  # every run checked before anything is written
    out = runs.prepare_out_dir(args.out) if args.out else runs.new_run_dir(Path("runs"), "compare")
    if not run_dirs:
        fixed = {m: resolve(m) for m in args.models if not is_template(m)}  # fail before the data
        shapes = {d.input_shape for d in fixed.values()}
        network = next(iter(shapes)) if len(shapes) == 1 else None
        spec = check_spec(args.data)
        val_fraction = settings(spec).get("val_fraction", TrainConfig().val_fraction)
        dataset = load_dataset(spec, options(args, args.seed, val_fraction, network))
        descriptions = [
            fixed[m] if m in fixed else resolve_for(m, dataset.input_shape, len(dataset.classes))
            for m in args.models
        ]
        names = [d.name for d in descriptions]
        if len(set(names)) != len(names):
            raise CnnlabError(f"--models names a network twice ({', '.join(names)})")
        prog = Progress.of(args)
        cases = list(zip(args.models, descriptions, strict=True))
        for i, (model_spec_, desc) in enumerate(cases, 1):
            config = make_config(
                TrainConfig,
                model=model_spec_,
                data=dataset.spec,
                seed=args.seed,
                device=args.device,
                **settings(
                    dataset.kind,
                    len(dataset.splits.y_train),
                    epochs=args.epochs,
                    val_fraction=val_fraction,  # the split the data was loaded with
                ),
            )
            # each run's folder made and locked as train's own (cnnlab.train.runs.claim)
            with runs.claim(out / desc.name, log=prog.say, command="compare") as run_dir:
                prog.say(f"[{i}/{len(cases)}] training {desc.name} into {run_dir}")
                with prog.step(f"[{i}/{len(cases)}] {desc.name}"):
                    fit(config, dataset, run_dir, description=desc, progress=prog.bars)
            run_dirs.append(run_dir)
    print(compare(run_dirs, out), end="")
    print(f"wrote {out / 'compare.md'} and {out / 'compare.png'}")
    return 0

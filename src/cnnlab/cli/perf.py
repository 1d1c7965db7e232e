"""Performance sub-command: ``cnnlab speedrun``, the fastest honest way to 99% on MNIST."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnnlab import data, fileio
from cnnlab.cli.core import add_data_arg, add_device_arg, non_negative_int, positive_int
from cnnlab.errors import CnnlabError
from cnnlab.train import runs


def register(sub: Any) -> None:
    p = sub.add_parser(
        "speedrun",
        help="train a small CNN to 99%% MNIST test accuracy as fast as possible, per seed",
        description=(
            "Train the speedrun CNN once per seed on the 60,000 training images (no test "
            "image is used for training or for choosing anything), then report the "
            "training seconds (from the images in memory to a trained model), the "
            "parameters and the test accuracy of each seed, and the means."
        ),
    )
    p.add_argument("--seeds", type=positive_int, default=5, help="how many seeds (default 5)")
    p.add_argument("--first-seed", type=non_negative_int, default=0, metavar="SEED")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write JSON")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write each seed's model as a run folder DIR/seed-N/ (for predict, serve, "
        "explain, export)",
    )
    p.add_argument(
        "--threads", type=non_negative_int, default=0, help="torch threads (0: torch's default)"
    )
    add_data_arg(p)
    add_device_arg(p)
    p.set_defaults(func=cmd_speedrun)


def cmd_speedrun(args: argparse.Namespace) -> int:

    if args.json is not None and not args.json.parent.is_dir():
        raise CnnlabError(f"cannot write {args.json}: {args.json.parent} is not a folder")
    with runs.writing([args.out, args.json], "speedrun"):
        return _speedrun(args)


def _speedrun(args: argparse.Namespace) -> int:
    from cnnlab.engine.device import resolve_device
    from cnnlab.train.speedrun import SpeedrunConfig, run

    if args.out is not None:
        runs.prepare_out_dir(args.out)
    device = resolve_device(args.device)
    config = SpeedrunConfig(device=str(device), threads=args.threads)
    mnist = data.load_mnist(args.data_dir)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    print(f"speedrun on {device}: {config.epochs:g} epochs, batch {config.batch_size}")
    print(f"{'seed':>4}  {'train s':>8}  {'params':>7}  {'test acc':>8}")

    def show(result: dict[str, Any], params: int) -> None:
        print(
            f"{result['seed']:>4}  {result['train_seconds']:>8.2f}  {params:>7,}  "
            f"{result['test_accuracy']:>8.4f}",
            flush=True,
        )

    summary = run(mnist, config, seeds, on_seed=show, out_dir=args.out)
    print(
        f"mean  {summary['mean_train_seconds']:>8.2f}  {summary['params']:>7,}  "
        f"{summary['mean_test_accuracy']:>8.4f}"
    )
    if args.json is not None:
        fileio.write_json(args.json, summary)
        print(f"wrote {args.json}")
    if args.out is not None:
        print(f"wrote run folders {args.out}/seed-*/ (the float32 network of each seed)")
    return 0

"""The data flags every command shares, and a run's data rebuilt from what the run recorded.

``--data SPEC`` names any registered source (``mnist``, ``folder:PATH``, ``npz:PATH``,
``ucr:NAME``, ...); ``--image-size``, ``--channels``, ``--interpolation``, ``--fit``,
``--strict``, ``--test-split`` and ``--workers`` say how a folder of images becomes arrays.
A run keeps its dataset's record (``config.json``'s ``data``): :func:`run_dataset` loads the
same data with the same preprocessing for every later command, or says in one line why it
cannot (the data moved, changed, or was arrays given in Python).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from cnnlab import budget
from cnnlab.data import DataOptions, Dataset, load_dataset, spec_help
from cnnlab.errors import CnnlabError, printable, short

MAX_SIDE = 4096
MAX_WORKERS = 256


def image_size(text: str) -> tuple[int, int]:
    """``64`` or ``64x48`` (height x width) as (H, W)."""
    m = re.fullmatch(r"(\d{1,5})(?:x(\d{1,5}))?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"expected N or HxW (e.g. 64 or 64x48), got {short(text)}")
    h = int(m.group(1))
    w = int(m.group(2)) if m.group(2) else h
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise argparse.ArgumentTypeError(f"image sides must be 1 to {MAX_SIDE}, got {text!r}")
    return h, w


def small_int(text: str, hi: int) -> int:
    """A whole number from 1 to ``hi``, its digits bounded before int() reads them."""
    t = text.strip()
    value = int(t) if re.fullmatch(r"[0-9]{1,5}", t) else 0
    if not 1 <= value <= hi:
        raise argparse.ArgumentTypeError(
            f"must be a whole number from 1 to {hi}, got {printable(repr(text), 60)}"
        )
    return value


def workers_count(text: str) -> int:
    return small_int(text, MAX_WORKERS)


def channel_count(text: str) -> int:
    return small_int(text, 4)  # then argparse's choices: 1, 3 or 4


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def val_fraction(text: str) -> float:
    """A fraction, or 0: no held-out split (ucr: validation is all of TRAIN)."""
    try:
        if float(text) == 0.0:
            return 0.0
    except ValueError:
        pass
    return fraction(text)


def add_dataset_arg(p: argparse.ArgumentParser, default: str | None = "mnist") -> None:
    p.add_argument(
        "--data",
        default=default,
        metavar="DATASET",
        help=f"{spec_help()} (default: {default or 'the data the run was trained on'})",
    )
    budget.add_option(p)


def add_data_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder holding the standard sets (mnist/, ucr/, ...; default: $CNNLAB_DATA, "
        "then the cache, ~/.cache/cnnlab); a folder: or npz: dataset is named by its path",
    )


def add_image_args(p: argparse.ArgumentParser) -> None:
    """How a folder of images becomes arrays (ignored by other sources)."""
    g = p.add_argument_group("images from a folder (--data folder:PATH)")
    g.add_argument(
        "--image-size",
        type=image_size,
        default=None,
        metavar="HxW",
        help="resize to HxW (default: the network's input size; for a template, the most "
        "common size in the folder, longer side at most 128)",
    )
    g.add_argument(
        "--channels",
        type=channel_count,
        choices=(1, 3, 4),
        default=None,
        help="1 grey, 3 RGB, 4 RGBA (default: the network's; for a template, 1 if every "
        "image is grey, else 3)",
    )
    g.add_argument(
        "--interpolation",
        choices=("bilinear", "nearest", "bicubic", "area", "lanczos"),
        default="bilinear",
        help="resampling (default: bilinear, as Keras)",
    )
    g.add_argument(
        "--fit",
        choices=("stretch", "crop", "pad"),
        default="stretch",
        help="to another aspect ratio: stretch (Keras' default), crop the centre, or pad",
    )
    g.add_argument(
        "--strict",
        action="store_true",
        help="refuse a file that does not decode (default: skip it)",
    )
    g.add_argument(
        "--test-split",
        type=fraction,
        default=0.2,
        metavar="FRACTION",
        help="held out for the test set, stratified and seeded, where the data has no test "
        "split of its own (default: 0.2)",
    )
    g.add_argument(
        "--workers",
        type=workers_count,
        default=None,
        help=f"decoding processes, 1 to {MAX_WORKERS} (default: CPUs)",
    )


def _network_image_shape(shape: tuple[int, ...] | None) -> tuple[int, int, int] | None:
    """A network's (H, W, C) where it takes images a folder can give (1, 3 or 4 channels)."""
    if shape is not None and len(shape) == 3 and shape[-1] in (1, 3, 4):
        return (int(shape[0]), int(shape[1]), int(shape[2]))
    return None


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars on a terminal, unless --quiet; never into a log or a pipe (as Keras'
    bar in a non-interactive run, one line per epoch is all a log gets)."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def options(
    args: argparse.Namespace,
    seed: int,
    val_fraction: float,
    network_shape: tuple[int, ...] | None = None,
) -> DataOptions:
    """DataOptions from the flags; images sized for ``network_shape`` unless the flags say
    otherwise (a template: ``network_shape`` None, the data decides)."""
    shape = _network_image_shape(network_shape)
    size, channels = getattr(args, "image_size", None), getattr(args, "channels", None)
    if size is not None or channels is not None:
        if shape is not None and (
            size not in (None, shape[:2]) or channels not in (None, shape[2])
        ):
            want = "x".join(map(str, shape))
            raise CnnlabError(
                f"the network takes {want} images: --image-size and --channels must agree"
            )
        if shape is None and (size is None or channels is None):
            raise CnnlabError("give --image-size and --channels together for a template network")
        shape = (*size, channels) if size is not None and channels is not None else shape
    return DataOptions(
        data_dir=getattr(args, "data_dir", None),
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=getattr(args, "test_split", 0.2),
        image_shape=shape,
        interpolation=getattr(args, "interpolation", "bilinear"),
        fit=getattr(args, "fit", "stretch"),
        strict=getattr(args, "strict", False),
        workers=getattr(args, "workers", None),
        progress=show_progress(args),
        max_memory_bytes=budget.limit_bytes(args),
    )


def replay_spec(record: dict[str, Any]) -> str:
    """A run's dataset spec, with a folder's or an .npz's path made absolute as recorded (the
    spec keeps the path as typed, which another working directory would read elsewhere)."""
    spec = str(record["spec"])
    pre = record.get("preprocessing") or {}
    name = spec.partition(":")[0]
    if name == "folder" and isinstance(pre.get("root"), str):
        return f"folder:{pre['root']}"
    if name == "npz" and isinstance(pre.get("path"), str):
        return f"npz:{pre['path']}"
    return spec


def run_dataset(run_dir: Path, args: argparse.Namespace, data: str | None = None) -> Dataset:
    """The dataset a run was trained on, rebuilt with its recorded preprocessing; or, with
    ``data`` (``--data``), that dataset sized for the run's network. CnnlabError in one line
    where the run's data cannot be had or no longer agrees with the run."""
    from cnnlab.cli.core import run_config_or_default
    from cnnlab.train.schemas import read_run_data

    config = run_config_or_default(run_dir)
    found = read_run_data(run_dir)
    if data is not None or found.record is None:
        from cnnlab.train.checkpoint import load_model

        network = load_model(run_dir, "best")[0].description.input_shape
        spec = data or found.spec or config.data
        opts = options(args, config.seed, config.val_fraction, network)
        return load_dataset(spec, opts)
    record = found.record
    opts = replace(options(args, config.seed, config.val_fraction), image_shape=None)
    try:
        dataset = load_dataset(replay_spec(record), opts.replay(record))
    except CnnlabError as exc:
        raise CnnlabError(
            f"{run_dir}: its data ({record['spec']}) cannot be rebuilt: {exc}"
        ) from None
    now, then = dataset.classes, list(record["classes"])
    if _numbered(now) and _numbered(then) and len(now) <= len(then):
        dataset = replace(dataset, classes=then)  # label numbers extended to the outputs
    elif now != then:
        raise CnnlabError(
            f"{run_dir}: its data ({record['spec']}) has changed: classes {_short(now)} now, "
            f"{_short(then)} when the run was trained"
        )
    return dataset


def _numbered(names: list[str]) -> bool:
    return names == [str(i) for i in range(len(names))]


def _short(names: list[str]) -> str:
    shown = ", ".join(names[:4]) + (f", ... ({len(names)})" if len(names) > 4 else "")
    return f"[{shown}]"

"""What a training run writes and reads back: config.json, model.json, checkpoints, metrics.

Every file a command reads from a run folder is checked against its schema
(:mod:`cnnlab.train.schemas`, :mod:`cnnlab.train.checkpoint`), so a damaged or hand-edited
folder gets one line naming the file and the field, never a traceback.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from cnnlab import fileio
from cnnlab.data import Dataset
from cnnlab.data.scaling import InputScale
from cnnlab.engine.choice import EngineChoice
from cnnlab.engine.fastpath import EpochSums
from cnnlab.errors import CnnlabError
from cnnlab.models import ModelDescription, Network
from cnnlab.train import distributed, runs
from cnnlab.train.checkpoint import load_checkpoint, load_model, make_checkpoint, run_name
from cnnlab.train.config import SCHEDULE_ONLY, TrainConfig
from cnnlab.train.position import Position
from cnnlab.train.schemas import (
    CONFIG,
    METRICS,
    MODEL,
    check_training_state,
    read_metrics,
    read_run_config,
    saved_description,
)
from cnnlab.train.stopping import EarlyStopping, TrainState


def write_run_config(
    out_dir: Path,
    config: TrainConfig,
    description: ModelDescription,
    dataset: Dataset,
    device: torch.device,
    ctx: distributed.DistContext,
    scale: InputScale,
    choice: EngineChoice,
) -> None:
    """``model.json`` (the description) and ``config.json``: the resolved config, the data
    (its spec, class names and preprocessing, enough to rebuild it), how its stored
    values became network inputs, and the run's engine ``choice`` as training and
    evaluation read it (:mod:`cnnlab.engine.choice`)."""
    splits = dataset.splits
    resolved = {
        "device": str(device),
        # whether the whole step runs in the C++ kernels, and where each layer ran
        "native_kernels": choice.whole is not None,
        "blocks": dict(choice.layers),
        "engine": choice.to_dict(),
        "threads": torch.get_num_threads(),
        "world_size": ctx.world_size,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "n_train": len(splits.x_train),
        "n_val": len(splits.x_val),
        "n_test": len(splits.x_test),
        "input_scale": scale.to_dict(),
    }
    fileio.write_json(out_dir / MODEL, description.to_dict())
    run = {
        "config": asdict(config),
        "model": description.to_dict(),
        "data": dataset.record(),
        "resolved": resolved,
    }
    fileio.write_json(out_dir / CONFIG, run)


def check_same_run(
    out_dir: Path, config: TrainConfig, description: ModelDescription, dataset: Dataset
) -> None:
    """Refuse, in one line, to continue the run in ``out_dir`` with another config, network
    or data than the one it was started with (a restarted torchrun command continues it)."""
    saved, described = read_run_config(out_dir)
    mine, theirs = asdict(config), asdict(saved)
    for key, value in mine.items():
        if key not in SCHEDULE_ONLY and theirs[key] != value:
            raise CnnlabError(
                f"{out_dir} holds a run with {key}={theirs[key]!r}, this command has "
                f"{key}={value!r}: not the same run; choose another --out"
            )
    if described != description:
        raise CnnlabError(
            f"{out_dir} holds a run of another network ({described.name!r}, this command "
            f"trains {description.name!r}); choose another --out"
        )
    record = fileio.read_json(out_dir / CONFIG)
    data = json.loads(json.dumps(dataset.record()))  # as config.json holds it
    splits = dataset.splits
    sizes = {"n_train": len(splits.x_train), "n_val": len(splits.x_val)}
    sizes["n_test"] = len(splits.x_test)
    resolved = record.get("resolved") if isinstance(record.get("resolved"), dict) else {}
    same_sizes = all(resolved.get(k) == v for k, v in sizes.items())
    if record.get("data") != data or not same_sizes:
        raise CnnlabError(
            f"{out_dir} holds a run on other data than this command's ({dataset.description}); "
            "choose another --out"
        )


def save_best(out_dir: Path, description: ModelDescription, model: nn.Module, epoch: int) -> None:
    runs.save_torch(out_dir / "best.pt", make_checkpoint(description, model, epoch))


def save_last(
    out_dir: Path,
    description: ModelDescription,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    shuffle: torch.Generator,
    state: TrainState,
    *,
    ranks_rng: list[dict[str, Any]] | None = None,
    position: Position | None = None,
) -> None:
    """last.pt (and history.csv at an epoch's end): everything --resume needs.

    ``ranks_rng``: every process's own random streams under torchrun (rank 0's are in
    ``rng`` too); ``position``: where inside an epoch a mid-epoch checkpoint stands
    (:mod:`cnnlab.train.position`). Written atomically: a kill leaves the last good one."""
    if position is None:
        runs.write_history(out_dir / "history.csv", state.history)
    last = make_checkpoint(description, model, state.epoch) | {
        "optimizer": optimizer.state_dict(),
        "rng": runs.rng_state(shuffle),
        "stopping": asdict(state.stopping),
        "best_val_loss": state.best_val_loss,
        "best_epoch": state.best_epoch,
        "train_seconds": state.train_seconds,
        "finished": state.finished,
        "history": state.history,
    }
    if ranks_rng is not None:
        last["ranks_rng"] = ranks_rng
    if position is not None:
        last["position"] = position.to_dict()
    runs.save_torch(out_dir / "last.pt", last)


@dataclass
class Restored:
    """What ``last.pt`` gives a resumed run besides the weights and the optimiser."""

    state: TrainState
    position: Position | None  # inside an epoch, for a mid-epoch checkpoint
    ranks_rng: list[dict[str, Any]] | None  # each process's random streams, under torchrun


def restore(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, shuffle: torch.Generator
) -> Restored:
    """Load ``last.pt`` (checked whole first: :func:`read_last`) into the model, the
    optimiser and the generator; the run's state."""
    _, ckpt = read_last(Path(path).parent)
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        runs.set_rng_state(shuffle, ckpt["rng"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CnnlabError(f"{path} does not hold this run's training state ({why})") from None
    state = TrainState(
        epoch=ckpt["epoch"],
        stopping=EarlyStopping(**ckpt["stopping"]),
        best_val_loss=float(ckpt["best_val_loss"]),
        best_epoch=int(ckpt["best_epoch"]),
        train_seconds=float(ckpt["train_seconds"]),
        finished=bool(ckpt["finished"]),
        history=list(ckpt["history"]),
    )
    position = ckpt.get("position")
    return Restored(state, position, ckpt.get("ranks_rng"))


def read_last(run_dir: Path) -> tuple[Network, dict[str, Any]]:
    """``last.pt`` checked whole: envelope, weights, the run's network, training state."""
    run_dir = Path(run_dir)
    path = run_dir / "last.pt"
    if not path.exists() and (run_dir / METRICS).exists():
        raise CnnlabError(f"{path} not found: a finished run without training state (imported?)")
    if not path.exists():
        raise CnnlabError(
            f"{path} not found: the run stopped before its first epoch ended, so there is "
            f"nothing to resume; start it afresh with cnnlab train --out {run_dir} (which "
            "reuses such a folder)"
        )
    model, ckpt = load_model(run_dir, "last")
    check_training_state(ckpt, path, model)
    if ckpt.get("position") is not None:  # parsed here: every reader gets it checked
        ckpt["position"] = Position.parse(ckpt["position"], path, ckpt["epoch"])
    ranks_rng = ckpt.get("ranks_rng")
    if ranks_rng is not None:
        ok = isinstance(ranks_rng, list) and all(
            isinstance(r, dict) and isinstance(r.get("torch"), torch.Tensor) for r in ranks_rng
        )
        if not ok:
            raise CnnlabError(f"{path}: field 'ranks_rng' must list each process's generator")
    return model, ckpt


def load_best(out_dir: Path) -> tuple[Network, dict[str, Any]]:
    return load_model(out_dir, "best")


def write_metrics(
    out_dir: Path,
    model: Network,
    ckpt: dict[str, Any],
    state: TrainState,
    config: TrainConfig,
    test_loss: float | None,
    test_acc: float | None,
) -> dict[str, Any]:
    """metrics.json; the test metrics are None for a run without a test set."""
    desc = model.description
    metrics = {
        "model": desc.name,
        "case": desc.name,  # the key's name before model descriptions, for older readers
        "params": desc.params,  # as Keras counts them: BatchNormalization's statistics too
        "trainable_params": desc.trainable_params,
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "best_epoch": ckpt["epoch"],
        "epochs_run": state.epoch,
        "stopped_early": state.epoch < config.epochs,
        "best_val_loss": state.best_val_loss,
        # the accuracy itself: early stopping on val_loss keeps minus the loss as its best
        "best_val_accuracy": max((row["val_accuracy"] for row in state.history), default=None),
        "monitor": config.monitor,  # what early stopping watched (its best: best_<monitor>)
        "train_seconds": state.train_seconds,
        "seconds_per_epoch": state.train_seconds / max(state.epoch, 1),
    }
    fileio.write_json(out_dir / METRICS, metrics)
    return metrics


def progress_callback(bar: tqdm, seen: int = 0) -> Callable[[int, EpochSums], None]:
    """A progress-bar callback that reads the running sums (a host sync) only now and then;
    ``seen``: the samples the sums already hold (a resumed epoch)."""
    steps = 0

    def update(batch_len: int, sums: EpochSums) -> None:
        nonlocal seen, steps
        seen += batch_len
        steps += 1
        bar.update(batch_len)
        if steps % 100 == 1:
            bar.set_postfix(
                loss=f"{sums.loss.item() / max(seen, 1):.4f}",
                acc=f"{sums.hits.item() / max(seen, 1):.4f}",
            )

    return update


__all__ = [
    "load_checkpoint",
    "load_model",
    "read_metrics",
    "read_run_config",
    "run_name",
    "saved_description",
]

"""What a training run writes and reads back: config.json, model.json, checkpoints, metrics.

Every file a command reads from a run folder is checked against its schema here, so a
damaged or hand-edited folder gets one line naming the file and the field, never a
traceback.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from cnnlab import fileio
from cnnlab.data import Splits
from cnnlab.engine import native
from cnnlab.engine.fastcase1 import matches_kernel
from cnnlab.engine.fastpath import EpochSums
from cnnlab.errors import CnnlabError
from cnnlab.models import DescriptionError, ModelDescription, Network
from cnnlab.train import distributed, runs
from cnnlab.train.checkpoint import load_checkpoint, load_model, make_checkpoint, run_name
from cnnlab.train.config import TrainConfig
from cnnlab.train.stopping import EarlyStopping, TrainState

CONFIG, MODEL, METRICS = "config.json", "model.json", "metrics.json"


def write_run_config(
    out_dir: Path,
    config: TrainConfig,
    description: ModelDescription,
    splits: Splits,
    device: torch.device,
    ctx: distributed.DistContext,
) -> None:
    """``model.json`` (the description) and ``config.json`` (the resolved config)."""
    fast = config.engine == "fast"
    kernel = fast and config.native and device.type == "cpu"
    kernel = kernel and matches_kernel(description) and native.load()
    resolved = {
        "device": str(device),
        # the fast engine's whole-step C++ kernel, or PyTorch ops layer by layer
        "native_kernels": bool(kernel),
        "threads": torch.get_num_threads(),
        "world_size": ctx.world_size,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "n_train": len(splits.x_train),
        "n_val": len(splits.x_val),
        "n_test": len(splits.x_test),
    }
    fileio.write_json(out_dir / MODEL, description.to_dict())
    run = {"config": asdict(config), "model": description.to_dict(), "resolved": resolved}
    fileio.write_json(out_dir / CONFIG, run)


def read_run_config(run_dir: Path) -> tuple[TrainConfig, ModelDescription]:
    """A run folder's config and description, validated; CnnlabError naming the field."""
    path = Path(run_dir) / CONFIG
    data = fileio.read_json(path)
    if not isinstance(data, dict):
        raise CnnlabError(f"{path} must hold a JSON object, got {type(data).__name__}")
    if "config" not in data:
        raise CnnlabError(f"{path} lacks the field 'config'")
    try:
        config = TrainConfig.from_dict(data["config"])
    except (TypeError, ValueError) as exc:
        raise CnnlabError(f"{path}: field 'config': {exc}") from None
    return config, saved_description(run_dir, data)


def saved_description(run_dir: Path, data: dict[str, Any] | None = None) -> ModelDescription:
    """The description a run was trained with (config.json's ``model``, or the registry
    name of a run made before descriptions were stored)."""
    path = Path(run_dir) / CONFIG
    if data is None:
        data = fileio.read_json(path)
        if not isinstance(data, dict):
            raise CnnlabError(f"{path} must hold a JSON object")
    raw = data.get("model")
    if raw is None:
        from cnnlab.models import resolve

        cfg = data.get("config")
        name = cfg.get("case", cfg.get("model")) if isinstance(cfg, dict) else None
        if not isinstance(name, str):
            raise CnnlabError(f"{path} lacks the field 'model'")
        return resolve(name)
    try:
        return ModelDescription.from_dict(raw)
    except DescriptionError as exc:
        raise CnnlabError(f"{path}: field 'model': {exc}") from None


def save_best(out_dir: Path, description: ModelDescription, model: nn.Module, epoch: int) -> None:
    runs.save_torch(out_dir / "best.pt", make_checkpoint(description, model, epoch))


def save_last(
    out_dir: Path,
    description: ModelDescription,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    shuffle: torch.Generator,
    state: TrainState,
) -> None:
    """history.csv and last.pt after an epoch: everything --resume needs."""
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
    runs.save_torch(out_dir / "last.pt", last)


def restore(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, shuffle: torch.Generator
) -> TrainState:
    """Load ``last.pt`` into the model, optimiser and generator; the run's state."""
    ckpt = load_checkpoint(path)
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        runs.set_rng_state(shuffle, ckpt["rng"])
        return TrainState(
            epoch=ckpt["epoch"],
            stopping=EarlyStopping(**ckpt["stopping"]),
            best_val_loss=float(ckpt["best_val_loss"]),
            best_epoch=int(ckpt["best_epoch"]),
            train_seconds=float(ckpt["train_seconds"]),
            finished=bool(ckpt["finished"]),
            history=list(ckpt["history"]),
        )
    except KeyError as exc:
        raise CnnlabError(f"{path} lacks the field {exc.args[0]!r}: cannot resume") from None
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CnnlabError(f"{path} does not hold this run's training state ({exc})") from None


def load_best(out_dir: Path) -> tuple[Network, dict[str, Any]]:
    return load_model(out_dir, "best")


def write_metrics(
    out_dir: Path,
    model: Network,
    ckpt: dict[str, Any],
    state: TrainState,
    config: TrainConfig,
    test_loss: float,
    test_acc: float,
) -> dict[str, Any]:
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
        "best_val_accuracy": state.stopping.best,
        "train_seconds": state.train_seconds,
        "seconds_per_epoch": state.train_seconds / max(state.epoch, 1),
    }
    fileio.write_json(out_dir / METRICS, metrics)
    return metrics


def read_metrics(run_dir: Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """metrics.json, checked: an object whose numbers are numbers; ``required`` present."""
    path = Path(run_dir) / METRICS
    data = fileio.read_json(path)
    if not isinstance(data, dict):
        raise CnnlabError(f"{path} must hold a JSON object, got {type(data).__name__}")
    for key in required:
        if key not in data:
            raise CnnlabError(f"{path} lacks the field {key!r}")
    for key in ("test_accuracy", "test_loss", "params", "best_epoch", "epochs_run"):
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise CnnlabError(f"{path}: field {key!r} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise CnnlabError(f"{path}: field {key!r} must be finite, got {value!r}")
    for key in ("model", "case"):
        if key in data and not isinstance(data[key], str):
            raise CnnlabError(f"{path}: field {key!r} must be a string")
    return data


def progress_callback(bar: tqdm) -> Callable[[int, EpochSums], None]:
    """A progress-bar callback that reads the running sums (a host sync) only now and then."""
    seen = steps = 0

    def update(batch_len: int, sums: EpochSums) -> None:
        nonlocal seen, steps
        seen += batch_len
        steps += 1
        bar.update(batch_len)
        if steps % 100 == 1:
            bar.set_postfix(
                loss=f"{sums.loss.item() / seen:.4f}", acc=f"{sums.hits.item() / seen:.4f}"
            )

    return update


__all__ = ["load_checkpoint", "load_model", "read_metrics", "read_run_config", "run_name"]

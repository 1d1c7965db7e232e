"""The chapter's training recipe in plain PyTorch, with Keras' semantics where they decide a result.

Recipe (:class:`~cnnlab.train.config.TrainConfig` defaults): seed 42, Adam (lr 1e-3,
epsilon 1e-7), cross-entropy, batch 32, up to 200 epochs, early stopping on validation
accuracy with patience 5 (Keras' ``EarlyStopping`` rule), best checkpoint by validation
loss (Keras' ``ModelCheckpoint`` with ``save_best_only``), then the best checkpoint
evaluated on the test set. Any network description trains this way.

Two engines compute the same thing: ``"fast"`` (the default, :mod:`cnnlab.engine.fastpath`)
and ``"plain"``, the straightforward PyTorch loop of :func:`train_epoch`, kept as the
reference the fast one is tested against.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from cnnlab.data import Dataset, Splits
from cnnlab.data.scaling import InputScale
from cnnlab.engine.choice import EngineChoice, for_model
from cnnlab.engine.device import resolve_device
from cnnlab.engine.fastpath import Step, make_step
from cnnlab.engine.feed import Feed
from cnnlab.engine.inference import evaluate_chunks
from cnnlab.errors import CnnlabError
from cnnlab.models import ModelDescription, Network, build_module, resolve
from cnnlab.train import distributed, records, runs
from cnnlab.train.config import ENGINES, TrainConfig
from cnnlab.train.distributed import DistContext
from cnnlab.train.epochs import PlainStep, evaluate, save_epoch_end, train_one_epoch
from cnnlab.train.fit_data import as_dataset, check_data, data_scale, named_for
from cnnlab.train.plateau import Plateau, learning_rate, make_plateau, set_learning_rate
from cnnlab.train.position import Position, Schedule, set_process_rng
from cnnlab.train.stopping import EarlyStopping, TrainState

__all__ = ["ENGINES", "EarlyStopping", "TrainConfig", "fit", "make_optimizer", "train_epoch"]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam as Keras sets it up; the fast engine keeps its state in the same object."""
    fused = config.engine == "fast"
    return torch.optim.Adam(model.parameters(), lr=config.lr, eps=config.adam_eps, fused=fused)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    bar: tqdm | None = None,
    ctx: distributed.DistContext | None = None,
) -> tuple[float, float]:
    """One pass over ``x[order]`` (float inputs on one device) in mini-batches; returns
    (mean loss, accuracy). :func:`train_batches` over the batches of ``x``."""
    ctx = ctx or distributed.DistContext()

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            mine = distributed.shard(idx, ctx)
            yield x[mine], y[mine], len(idx)

    return train_batches(model, optimizer, batches(), len(order), x.device, bar, ctx)


def train_batches(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, int]],
    count: int,
    device: torch.device,
    bar: tqdm | None = None,
    ctx: distributed.DistContext | None = None,
    scale: InputScale | None = None,
) -> tuple[float, float]:
    """The plain reference loop: one pass over (inputs, labels, global batch size) batches;
    returns (mean loss, accuracy) over the ``count`` samples.

    Loss and hits accumulate on the device: nothing waits for the host per step. Under
    torchrun ``model`` is a DistributedDataParallel and each batch is this process's share
    of a global batch; its loss sum is scaled by world size / global batch size, so the
    gradient DDP averages is the global batch's mean gradient, and the epoch sums are
    all-reduced.
    """
    ctx = ctx or distributed.DistContext()
    model.train()
    step = PlainStep(model, optimizer, ctx, scale)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    hits = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    for k, (xb, yb, denom) in enumerate(batches):
        batch_loss, batch_hits = step(xb, yb, denom)
        loss_sum += batch_loss
        hits += batch_hits
        seen += denom
        if bar is not None:
            bar.update(denom)
            if k % 100 == 0:  # a host sync, so only now and then
                done = seen / ctx.world_size
                bar.set_postfix(
                    loss=f"{loss_sum.item() / done:.4f}", acc=f"{hits.item() / done:.4f}"
                )
    distributed.all_reduce_sum(loss_sum, ctx)
    distributed.all_reduce_sum(hits, ctx)
    return loss_sum.item() / count, hits.item() / count


EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class Session:
    """One run in progress: the network, its optimiser and data, where it runs."""

    config: TrainConfig
    description: ModelDescription
    model: Network
    optimizer: torch.optim.Optimizer
    shuffle: torch.Generator
    state: TrainState
    device: torch.device
    ctx: distributed.DistContext
    step: Step | None  # the fast engine's step; None runs the plain loop
    ddp_model: nn.Module
    scale: InputScale  # how the data's stored values become network inputs
    choice: EngineChoice  # the engine, decided once: the step, evaluation, config.json
    plateau: Plateau | None = None  # ReduceLROnPlateau, when the config turns it on
    # A resumed run: where inside an epoch its last.pt stands (a mid-epoch checkpoint),
    # and each process's random streams at the last epoch's end (under torchrun)
    position: Position | None = None
    ranks_rng: list[dict[str, Any]] | None = None
    schedule: Schedule = field(default_factory=lambda: Schedule(0, 0.0, 1, DistContext()))


def _start(
    config: TrainConfig,
    description: ModelDescription,
    device: torch.device,
    ctx: distributed.DistContext,
    out_dir: Path,
    resume: bool,
    scale: InputScale,
    log: Callable[[str], None],
) -> Session:
    """Build the network and optimiser (or restore them from ``last.pt``)."""
    torch.manual_seed(config.seed)
    model = build_module(description).to(device)
    optimizer = make_optimizer(model, config)
    shuffle = torch.Generator().manual_seed(config.seed)
    state = TrainState(stopping=EarlyStopping(config.patience))
    restored = None
    if resume:
        restored = records.restore(out_dir / "last.pt", model, optimizer, shuffle)
        state = restored.state
        at = restored.position
        where = f"after epoch {state.epoch}" if at is None else f"at step {at.step} of epoch "
        log(f"resuming {out_dir} {where}{'' if at is None else at.epoch}")
    choice = for_model(model, engine=config.engine, native=config.native)
    fast = choice.fast
    grad_hook = partial(distributed.all_reduce_grads, ctx=ctx) if ctx.enabled else None
    # After resume: the step reads Adam's restored state.
    step = make_step(model, optimizer, grad_hook, scale=scale, choice=choice) if fast else None
    # The plain engine trains through DistributedDataParallel, which averages gradients
    # in its backward hooks; the fast engine all-reduces them in its own step (grad_hook).
    ddp_model = DistributedDataParallel(model) if ctx.enabled and not fast else model
    plateau = make_plateau(config.plateau_factor, config.plateau_patience, config.min_lr)
    if plateau is not None and resume:  # its state follows from the losses so far
        plateau.replay(state.history, config.lr)
    return Session(
        config, description, model, optimizer, shuffle, state, device, ctx, step, ddp_model,
        scale, choice, plateau,
        restored.position if restored else None, restored.ranks_rng if restored else None,
    )  # fmt: skip


def _resume_streams(s: Session, n_train: int, out_dir: Path) -> None:
    """Each process's own random streams where the checkpoint left them (rank 0's were
    set by the restore); a mid-epoch position from another run or group size is refused."""
    if s.position is not None:
        s.position.check_fits(out_dir / "last.pt", s.config.batch_size, n_train, s.ctx.world_size)
        set_process_rng(s.position.ranks[s.ctx.rank])
    elif s.ranks_rng is not None and len(s.ranks_rng) == s.ctx.world_size:
        set_process_rng(s.ranks_rng[s.ctx.rank])


def fit(
    config: TrainConfig,
    data: Dataset | Splits,
    out_dir: Path,
    *,
    description: ModelDescription | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``description`` (default: ``config.model`` resolved) on ``data`` into
    ``out_dir``; returns the metrics. ``data``: a :class:`~cnnlab.data.Dataset` (its record
    is kept in the run), or bare Splits of the dataset ``config.data`` names. Under
    torchrun, every process calls this."""
    dataset = as_dataset(data, config)
    device = resolve_device(config.device)
    if description is None:
        description = records.saved_description(out_dir) if resume else resolve(config.model)
    check_data(description, dataset)
    dataset = named_for(description, dataset)
    scale = data_scale(description, dataset)
    with distributed.process_group(device) as ctx:
        device = distributed.local_device(device, ctx)
        if not ctx.is_main:  # only rank 0 prints and writes files
            progress, log = False, _silent
        if config.threads:
            torch.set_num_threads(config.threads)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest
        log(f"inputs: {scale.reason}")
        s = _start(config, description, device, ctx, out_dir, resume, scale, log)
        try:
            if not resume and ctx.is_main:
                records.write_run_config(
                    out_dir, config, description, dataset, device, ctx, scale, s.choice
                )
            metrics = _loop(s, dataset.splits, out_dir, progress, on_epoch_end, log)
            distributed.barrier(ctx)
        except RuntimeError as exc:  # a collective failed: a peer was killed or is gone
            why = distributed.peer_loss(exc) if ctx.enabled else None
            if why is None:
                raise
            raise CnnlabError(
                f"rank {ctx.rank} of {ctx.world_size} lost its peers ({why}); {out_dir} "
                "keeps its last checkpoint"
            ) from None
    return metrics


def _loop(
    s: Session,
    splits: Splits,
    out_dir: Path,
    progress: bool,
    on_epoch_end: EpochCallback | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Epochs until early stopping or the epoch limit, then the test score (rank 0)."""
    config, state = s.config, s.state
    # Data that fits in memory moves to the device once and batches are gathered there;
    # a split that stays on the disk is read batch by batch (cnnlab.engine.feed).
    train = Feed(splits.x_train, splits.y_train, s.device)
    val = Feed(splits.x_val, splits.y_val, s.device)
    steps = math.ceil(len(train) / config.batch_size)
    every, minutes = config.checkpoint_every, config.checkpoint_minutes
    s.schedule = Schedule(every, minutes, steps, s.ctx)
    _resume_streams(s, len(train), out_dir)
    while not state.finished and state.epoch < config.epochs:
        epoch = state.epoch + 1
        start = time.perf_counter()
        loss, acc, carried = train_one_epoch(s, train, epoch, out_dir, progress)
        val_loss, val_acc = evaluate(s, val)
        seconds = time.perf_counter() - start + carried
        row = {
            "epoch": epoch,
            "loss": loss,
            "accuracy": acc,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "seconds": seconds,
        }
        state.history.append(row)
        state.train_seconds += seconds
        state.epoch = epoch
        note = ""
        if val_loss < state.best_val_loss:
            note = f"  val_loss improved from {state.best_val_loss:.5f}, saving best.pt"
            state.best_val_loss, state.best_epoch = val_loss, epoch
            if s.ctx.is_main:
                records.save_best(out_dir, s.description, s.model, epoch)
        watched = val_acc if config.monitor == "val_accuracy" else -val_loss
        state.finished = state.stopping.step(epoch, watched) or epoch >= config.epochs
        if s.plateau is not None:
            lr = learning_rate(s.optimizer)
            new_lr = s.plateau.step(loss, lr)
            if new_lr != lr:
                set_learning_rate(s.optimizer, new_lr)
                note += f"  loss on a plateau, learning rate {lr:g} -> {new_lr:g}"
        log(
            f"epoch {epoch}: loss {loss:.4f} - accuracy {acc:.4f} - val_loss {val_loss:.4f}"
            f" - val_accuracy {val_acc:.4f} - {seconds:.1f}s{note}"
        )
        save_epoch_end(s, out_dir)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    if state.stopping.wait >= config.patience and state.epoch < config.epochs:
        log(
            f"early stopping after epoch {state.epoch}: no better {config.monitor} "
            f"for {config.patience} epochs"
        )
    log(f"training duration = {state.train_seconds:.3f}")
    if not s.ctx.is_main:
        return {}
    return finish(out_dir, config, splits, state, s.device, s.scale, log, s.choice)


def _silent(_message: str) -> None:
    pass


def finish(
    out_dir: Path,
    config: TrainConfig,
    splits: Splits,
    state: TrainState,
    device: torch.device,
    scale: InputScale,
    log: Callable[[str], None] = print,
    choice: EngineChoice | None = None,
) -> dict[str, Any]:
    """Evaluate the best checkpoint on the test set; write metrics.json and curves.png.
    ``choice``: the run's engine (None: resolved from ``config`` for the best model)."""
    from cnnlab.plots import plot_curves

    model, ckpt = records.load_best(out_dir)
    model.to(device)
    choice = choice or for_model(model, engine=config.engine, native=config.native)
    test_loss: float | None = None
    test_acc: float | None = None
    if len(splits.y_test):
        test = Feed(splits.x_test, splits.y_test, device)
        test_loss, test_acc, _ = evaluate_chunks(
            model, test.chunks(config.eval_batch_size), choice=choice, scale=scale
        )
    metrics = records.write_metrics(out_dir, model, ckpt, state, config, test_loss, test_acc)
    history = runs.read_history(out_dir / "history.csv")
    plot_curves(history, out_dir / "curves.png", title=model.description.name)
    if test_acc is None or test_loss is None:
        log(f"no test set: the best model is the one of epoch {ckpt['epoch']} (lowest val_loss)")
    else:
        log(
            f"Test accuracy of the model with the lowest val_loss (epoch {ckpt['epoch']}) = "
            f"{test_acc:.4f} (loss {test_loss:.4f})"
        )
    return metrics

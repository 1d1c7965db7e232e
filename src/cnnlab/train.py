"""The chapter's training recipe in plain PyTorch, with Keras' semantics where they decide a result.

Recipe (``TrainConfig`` defaults): seed 42, Adam (lr 1e-3, epsilon 1e-7), cross-entropy,
batch 32, up to 200 epochs, early stopping on validation accuracy with patience 5 (Keras'
``EarlyStopping`` rule), best checkpoint by validation loss (Keras' ``ModelCheckpoint``
with ``save_best_only``), then the best checkpoint evaluated on the test set.

Two engines compute the same thing: ``"fast"`` (the default, :mod:`cnnlab.fastpath`) and
``"plain"``, the straightforward PyTorch loop of :func:`train_epoch`, kept as the
reference the fast one is tested against.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from cnnlab import distributed, native, runs
from cnnlab.data import Splits
from cnnlab.evaluate import evaluate, resolve_device, to_tensors
from cnnlab.fastpath import EpochSums, as_float_images, make_step, run_epoch
from cnnlab.models import case_name, count_params, create_model

ENGINES = ("fast", "plain")


@dataclass
class TrainConfig:
    """Everything that decides a training run; saved as ``config.json`` in the run folder."""

    case: str = "case1"
    epochs: int = 200
    batch_size: int = 32
    patience: int = 5
    seed: int = 42
    lr: float = 1e-3
    adam_eps: float = 1e-7  # Keras' default; PyTorch's is 1e-8
    val_fraction: float = 0.25
    eval_batch_size: int = 1000
    device: str = "cpu"
    engine: str = "fast"  # "fast" (cnnlab.fastpath) or "plain" (the reference loop)
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default (one per core)
    native: bool = True  # the fast engine's C++ kernels for Case 1 on a CPU, where they build

    def __post_init__(self) -> None:
        self.case = case_name(self.case)
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.patience < 0:
            raise ValueError(f"patience must be 0 or more, got {self.patience}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.threads < 0:
            raise ValueError(f"threads must be 0 or more, got {self.threads}")


@dataclass
class EarlyStopping:
    """Keras' ``EarlyStopping(monitor="val_accuracy", patience=p)``: stop after ``p``
    epochs in a row without a strictly higher validation accuracy."""

    patience: int
    best: float = -math.inf
    wait: int = 0
    best_epoch: int = 0

    def step(self, epoch: int, value: float) -> bool:
        """Record ``value`` for 1-based ``epoch``; True when training should stop."""
        self.wait += 1
        if value > self.best:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return False
        # Keras checks ``epoch > 0`` with 0-based epochs: never stops after the first.
        return self.wait >= self.patience and epoch > 1


@dataclass
class TrainState:
    """What a resumed run needs besides the model and optimiser."""

    epoch: int = 0
    stopping: EarlyStopping = field(default_factory=lambda: EarlyStopping(5))
    best_val_loss: float = math.inf
    best_epoch: int = 0
    train_seconds: float = 0.0
    finished: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


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
    """One pass over ``x[order]`` in mini-batches; returns (mean loss, accuracy).

    Loss and hits accumulate on the device: nothing waits for the host per step. Under
    torchrun ``model`` is a DistributedDataParallel and each process takes its share of
    every global batch; its loss sum is scaled by world size / global batch size, so the
    gradient DDP averages is the global batch's mean gradient, and the epoch sums are
    all-reduced.
    """
    ctx = ctx or distributed.DistContext()
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    hits = torch.zeros((), dtype=torch.int64, device=x.device)
    for step, i in enumerate(range(0, len(order), batch_size)):
        idx = order[i : i + batch_size]
        denom = len(idx)
        idx = distributed.shard(idx, ctx)
        xb, yb = x[idx], y[idx]
        logits = model(xb)
        if ctx.enabled:
            batch_sum = F.cross_entropy(logits, yb, reduction="sum")
            loss = batch_sum * (ctx.world_size / denom)
            batch_sum = batch_sum.detach()
        else:
            loss = F.cross_entropy(logits, yb)
            batch_sum = loss.detach() * len(idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += batch_sum.double()
        hits += (logits.detach().argmax(1) == yb).sum()
        if bar is not None:
            bar.update(denom)
            if step % 100 == 0:  # a host sync, so only now and then
                seen = min(i + batch_size, len(order)) / ctx.world_size
                bar.set_postfix(
                    loss=f"{loss_sum.item() / seen:.4f}", acc=f"{hits.item() / seen:.4f}"
                )
    distributed.all_reduce_sum(loss_sum, ctx)
    distributed.all_reduce_sum(hits, ctx)
    n = len(order)
    return loss_sum.item() / n, hits.item() / n


EpochCallback = Callable[[int, dict[str, float]], None]


def fit(
    config: TrainConfig,
    splits: Splits,
    out_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``config.case`` on ``splits``, writing the run into ``out_dir``; returns metrics."""
    device = resolve_device(config.device)
    ctx = distributed.setup(device)  # a single process unless started by torchrun
    device = distributed.local_device(device, ctx)
    if not ctx.is_main:  # only rank 0 prints and writes files
        progress, log = False, _silent
    if config.threads:
        torch.set_num_threads(config.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest
    torch.manual_seed(config.seed)
    model = create_model(config.case).to(device)
    optimizer = make_optimizer(model, config)
    shuffle = torch.Generator().manual_seed(config.seed)
    state = TrainState(stopping=EarlyStopping(config.patience))
    if resume:
        ckpt = runs.load_checkpoint(out_dir / "last.pt")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        runs.set_rng_state(shuffle, ckpt["rng"])
        state = TrainState(
            epoch=ckpt["epoch"],
            stopping=EarlyStopping(**ckpt["stopping"]),
            best_val_loss=ckpt["best_val_loss"],
            best_epoch=ckpt["best_epoch"],
            train_seconds=ckpt["train_seconds"],
            finished=ckpt["finished"],
            history=ckpt["history"],
        )
        log(f"resuming {out_dir} after epoch {state.epoch}")
    elif ctx.is_main:
        runs.write_json(out_dir / "config.json", run_config(config, splits, device, ctx))

    fast = config.engine == "fast"
    grad_hook = partial(distributed.all_reduce_grads, ctx=ctx) if ctx.enabled else None
    shard = partial(distributed.shard, ctx=ctx) if ctx.enabled else None
    # After resume: the step reads Adam's restored state.
    use_native = None if config.native else False
    step = make_step(model, optimizer, grad_hook, use_native) if fast else None
    # The plain engine trains through DistributedDataParallel, which averages gradients
    # in its backward hooks; the fast engine all-reduces them in its own step (grad_hook).
    ddp_model = DistributedDataParallel(model) if ctx.enabled and not fast else model
    # The whole dataset moves to the device once; batches are gathered there.
    x_tr, y_tr = to_tensors(splits.x_train, splits.y_train, device)
    x_va, y_va = to_tensors(splits.x_val, splits.y_val, device)
    if not fast:
        x_tr = as_float_images(x_tr)  # the reference loop takes float images only
    n = len(x_tr)
    while not state.finished and state.epoch < config.epochs:
        epoch = state.epoch + 1
        start = time.perf_counter()
        order = torch.randperm(n, generator=shuffle).to(device)
        with tqdm(
            total=n,
            desc=f"epoch {epoch}/{config.epochs}",
            unit="img",
            disable=not progress,
            leave=False,
        ) as bar:
            if step is None:
                loss, acc = train_epoch(
                    ddp_model, optimizer, x_tr, y_tr, order, config.batch_size, bar, ctx
                )
            else:
                sums = run_epoch(
                    step,
                    x_tr,
                    y_tr,
                    order,
                    config.batch_size,
                    on_batch=_progress(bar) if progress else None,
                    shard=shard,
                )
                distributed.all_reduce_sum(sums.loss, ctx)
                distributed.all_reduce_sum(sums.hits, ctx)
                loss, acc = sums.means()
        val_loss, val_acc, _ = evaluate(model, x_va, y_va, config.eval_batch_size, fast=fast)
        seconds = time.perf_counter() - start
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
            if ctx.is_main:
                runs.save_torch(out_dir / "best.pt", _checkpoint(config, model, epoch))
        state.finished = state.stopping.step(epoch, val_acc) or epoch >= config.epochs
        log(
            f"epoch {epoch}: loss {loss:.4f} - accuracy {acc:.4f} - val_loss {val_loss:.4f}"
            f" - val_accuracy {val_acc:.4f} - {seconds:.1f}s{note}"
        )
        if ctx.is_main:
            _save_epoch(out_dir, config, model, optimizer, shuffle, state)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    if state.stopping.wait >= config.patience and state.epoch < config.epochs:
        log(
            f"early stopping after epoch {state.epoch}: no better val_accuracy "
            f"for {config.patience} epochs"
        )
    log(f"training duration = {state.train_seconds:.3f}")
    if not ctx.is_main:
        distributed.barrier(ctx)  # rank 0 evaluates the best checkpoint and writes the rest
        return {}
    metrics = finish(out_dir, config, splits, state, device, log)
    distributed.barrier(ctx)
    return metrics


def _silent(_message: str) -> None:
    pass


def _save_epoch(
    out_dir: Path,
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    shuffle: torch.Generator,
    state: TrainState,
) -> None:
    """history.csv and last.pt after an epoch: everything --resume needs."""
    runs.write_history(out_dir / "history.csv", state.history)
    last = _checkpoint(config, model, state.epoch) | {
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


def _progress(bar: tqdm) -> Callable[[int, EpochSums], None]:
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


def _checkpoint(config: TrainConfig, model: nn.Module, epoch: int) -> dict[str, Any]:
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"format": runs.CHECKPOINT_FORMAT, "case": config.case, "epoch": epoch, "model": weights}


def run_config(
    config: TrainConfig,
    splits: Splits,
    device: torch.device,
    ctx: distributed.DistContext | None = None,
) -> dict[str, Any]:
    kernels = config.engine == "fast" and config.native and config.case == "case1"
    return {
        "config": asdict(config),
        "resolved": {
            "device": str(device),
            # Case 1's fast step: cnnlab's C++ kernels, or PyTorch ops where they don't build
            "native_kernels": kernels and device.type == "cpu" and native.load(),
            "threads": torch.get_num_threads(),
            "world_size": ctx.world_size if ctx else 1,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "n_train": len(splits.x_train),
            "n_val": len(splits.x_val),
            "n_test": len(splits.x_test),
        },
    }


def finish(
    out_dir: Path,
    config: TrainConfig,
    splits: Splits,
    state: TrainState,
    device: torch.device,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Evaluate the best checkpoint on the test set; write metrics.json and curves.png."""
    from cnnlab.plots import plot_curves

    model, ckpt = runs.load_model(out_dir, "best")
    model.to(device)
    x_te, y_te = to_tensors(splits.x_test, splits.y_test, device)
    test_loss, test_acc, _ = evaluate(
        model, x_te, y_te, config.eval_batch_size, fast=config.engine == "fast"
    )
    metrics = {
        "case": config.case,
        "params": count_params(model),
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
    runs.write_json(out_dir / "metrics.json", metrics)
    plot_curves(out_dir / "history.csv", out_dir / "curves.png", title=config.case)
    log(
        f"Test accuracy of the model with the lowest val_loss (epoch {ckpt['epoch']}) = "
        f"{test_acc:.4f} (loss {test_loss:.4f})"
    )
    return metrics

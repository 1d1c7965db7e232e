"""One training epoch of either engine, with mid-epoch checkpoints and their resumption.

The epoch's loop is written once for both engines: each step (the fast engine's
:func:`~cnnlab.engine.fastpath.make_step`, or :class:`PlainStep`, the reference) returns
its batch's loss sum and hits, which accumulate on the device in float64 / int64. After
each step :class:`~cnnlab.train.position.Schedule` says whether to write a mid-epoch
checkpoint; a run resumed from one draws the epoch's order again, skips the batches done
and starts from the saved sums, so the epoch's history row is the one it would have had.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cnnlab.data.scaling import InputScale
from cnnlab.engine.fastpath import EpochSums
from cnnlab.engine.feed import Feed
from cnnlab.engine.inference import evaluate_chunks
from cnnlab.engine.tensors import as_inputs
from cnnlab.train import distributed, records
from cnnlab.train.position import Position, process_rng

if TYPE_CHECKING:
    from cnnlab.train.loop import Session


class PlainStep:
    """The plain reference step: autograd, then ``optimizer.step()``.

    Under torchrun ``model`` is a DistributedDataParallel and each batch is this process's
    share of a global batch; its loss sum is scaled by world size / global batch size, so
    the gradient DDP averages is the global batch's mean gradient."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        ctx: distributed.DistContext,
        scale: InputScale | None = None,
    ) -> None:
        self.model, self.optimizer, self.ctx, self.scale = model, optimizer, ctx, scale

    def __call__(
        self, xb: torch.Tensor, yb: torch.Tensor, denom: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update the weights on one batch; (its loss sum as float64, its hits)."""
        logits = self.model(as_inputs(xb, self.scale))
        if self.ctx.enabled:
            batch_sum = F.cross_entropy(logits, yb, reduction="sum")
            loss = batch_sum * (self.ctx.world_size / (denom or len(yb)))
            batch_sum = batch_sum.detach()
        else:
            loss = F.cross_entropy(logits, yb)
            batch_sum = loss.detach() * len(yb)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return batch_sum.double(), (logits.detach().argmax(1) == yb).sum()


def train_one_epoch(
    s: Session, feed: Feed, epoch: int, out_dir: Path, progress: bool
) -> tuple[float, float, float]:
    """Epoch ``epoch`` of either engine, from ``s.position`` if it stands inside it:
    (mean training loss, accuracy, seconds it ran before a resumed position)."""
    n, size = len(feed), s.config.batch_size
    pos, s.position = s.position, None
    if pos is not None:
        s.shuffle.set_state(pos.order_rng)  # the epoch's order, drawn again
    order_rng = s.shuffle.get_state()
    order = torch.randperm(n, generator=s.shuffle)
    first = pos.step if pos is not None else 0
    order = order[first * size :]  # the batches done: the cuts stay at multiples of size
    order = order if feed.lazy else order.to(s.device)
    shard = partial(distributed.shard, ctx=s.ctx) if s.ctx.enabled else None
    mine = pos.ranks[s.ctx.rank] if pos is not None else {"loss": 0.0, "hits": 0}
    sums = EpochSums(
        loss=torch.tensor(mine["loss"], dtype=torch.float64, device=s.device),
        hits=torch.tensor(mine["hits"], dtype=torch.int64, device=s.device),
        count=n,
    )
    carried = pos.seconds if pos is not None else 0.0
    started = time.perf_counter()
    step = s.step or PlainStep(s.ddp_model, s.optimizer, s.ctx, s.scale)
    s.ddp_model.train()
    done = min(first * size, n)
    with tqdm(
        total=n,
        initial=done,
        desc=f"epoch {epoch}/{s.config.epochs}",
        unit="sample",
        disable=not progress,
        leave=False,
    ) as bar:
        on_batch = records.progress_callback(bar, done) if progress else None
        for k, (xb, yb, denom) in enumerate(feed.batches(order, size, shard), start=first + 1):
            loss, hits = step(xb, yb, denom)
            sums.loss += loss
            sums.hits += hits
            if on_batch is not None:
                on_batch(denom, sums)
            if s.schedule.due(epoch, k):
                seconds = carried + time.perf_counter() - started
                at = Position(epoch, k, order_rng, size, n, seconds, ranks=[])
                save_position(s, out_dir, at, sums)
    distributed.all_reduce_sum(sums.loss, s.ctx)
    distributed.all_reduce_sum(sums.hits, s.ctx)
    loss_mean, acc = sums.means()
    return loss_mean, acc, carried


def evaluate(s: Session, feed: Feed) -> tuple[float, float]:
    """(mean loss, accuracy) of the model on ``feed``. Under torchrun each process scores
    its share of every chunk and the sums are all-reduced: every process gets the same
    numbers, bit for bit, so all take the same early-stopping decision (even where their
    kernels could round differently), and each reads only its rows of the split."""
    choice, size = s.choice, s.config.eval_batch_size  # the run's engine, as trained
    if not s.ctx.enabled:
        loss, acc, _ = evaluate_chunks(s.model, feed.chunks(size), choice=choice, scale=s.scale)
        return loss, acc
    order = torch.arange(len(feed))
    order = order if feed.lazy else order.to(s.device)
    shard = partial(distributed.shard, ctx=s.ctx)
    chunks = ((xb, yb) for xb, yb, _ in feed.batches(order, size, shard))
    loss, acc, preds = evaluate_chunks(s.model, chunks, choice=choice, scale=s.scale)
    n = len(preds)
    mine = [loss * n, round(acc * n), n] if n else [0.0, 0.0, 0.0]
    total = torch.tensor(mine, dtype=torch.float64, device=s.device)
    distributed.all_reduce_sum(total, s.ctx)
    if total[2] == 0:
        return float("nan"), float("nan")
    return float(total[0] / total[2]), float(total[1] / total[2])


def save_position(s: Session, out_dir: Path, at: Position, sums: EpochSums) -> None:
    """A mid-epoch checkpoint: every process's partial sums and random streams, gathered,
    written into ``last.pt`` by rank 0 (history.csv stays as the last epoch left it)."""
    mine = {"loss": float(sums.loss.item()), "hits": int(sums.hits.item()), **process_rng()}
    at.ranks = distributed.gather(mine, s.ctx)
    if s.ctx.is_main:
        records.save_last(
            out_dir, s.description, s.model, s.optimizer, s.shuffle, s.state, position=at
        )
    s.schedule.written()


def save_epoch_end(s: Session, out_dir: Path) -> None:
    """``last.pt`` and history.csv after an epoch (every process's random streams too)."""
    ranks_rng = distributed.gather(process_rng(), s.ctx) if s.ctx.enabled else None
    if s.ctx.is_main:
        records.save_last(
            out_dir, s.description, s.model, s.optimizer, s.shuffle, s.state, ranks_rng=ranks_rng
        )
    s.schedule.written()

"""Data-parallel training across processes (torch.distributed / DistributedDataParallel).

``cnnlab train`` run under ``torchrun`` finds the process group's size and rank in the
variables torchrun sets, and then:

- every process draws the same permutation of the training set each epoch and takes its
  share of every global batch (``batch[rank::world_size]``), which is what a distributed
  sampler does, batch by batch;
- ``--batch-size`` stays the *global* batch: each of ``W`` processes computes ``B / W``
  samples, its loss sum divided by the global batch size, and the gradients are summed
  across processes before every Adam step, so each step equals the single-process step on
  the whole batch (also for a short last batch) and the learning rate needs no change.
  The plain engine does this through ``DistributedDataParallel`` (which averages, so its
  loss is scaled by ``W``); the fast engine, whose Case 1 backward is written out with no
  autograd hooks for DDP to attach to, all-reduces the gradients in its own step
  (:func:`all_reduce_grads`), one collective per step as DDP does;
- epoch sums (loss, hits, counts) are all-reduced, so every process sees the same
  metrics and takes the same early-stopping decision; only rank 0 writes files or prints.

Failures (docs/cluster.md): a collective that fails because a peer is gone
(:func:`peer_loss`) becomes one line and a non-zero exit, which is what makes torchrun
restart the group; the restarted group (:func:`group_restarted`) continues its run.

Dropout draws its masks per process, so a network with dropout (Case 1) follows a
different random path than one process would; without dropout the results agree to
float tolerance (``tests/train/test_distributed.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the group; the default is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """True inside a process that torchrun started as part of a group."""
    return dist.is_torchelastic_launched() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch_rank() -> int:
    """This process's rank as torchrun announced it (0 outside torchrun), before setup."""
    return int(os.environ.get("RANK", "0")) if launched() else 0


def setup(device: torch.device) -> DistContext:
    """Join the process group torchrun prepared (gloo on CPU, nccl on GPUs), if any."""
    if not launched():
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
    return ctx


def local_device(device: torch.device, ctx: DistContext) -> torch.device:
    """Each process on a multi-GPU machine drives the GPU matching its local rank."""
    if device.type == "cuda" and ctx.enabled:
        return torch.device("cuda", ctx.local_rank)
    return device


def shard(batch: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This process's share of a global batch of indices (a distributed sampler's cut)."""
    return batch[ctx.rank :: ctx.world_size] if ctx.enabled else batch


def all_reduce_grads(grads: list[torch.Tensor], ctx: DistContext) -> None:
    """Sum every process's gradients, in place, before the optimiser step.

    Each process's gradient is of (its share of the loss sum) / (global batch size), so
    the sum is the gradient of the global batch's mean loss: one process's step, exactly.
    Gradients travel as one flat buffer: one collective per step, not one per tensor.
    """
    if not ctx.enabled:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``t`` over the group, in place (a no-op for a single process)."""
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def agree(flag: bool, ctx: DistContext) -> bool:
    """Rank 0's ``flag`` on every process (a decision that reads a clock must be one)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32)
    dist.broadcast(t, src=0)
    return bool(t.item())


def gather(obj: Any, ctx: DistContext) -> list[Any]:
    """Every process's ``obj`` (plain data and CPU tensors), in rank order, on every one."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def restart_count() -> int:
    """How often torchrun restarted this group's workers (its TORCHELASTIC_RESTART_COUNT:
    torchrun's protocol, not a cnnlab setting); 0 outside torchrun."""
    if not dist.is_torchelastic_launched():
        return 0
    text = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return int(text) if text.isdigit() else 0


def group_restarted(device: torch.device) -> bool:
    """Whether torchrun restarted this group's workers after a failure: any process's
    restart count above 0. Asked of the whole group (which this joins), because an agent
    whose own worker was healthy restarts it with its count unchanged when another
    agent's worker failed."""
    if not launched():  # a group shrunk to one process (elastic sizes): its own count
        return restart_count() > 0
    try:
        ctx = setup(device)
        t = torch.tensor([restart_count()], device=local_device(device, ctx))
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    except RuntimeError as exc:
        why = peer_loss(exc)
        if why is None:
            raise
        raise CnnlabError(f"cannot join the process group ({why})") from None
    return int(t.item()) > 0


def peer_loss(exc: BaseException) -> str | None:
    """One line naming a collective's failure (a peer killed, a connection reset), or None
    for an error that is no communication failure."""
    dist_error = getattr(dist, "DistError", None)
    text = str(exc).strip()
    first = (text.splitlines() or [type(exc).__name__])[-1].strip()[:200]
    if dist_error is not None and isinstance(exc, dist_error):
        return first
    markers = ("gloo", "nccl", "connection", "broken pipe", "socket", "timed out")
    if isinstance(exc, RuntimeError) and any(m in text.lower() for m in markers):
        return first
    return None


def teardown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group(device: torch.device) -> Iterator[DistContext]:
    """Join torchrun's process group for the duration of a run, and always leave it."""
    try:
        try:
            ctx = setup(device)
        except RuntimeError as exc:  # the group never formed: a peer gone already
            why = peer_loss(exc)
            if why is None:
                raise
            raise CnnlabError(f"cannot join the process group ({why})") from None
        yield ctx
    finally:
        teardown()

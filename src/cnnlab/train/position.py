"""Mid-epoch checkpoints: where in an epoch a run stands, so a kill costs minutes, not an epoch.

``--checkpoint-every N`` (steps) or ``--checkpoint-minutes M`` rewrites ``last.pt``
(atomically, like every run file) between epoch ends, with a ``position`` beside the usual
training state::

    {"epoch": 3, "step": 50, "order_rng": <the shuffle generator before epoch 3's draw>,
     "batch_size": 32, "n_train": 45000, "seconds": 81.2,
     "ranks": [{"loss": 12.3, "hits": 1480, "torch": <generator state>}, ...]}

``epoch`` is the epoch in progress and ``step`` its batches done; the shuffle order is
drawn again from ``order_rng``; each process's partial sums (float64 loss, hits) and its
random stream (dropout: the torch CPU generator, which both engines draw from; CUDA's
too on a GPU) are kept per rank, so the resumed epoch adds the same numbers in the same
order: its history row equals an uninterrupted run's bit for bit. A position from another
batch size, training-set size or number of processes is refused in one line.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import CnnlabError
from cnnlab.train import distributed


def process_rng() -> dict[str, Any]:
    """This process's own random streams (dropout), as a mid-epoch checkpoint keeps them."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_process_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


@dataclass
class Position:
    """A point inside epoch ``epoch``: ``step`` of its global batches done."""

    epoch: int
    step: int
    order_rng: torch.Tensor  # the shuffle generator's state before the epoch's permutation
    batch_size: int
    n_train: int
    seconds: float  # of the epoch, before the checkpoint
    ranks: list[dict[str, Any]]  # per rank: "loss" (float), "hits" (int), "torch" (rng)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "order_rng": self.order_rng,
            "batch_size": self.batch_size,
            "n_train": self.n_train,
            "seconds": self.seconds,
            "ranks": self.ranks,
        }

    @classmethod
    def parse(cls, raw: Any, path: Path, completed: int) -> Position:
        """``last.pt``'s ``position`` field, checked; ``completed``: the epochs it records."""
        names = ("epoch", "step", "order_rng", "batch_size", "n_train", "seconds", "ranks")
        if not isinstance(raw, dict) or set(raw) != set(names):
            raise CnnlabError(f"{path}: field 'position' must hold {', '.join(sorted(names))}")
        for key in ("epoch", "step", "batch_size", "n_train"):
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CnnlabError(f"{path}: field 'position.{key}' must be a whole number >= 1")
        if raw["epoch"] != completed + 1:
            raise CnnlabError(
                f"{path}: field 'position.epoch' is {raw['epoch']}, but the checkpoint "
                f"records {completed} epoch(s) done"
            )
        if raw["step"] >= math.ceil(raw["n_train"] / raw["batch_size"]):
            raise CnnlabError(f"{path}: field 'position.step' lies past its epoch's last batch")
        seconds = raw["seconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise CnnlabError(f"{path}: field 'position.seconds' must be a number >= 0")
        _check_generator(raw["order_rng"], f"{path}: field 'position.order_rng'")
        ranks = raw["ranks"]
        if not isinstance(ranks, list) or not ranks:
            raise CnnlabError(f"{path}: field 'position.ranks' must list each process's state")
        for r, rank in enumerate(ranks):
            where = f"{path}: field 'position.ranks[{r}]'"
            if not isinstance(rank, dict) or not {"loss", "hits", "torch"} <= set(rank):
                raise CnnlabError(f"{where} must hold loss, hits and torch")
            loss, hits = rank["loss"], rank["hits"]
            if isinstance(loss, bool) or not isinstance(loss, float) or not math.isfinite(loss):
                raise CnnlabError(f"{where}: loss must be a finite number")
            if isinstance(hits, bool) or not isinstance(hits, int) or hits < 0:
                raise CnnlabError(f"{where}: hits must be a whole number >= 0")
            _check_generator(rank["torch"], f"{where}: torch")
        return cls(**{k: raw[k] for k in names})

    def check_fits(self, path: Path, batch_size: int, n_train: int, world_size: int) -> None:
        """Refuse to continue a position that another config or group size wrote."""
        if self.batch_size != batch_size or self.n_train != n_train:
            raise CnnlabError(
                f"{path} was written mid-epoch by a run with batch size {self.batch_size} on "
                f"{self.n_train} training samples; this run has {batch_size} on {n_train}: "
                "not this run's checkpoint"
            )
        if len(self.ranks) != world_size:
            raise CnnlabError(
                f"{path} was written mid-epoch by {len(self.ranks)} process(es); continue it "
                f"with {len(self.ranks)} (this run has {world_size})"
            )


def _check_generator(state: Any, where: str) -> None:
    reference = torch.get_rng_state()
    ok = isinstance(state, torch.Tensor) and state.dtype == torch.uint8
    if not ok or state.shape != reference.shape:
        raise CnnlabError(f"{where} is not a random generator's state")
    try:
        torch.Generator().set_state(state)  # a scratch generator: nothing changes
    except (RuntimeError, TypeError, ValueError):
        raise CnnlabError(f"{where} is not a random generator's state") from None


class Schedule:
    """When to write a mid-epoch checkpoint: every ``every`` steps counted from the run's
    start, and/or ``minutes`` after the last one. Every process takes the same decision
    (the clock is rank 0's, broadcast each step only when a time interval is set)."""

    def __init__(
        self, every: int, minutes: float, steps_per_epoch: int, ctx: distributed.DistContext
    ) -> None:
        self.every = every
        self.seconds = minutes * 60.0
        self.steps_per_epoch = steps_per_epoch
        self.ctx = ctx
        self.last = time.monotonic()

    def global_step(self, epoch: int, step: int) -> int:
        """Steps since the run began after ``step`` batches of 1-based ``epoch``."""
        return (epoch - 1) * self.steps_per_epoch + step

    def due(self, epoch: int, step: int) -> bool:
        """Whether to checkpoint after ``step`` batches of ``epoch`` (never after its last:
        the epoch's end writes ``last.pt`` anyway)."""
        if step >= self.steps_per_epoch:
            return False
        hit = self.every > 0 and self.global_step(epoch, step) % self.every == 0
        if self.seconds > 0:
            late = time.monotonic() - self.last >= self.seconds
            hit = hit or distributed.agree(late, self.ctx)
        return hit

    def written(self) -> None:
        self.last = time.monotonic()

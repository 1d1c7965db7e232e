"""Keras' ``ReduceLROnPlateau`` on the training loss, as Wang et al. (2017) trained the FCN.

Off in the chapter's recipe (``TrainConfig.plateau_factor == 0``). On, after each epoch:
when the training loss has not fallen by more than ``min_delta`` (Keras' 1e-4) below its
best for ``plateau_patience`` epochs in a row, the learning rate is multiplied by
``plateau_factor``, never below ``min_lr``, and the count starts again (Keras' rule with
``cooldown=0``). Its state is a function of the losses alone, so a resumed run rebuilds
it from ``history`` (:meth:`Plateau.replay`); the learning rate itself is in the
optimiser's state, which ``last.pt`` keeps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

MIN_DELTA = 1e-4  # Keras' default


@dataclass
class Plateau:
    """The rule's state: the best training loss so far and the epochs since."""

    factor: float
    patience: int
    min_lr: float
    best: float = math.inf
    wait: int = 0

    def step(self, loss: float, lr: float) -> float:
        """Record one epoch's training loss under learning rate ``lr``; the next epoch's."""
        if loss < self.best - MIN_DELTA:
            self.best, self.wait = loss, 0
            return lr
        self.wait += 1
        if self.wait >= self.patience and lr > np.float32(self.min_lr):
            self.wait = 0
            return max(lr * self.factor, self.min_lr)
        return lr

    def replay(self, history: Iterable[Mapping[str, float]], lr: float) -> float:
        """Rebuild the state from past epochs' training losses, starting at rate ``lr``;
        returns the rate the rule had reached (the one a resumed optimiser holds)."""
        for row in history:
            lr = self.step(float(row["loss"]), lr)
        return lr


def make_plateau(factor: float, patience: int, min_lr: float) -> Plateau | None:
    """The rule, or None when ``factor`` is 0 (off: the chapter's constant rate)."""
    return Plateau(factor, patience, min_lr) if factor > 0 else None


def learning_rate(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr

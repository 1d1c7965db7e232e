"""Keras' early-stopping rule, and the state a resumed run needs besides its weights."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


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

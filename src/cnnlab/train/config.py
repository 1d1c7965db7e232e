"""The training recipe as one typed config, saved whole with every run (``config.json``).

Defaults are the chapter's recipe: seed 42, Adam (lr 1e-3, epsilon 1e-7, constant), batch 32, up to
200 epochs, early stopping on validation accuracy with patience 5, a stratified 75/25
split. Every field is checked on creation; a bad value is a one-line ValueError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

ENGINES = ("fast", "plain")
DEVICES = ("auto", "cpu", "cuda")
MONITORS = ("val_accuracy", "val_loss")  # early stopping: Keras' EarlyStopping(monitor=...)
MAX_SEED = 2**32 - 1  # numpy's seeds; torch's accept more, the split's do not
# Fields that say when to checkpoint, not what is computed: a restarted or resumed run may
# change them (every other field must match the run it continues)
SCHEDULE_ONLY = ("checkpoint_every", "checkpoint_minutes")


@dataclass
class TrainConfig:
    """Everything that decides a training run; saved as ``config.json`` in the run folder."""

    model: str = "case1"  # a registry name, a description file, or a one-line description
    data: str = "mnist"  # mnist, ucr:NAME or moving-mnist (cnnlab.data.datasets)
    epochs: int = 200
    batch_size: int = 32
    patience: int = 5
    seed: int = 42
    lr: float = 1e-3
    adam_eps: float = 1e-7  # Keras' default; PyTorch's is 1e-8
    val_fraction: float = 0.25
    eval_batch_size: int = 1000
    device: str = "cpu"
    # engine and native are resolved once per run into cnnlab.engine.choice.EngineChoice,
    # which training, evaluation and `cnnlab evaluate` all read (config.json: resolved.engine)
    engine: str = "fast"  # "fast" (cnnlab.engine.fastpath) or "plain" (the reference loop)
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default (one per core)
    native: bool = True  # the C++ kernels on a CPU where they build and are the faster way;
    # False: PyTorch operations only, in training and in evaluation
    monitor: str = "val_accuracy"  # what early stopping watches: val_accuracy or val_loss
    # ReduceLROnPlateau on the training loss (cnnlab.train.plateau); factor 0 is off
    plateau_factor: float = 0.0
    plateau_patience: int = 50
    min_lr: float = 1e-4
    # Mid-epoch checkpoints (cnnlab.train.position): every N steps and/or every M minutes
    # (0: only at epoch ends). Where a run may be killed; they never change its results.
    checkpoint_every: int = 0
    checkpoint_minutes: float = 0.0

    def __post_init__(self) -> None:
        _check_types(self)
        for name, low, high in (
            ("epochs", 1, 100_000),
            ("batch_size", 1, 1 << 20),
            ("eval_batch_size", 1, 1 << 20),
            ("patience", 0, 100_000),
            ("seed", 0, MAX_SEED),
            ("threads", 0, 4096),
            ("plateau_patience", 1, 100_000),
            ("checkpoint_every", 0, 1 << 40),
        ):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.adam_eps) and self.adam_eps > 0):
            raise ValueError(f"adam_eps must be a positive number, got {self.adam_eps}")
        if not 0 <= self.plateau_factor < 1:
            raise ValueError(f"plateau_factor must be in [0, 1), got {self.plateau_factor}")
        if not (math.isfinite(self.checkpoint_minutes) and self.checkpoint_minutes >= 0):
            raise ValueError(
                f"checkpoint_minutes must be 0 (off) or a positive number, "
                f"got {self.checkpoint_minutes}"
            )
        if not (math.isfinite(self.min_lr) and self.min_lr > 0):
            raise ValueError(f"min_lr must be a positive number, got {self.min_lr}")
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {', '.join(MONITORS)}, got {self.monitor!r}")
        # 0: no held-out split; validation is the training set itself (UCR/UEA only)
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if not self.model:
            raise ValueError("model must name a network")
        if not self.data:
            raise ValueError("data must name a dataset")

    @classmethod
    def from_dict(cls, data: Any) -> TrainConfig:
        """From the ``config`` object of a config.json; ValueError naming a bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"'config' must be an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        data = dict(data)
        if "case" in data and "model" not in data:  # run folders before model descriptions
            data["model"] = data.pop("case")
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}")
        return cls(**data)


def _check_types(config: TrainConfig) -> None:
    for f in fields(config):
        value = getattr(config, f.name)
        want = {"int": int, "float": float, "str": str, "bool": bool}[str(f.type)]
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            setattr(config, f.name, float(value))
            continue
        ok = isinstance(value, want) and (want is bool or not isinstance(value, bool))
        if not ok:
            raise ValueError(f"{f.name} must be of type {want.__name__}, got {value!r}")

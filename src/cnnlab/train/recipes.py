"""Training recipes per dataset: the chapter's machinery, with the settings each data needs.

The chapter's recipe (MNIST) is :class:`~cnnlab.train.config.TrainConfig`'s defaults. Other
datasets override a few settings (epochs, patience, batch size); each override is chosen
on validation data only, and its reason is written beside it. Flags given on the command
line win over the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """Overrides of TrainConfig's defaults for one kind of data, and why."""

    overrides: dict[str, Any] = field(default_factory=dict)
    reason: str = "the chapter's recipe"


CHAPTER = Recipe()
# Chosen on validation data only (the quarter split from TRAIN), docs/timeseries.md:
# fcn1d on GunPoint, seed 0, 100 epochs without early stopping, batch 16. Validation
# accuracy (13 series: steps of 7.7 points) improved at epochs 2, 16, 18, 19, 28 and 66, a
# longest wait of 38 epochs while the network was still improving (val_loss 0.50 -> 0.32);
# the chapter's patience of 5 would have stopped at epoch 7 with 54%.
TIME_SERIES = Recipe(
    {"epochs": 400, "patience": 75, "batch_size": 16},
    "chosen on validation data (docs/timeseries.md): UCR/UEA training sets hold tens to "
    "hundreds of series, so batch 16 gives 2-13 steps an epoch (the chapter's 32 would "
    "give 1-7); on GunPoint's validation split accuracy moved in 7.7-point steps and waited "
    "up to 38 epochs between improvements while val_loss still fell, so patience is 75 "
    "(about twice that wait); 400 epochs bound a run that keeps improving",
)
VIDEOS = Recipe({"epochs": 30, "patience": 5}, "clips: the chapter's patience, fewer epochs")


def recipe_for(data: str) -> Recipe:
    """The recipe of dataset spec ``data`` (``mnist``, ``ucr:NAME``, ``moving-mnist``)."""
    if data.startswith("ucr:"):
        return TIME_SERIES
    if data == "moving-mnist":
        return VIDEOS
    return CHAPTER


def settings(data: str, **given: Any) -> dict[str, Any]:
    """TrainConfig keyword arguments: the recipe's overrides, then every flag given (not None)."""
    out = dict(recipe_for(data).overrides)
    out.update({k: v for k, v in given.items() if v is not None})
    return out

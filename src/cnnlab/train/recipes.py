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
# Filled in from validation experiments (docs/timeseries.md); see each reason.
TIME_SERIES = Recipe(
    {"epochs": 500, "patience": 50, "batch_size": 16},
    "UCR/UEA training sets hold tens to hundreds of series: small batches give enough "
    "steps per epoch, and validation accuracy on a few dozen series moves in coarse steps, "
    "so patience must span many epochs",
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

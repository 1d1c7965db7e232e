"""Training recipes per dataset: the chapter's machinery, with the settings each data needs.

The chapter's recipe (MNIST) is :class:`~cnnlab.train.config.TrainConfig`'s defaults. Other
datasets override a few settings (epochs, patience, batch size, what early stopping
watches, a learning-rate schedule); each override is chosen
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
# The published protocol (Wang et al. 2017; Ismail Fawaz et al. 2019, hfawaz/dl-4-tsc):
# all of TRAIN, batches of min(N/10, 16), Adam 1e-3 halved when the training loss stalls
# for 50 epochs (down to 1e-4), a fixed number of epochs, the model of lowest training loss
# kept; TEST is never looked at. Chosen over the earlier recipe (a quarter of TRAIN held
# out, early stopping on its val_loss, patience 200, at most 1000 epochs) by
# cross-validation within TRAIN only (docs/timeseries.md, "The recipe for small training
# sets"). cnnlab reads "the training loss" as the loss on all of TRAIN in inference mode
# after each epoch (val_fraction 0: the validation rows are TRAIN again), where Keras'
# ModelCheckpoint(monitor="loss") reads the running mean in training mode.
SERIES_EPOCHS = 1500  # dl-4-tsc: ResNet 1500, FCN 2000 (see docs: 1500 for both here)
TIME_SERIES = Recipe(
    {
        "epochs": SERIES_EPOCHS,
        "patience": SERIES_EPOCHS,  # never stops early: the published runs do not
        "batch_size": 16,  # then min(N/10, 16) where N is known: settings(n_train=N)
        "monitor": "val_loss",
        "val_fraction": 0.0,
        "plateau_factor": 0.5,
        "plateau_patience": 50,
        "min_lr": 1e-4,
    },
    "the published protocol (Wang et al. 2017, dl-4-tsc), chosen by cross-validation "
    "within TRAIN (docs/timeseries.md): UCR/UEA training sets hold 20-1000 series, and "
    "holding a quarter back for early stopping costs more (ArrowHead: 9 of 36) than "
    "stopping saves; so all of TRAIN trains, in batches of min(N/10, 16), for 1500 epochs, "
    "the learning rate halving when the training loss stalls for 50 epochs (down to "
    "1e-4), and the model of lowest loss on TRAIN is kept",
)
# The earlier time-series recipe, kept for comparison (docs/timeseries.md): flags
# --val-split 0.25 --patience 200 --epochs 1000 give it back.
TIME_SERIES_HOLDOUT = Recipe(
    TIME_SERIES.overrides | {"epochs": 1000, "patience": 200, "val_fraction": 0.25},
    "a quarter of TRAIN held out, early stopping on its val_loss (patience 200)",
)
VIDEOS = Recipe({"epochs": 30, "patience": 5}, "clips: the chapter's patience, fewer epochs")


def recipe_for(kind: str) -> Recipe:
    """The recipe for a kind of data (:attr:`cnnlab.data.Dataset.kind`): ``series`` get the
    time-series recipe, ``clips`` the clips', ``images`` the chapter's. A dataset spec is
    read as its kind where it names one (``ucr:NAME`` series, ``moving-mnist`` clips)."""
    kind = {"moving-mnist": "clips"}.get(kind, "series" if kind.startswith("ucr:") else kind)
    if kind == "series":
        return TIME_SERIES
    if kind == "clips":
        return VIDEOS
    return CHAPTER


def series_batch(n_train: int) -> int:
    """dl-4-tsc's batch size: ``int(min(N / 10, 16))``, at least 1 (ArrowHead's 36: 3)."""
    return max(1, int(min(n_train / 10, 16)))


def settings(kind: str, n_train: int | None = None, **given: Any) -> dict[str, Any]:
    """TrainConfig keyword arguments: the recipe's overrides (the time series' batch size
    from ``n_train``, the training examples, where given), then every flag given (not None)."""
    recipe = recipe_for(kind)
    out = dict(recipe.overrides)
    if recipe is TIME_SERIES and n_train is not None:
        out["batch_size"] = series_batch(n_train)
    out.update({k: v for k, v in given.items() if v is not None})
    return out

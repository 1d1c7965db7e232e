"""A Keras-like call for notebooks: ``history = fit("case1", splits, epochs=10)``.

A thin layer over :func:`cnnlab.train.loop.fit`, which runs the chapter's whole recipe
(early stopping on validation accuracy, the best checkpoint by validation loss, its test
score) into a run folder. What it adds is the shape of Keras' answer: a :class:`History`
whose ``history`` dict holds ``loss``, ``accuracy``, ``val_loss`` and ``val_accuracy`` per
epoch, as ``model.fit(...).history`` does, plus the test metrics of the best checkpoint
and :meth:`History.best_model`, the counterpart of ``keras.models.load_model``.

>>> history = fit("case1", splits, epochs=2, verbose=0)  # doctest: +SKIP
>>> history.history["val_accuracy"]                       # doctest: +SKIP
[0.97, 0.98]
>>> history.test_accuracy                                  # doctest: +SKIP
0.981
"""

from __future__ import annotations

import dataclasses
import difflib
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.data import Dataset, Splits
from cnnlab.data.arrays import SPEC as ARRAYS
from cnnlab.data.arrays import from_arrays
from cnnlab.errors import CnnlabError
from cnnlab.models import ModelDescription, Network
from cnnlab.models.registry import resolve_for

KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


class FitError(CnnlabError, ValueError):
    """A ``fit`` call that cannot run: one line naming the problem (a ValueError too, as a
    bad argument is in Python)."""


@dataclass
class History:
    """What a training run gives back, in Keras' shape."""

    history: dict[str, list[float]]  # KEYS -> one value per epoch, as Keras' History.history
    epoch: list[int]  # 1-based epoch numbers
    metrics: dict[str, Any]  # metrics.json: test_accuracy, test_loss, best_epoch, ...
    run_dir: Path  # config.json, history.csv, best.pt, last.pt, curves.png, metrics.json
    seconds: list[float] = field(default_factory=list)  # per epoch
    classes: list[str] = field(default_factory=list)  # the class names, label order

    @property
    def test_accuracy(self) -> float | None:
        """Test accuracy of the best checkpoint (the epoch with the lowest val_loss); None
        where no test set was given."""
        value = self.metrics.get("test_accuracy")
        return None if value is None else float(value)

    @property
    def best_epoch(self) -> int:
        return int(self.metrics["best_epoch"])

    def best_model(self) -> Network:
        """The best checkpoint's network, in eval mode (``keras.models.load_model``)."""
        from cnnlab.train import checkpoint

        model, _ = checkpoint.load_model(self.run_dir, "best")
        return model.eval()


def _dataset(
    x: Any,
    y: Any,
    validation_data: Any,
    validation_split: float | None,
    test_data: Any,
    class_names: list[str] | None,
    seed: int,
) -> Dataset:
    """The data as a Dataset: given as one (``load_dataset``), as Splits, or as arrays."""
    arrays_given = any(v is not None for v in (y, validation_data, validation_split, test_data))
    if isinstance(x, Dataset | Splits):
        if arrays_given or class_names is not None:
            raise FitError(
                f"give a {type(x).__name__} alone, or arrays x, y with validation_data, "
                "validation_split, test_data and class_names"
            )
        if isinstance(x, Dataset):
            return x
        k = max(int(v.max(initial=0)) for v in (x.y_train, x.y_val, x.y_test)) + 1
        names = [str(i) for i in range(k)]
        shape = "x".join(map(str, x.x_train.shape[1:]))
        return Dataset(ARRAYS, x, names, f"arrays of {shape} given as Splits", _kind(x), None,
                       {"source": ARRAYS, "given": "cnnlab.data.Splits"})  # fmt: skip
    if y is None:
        raise FitError("arrays x need their labels y (integer class indices or strings)")
    return from_arrays(
        x, y, validation_data=validation_data, validation_split=validation_split,
        test_data=test_data, class_names=class_names, seed=seed,
    )  # fmt: skip


def _kind(splits: Splits) -> str:
    return {3: "series", 4: "images", 5: "clips"}.get(len(splits.x_train.shape), "series")


def _config(fields_given: dict[str, Any]) -> Any:
    """TrainConfig from keyword arguments; an unknown or bad one is one line."""
    from cnnlab.train.config import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in fields_given:
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known | set(ALIASES)), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise FitError(f"fit() got an unknown keyword {key!r}{hint}")
    try:
        return TrainConfig(**fields_given)
    except ValueError as exc:
        raise FitError(str(exc)) from None


ALIASES = {"learning_rate": "lr"}  # Keras' names for TrainConfig fields


def fit(
    model: str | ModelDescription,
    x: Any,
    y: Any = None,
    *,
    validation_data: tuple[Any, Any] | None = None,
    validation_split: float | None = None,
    test_data: tuple[Any, Any] | None = None,
    class_names: list[str] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    patience: int | None = None,
    seed: int = 42,
    out_dir: str | Path | None = None,
    verbose: int = 1,
    **config: Any,
) -> History:
    """Train ``model`` with the recipe for the data and return its :class:`History`.

    ``model``: a registry name (``"case1"``; a template such as ``"smallcnn"`` or
    ``"fcn1d"`` builds itself for the data's shape and classes), a one-line or file
    description, or a :class:`~cnnlab.models.ModelDescription`.

    The data: a :class:`~cnnlab.data.Dataset` (``cnnlab.data.load_dataset("folder:photos")``)
    or arrays as Keras takes them: channels-last ``x`` (uint8 pixels or floats, any rank) and
    ``y`` (integer class indices or strings; ``class_names`` names integer ones), with
    ``validation_data=(x_val, y_val)`` or ``validation_split`` (Keras' meaning: the last
    fraction of ``x``), or neither (the recipe's stratified 25%); ``test_data=(x, y)`` is
    optional (without it the History has no test score). Bare :class:`~cnnlab.data.Splits`
    are taken as arrays too. A run on arrays records that it was (``arrays``): later
    commands ask for ``--data`` to score it again.

    ``epochs``, ``batch_size``, ``patience``: the recipe's for the data where not given
    (the chapter's for images; the time-series recipe for series). ``learning_rate`` (or
    ``lr``) and any other :class:`~cnnlab.train.config.TrainConfig` field (``engine``,
    ``monitor``, ``threads``, ...) by name; an unknown keyword is one line. ``out_dir``:
    the run folder, created (default: a new temporary folder). ``verbose``: 0 silent, 1 a
    line per epoch and a progress bar, 2 a line per epoch.
    """
    from cnnlab.train.loop import fit as run_recipe
    from cnnlab.train.recipes import settings

    if verbose not in (0, 1, 2):
        raise FitError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    for alias, name in ALIASES.items():
        if alias in config:
            if name in config:
                raise FitError(f"give {alias} or {name}, not both")
            config[name] = config.pop(alias)
    dataset = _dataset(x, y, validation_data, validation_split, test_data, class_names, seed)
    if isinstance(model, ModelDescription):
        description = model
    else:
        description = resolve_for(model, dataset.input_shape, len(dataset.classes))
    name = model if isinstance(model, str) else description.name
    given = {"epochs": epochs, "batch_size": batch_size, "patience": patience}
    recipe = settings(dataset.kind, len(dataset.splits.y_train), **given) | config
    recipe.pop("val_fraction", None)  # the split is the caller's (validation_*), made above
    run_config = _config({"model": name, "data": dataset.spec, "seed": seed, **recipe})
    run_dir = Path(out_dir) if out_dir is not None else _temporary(description.name)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FitError(f"cannot create out_dir {run_dir}: {exc.strerror or exc}") from None
    rows: list[dict[str, float]] = []
    metrics = run_recipe(
        run_config,
        dataset,
        run_dir,
        description=description,
        progress=verbose == 1,
        on_epoch_end=lambda _epoch, row: rows.append(dict(row)),
        log=print if verbose else _silent,
    )
    return _history(rows, metrics, run_dir, dataset.classes)


def _history(
    rows: Sequence[dict[str, float]], metrics: dict[str, Any], run_dir: Path, classes: list[str]
) -> History:
    return History(
        history={k: [float(r[k]) for r in rows] for k in KEYS},
        epoch=[int(r["epoch"]) for r in rows],
        metrics=dict(metrics),
        run_dir=run_dir,
        seconds=[float(r["seconds"]) for r in rows],
        classes=list(classes),
    )


def _temporary(stem: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:40]
    return Path(tempfile.mkdtemp(prefix=f"cnnlab-{safe}-"))


def _silent(_message: str) -> None:
    pass

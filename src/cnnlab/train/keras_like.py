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

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data import Splits
from cnnlab.models import ModelDescription, Network, resolve

KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


@dataclass
class History:
    """What a training run gives back, in Keras' shape."""

    history: dict[str, list[float]]  # KEYS -> one value per epoch, as Keras' History.history
    epoch: list[int]  # 1-based epoch numbers
    metrics: dict[str, Any]  # metrics.json: test_accuracy, test_loss, best_epoch, ...
    run_dir: Path  # config.json, history.csv, best.pt, last.pt, curves.png, metrics.json
    seconds: list[float] = field(default_factory=list)  # per epoch

    @property
    def test_accuracy(self) -> float:
        """Test accuracy of the best checkpoint (the epoch with the lowest val_loss)."""
        return float(self.metrics["test_accuracy"])

    @property
    def best_epoch(self) -> int:
        return int(self.metrics["best_epoch"])

    def best_model(self) -> Network:
        """The best checkpoint's network, in eval mode (``keras.models.load_model``)."""
        from cnnlab.train import checkpoint

        model, _ = checkpoint.load_model(self.run_dir, "best")
        return model.eval()


def _splits(
    x: Splits | np.ndarray,
    y: np.ndarray | None,
    validation_data: tuple[np.ndarray, np.ndarray] | None,
    test_data: tuple[np.ndarray, np.ndarray] | None,
) -> Splits:
    """``x`` if it is a Splits, else the arrays as one (validation and test data needed)."""
    if isinstance(x, Splits):
        if y is not None or validation_data is not None or test_data is not None:
            raise ValueError("pass either a Splits or arrays with validation and test data")
        return x
    if y is None or validation_data is None or test_data is None:
        raise ValueError("arrays need y, validation_data=(x, y) and test_data=(x, y)")

    def labels(v: np.ndarray) -> np.ndarray:
        return np.asarray(v, dtype=np.int64)

    return Splits(
        x_train=np.asarray(x),
        y_train=labels(y),
        x_val=np.asarray(validation_data[0]),
        y_val=labels(validation_data[1]),
        x_test=np.asarray(test_data[0]),
        y_test=labels(test_data[1]),
    )


def fit(
    model: str | ModelDescription,
    x: Splits | np.ndarray,
    y: np.ndarray | None = None,
    *,
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    test_data: tuple[np.ndarray, np.ndarray] | None = None,
    epochs: int = 200,
    batch_size: int = 32,
    patience: int = 5,
    seed: int = 42,
    out_dir: str | Path | None = None,
    verbose: int = 1,
    **config: Any,
) -> History:
    """Train ``model`` with the chapter's recipe and return its :class:`History`.

    ``model``: a registry name (``"case1"``), a one-line or file description, or a
    :class:`~cnnlab.models.ModelDescription`. The data: a :class:`~cnnlab.data.Splits`
    (:func:`cnnlab.data.prepare`), or channels-last arrays ``x, y`` with
    ``validation_data=(x_val, y_val)`` and ``test_data=(x_test, y_test)`` (integer
    labels). ``out_dir``: the run folder (default: a new temporary folder). ``verbose``:
    0 silent, 1 one line per epoch and a progress bar, 2 one line per epoch. Any other
    :class:`~cnnlab.train.config.TrainConfig` field (``lr``, ``engine``, ``threads``, ...)
    may be given by name.
    """
    from cnnlab.train.config import TrainConfig
    from cnnlab.train.loop import fit as run_recipe

    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    description = model if isinstance(model, ModelDescription) else resolve(model)
    name = model if isinstance(model, str) else description.name
    settings = TrainConfig(
        model=name, epochs=epochs, batch_size=batch_size, patience=patience, seed=seed, **config
    )
    splits = _splits(x, y, validation_data, test_data)
    run_dir = Path(out_dir) if out_dir is not None else _temporary(description.name)
    rows: list[dict[str, float]] = []
    metrics = run_recipe(
        settings,
        splits,
        run_dir,
        description=description,
        progress=verbose == 1,
        on_epoch_end=lambda _epoch, row: rows.append(dict(row)),
        log=print if verbose else _silent,
    )
    return _history(rows, metrics, run_dir)


def _history(rows: Sequence[dict[str, float]], metrics: dict[str, Any], run_dir: Path) -> History:
    return History(
        history={k: [float(r[k]) for r in rows] for k in KEYS},
        epoch=[int(r["epoch"]) for r in rows],
        metrics=dict(metrics),
        run_dir=run_dir,
        seconds=[float(r["seconds"]) for r in rows],
    )


def _temporary(stem: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:40]
    return Path(tempfile.mkdtemp(prefix=f"cnnlab-{safe}-"))


def _silent(_message: str) -> None:
    pass

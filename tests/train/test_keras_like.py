"""The Keras-like ``cnnlab.train.fit``: its History is the run's own record, and its test
accuracy is the best checkpoint's, recomputed here from the saved weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import cnnlab.train
from cnnlab.data import Splits
from cnnlab.engine.inference import predict_proba
from cnnlab.models import resolve
from cnnlab.train import runs
from cnnlab.train.keras_like import KEYS, History, fit


@pytest.fixture(scope="module")
def history(tiny_splits: Splits, tmp_path_factory: pytest.TempPathFactory) -> History:
    out = tmp_path_factory.mktemp("keras-like")
    return cnnlab.train.fit("case3", tiny_splits, epochs=3, out_dir=out, verbose=0)


def test_history_is_the_runs_record(history: History) -> None:
    assert cnnlab.train.History is History
    assert set(history.history) == set(KEYS) and history.epoch == [1, 2, 3]
    rows = runs.read_history(history.run_dir / "history.csv")
    for key in KEYS:
        np.testing.assert_allclose(history.history[key], [r[key] for r in rows], rtol=1e-6)
    assert history.best_epoch == int(np.argmin(history.history["val_loss"])) + 1
    assert len(history.seconds) == 3 and all(s > 0 for s in history.seconds)


def test_test_accuracy_is_the_best_checkpoints(history: History, tiny_splits: Splits) -> None:
    model = history.best_model()
    x = torch.from_numpy(tiny_splits.x_test).permute(0, 3, 1, 2)  # channels first
    predicted = predict_proba(model, x).argmax(1)
    assert history.test_accuracy == pytest.approx(float((predicted == tiny_splits.y_test).mean()))


def test_arrays_train_as_the_splits_do(history: History, tiny_splits: Splits) -> None:
    s = tiny_splits
    again = fit(
        resolve("case3"), s.x_train, s.y_train, validation_data=(s.x_val, s.y_val),
        test_data=(s.x_test, s.y_test), epochs=3, verbose=0,
    )  # fmt: skip
    assert again.history == history.history  # same seed, same data: the same run
    assert again.run_dir != history.run_dir and (again.run_dir / "best.pt").is_file()


def test_verbose_prints_one_line_per_epoch(
    tiny_splits: Splits, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fit("case2", tiny_splits, epochs=2, out_dir=tmp_path, verbose=2)
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("epoch ")]
    assert [x.split(":")[0] for x in lines] == ["epoch 1", "epoch 2"]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(verbose=3), "verbose"),
        (dict(epochs=0), "epochs"),
        (dict(y=np.zeros(3)), "give a Splits alone"),
        (dict(nonsense=1), "unknown keyword 'nonsense'"),
        (dict(learning_rat=0.1), "did you mean 'learning_rate'"),
        (dict(learning_rate=0.1, lr=0.2), "give learning_rate or lr, not both"),
    ],
)
def test_bad_arguments(tiny_splits: Splits, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        fit("case1", tiny_splits, **kwargs)
    assert "\n" not in str(info.value)

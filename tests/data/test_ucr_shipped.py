"""UCR/UEA: the datasets sktime ships found by name, and the split of the published protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnlab.data import ucr
from cnnlab.errors import CnnlabError
from data.test_ucr import VALID, needs_sktime


@needs_sktime
def test_the_datasets_sktime_ships_are_found_last(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = ucr.sktime_dir()
    assert shipped is not None and (shipped / "ArrowHead" / "ArrowHead_TRAIN.ts").is_file()
    assert ucr.locate("ArrowHead", isolated) == shipped / "ArrowHead"  # nothing of ours: sktime's
    own = isolated / "ucr" / "ArrowHead"
    own.mkdir(parents=True)
    (own / "ArrowHead_TRAIN.ts").write_text(VALID)
    assert ucr.locate("ArrowHead", isolated) == own  # a copy of the user's comes first
    data = ucr.load_ucr("ItalyPowerDemand", isolated, allow_download=False)
    assert (len(data.y_train), len(data.y_test), data.x_train.shape[1:]) == (67, 1029, (24, 1))
    with pytest.raises(CnnlabError, match=r"not found \(looked in .*datasets/data/Nope"):
        ucr.load_ucr("Nope", isolated, allow_download=False)


def test_val_fraction_zero_trains_and_validates_on_all_of_train(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float32).reshape(6, 2, 1)
    y = np.array([0, 1, 0, 1, 0, 1])
    data = ucr.TimeSeriesData(
        "T", x, y, x[:2], y[:2], ["a", "b"], y * 0 + 2, y[:2] * 0 + 2, tmp_path
    )
    x_tr, _, x_val, y_val, _, _ = ucr.ucr_splits(data, seed=3, val_fraction=0)
    assert np.array_equal(x_tr, x) and np.array_equal(x_val, x) and np.array_equal(y_val, y)
    assert len(ucr.ucr_splits(data, seed=3, val_fraction=0.5)[0]) == 3

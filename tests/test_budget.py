"""The memory budget's chunk fitting: evaluation and prediction run fewer examples at once
where a chunk of the usual size would not fit, and refuse only where one example would not."""

from __future__ import annotations

import pytest

from cnnlab import budget
from cnnlab.errors import CnnlabError
from cnnlab.models.compact import parse_compact
from cnnlab.train.config import TrainConfig

# 100,000 steps x 8 filters: 9.6 MB of live maps per example (x 4 bytes x 3)
LONG = parse_compact("Input(100000,1) Conv1D(8,3) GlobalAveragePooling1D Dense(2,softmax)")


@pytest.mark.parametrize("limit_mb", [10, 25, 100, 1000, 20_000])
def test_fit_chunk_is_the_largest_halving_that_fits(limit_mb: int) -> None:
    limit = limit_mb * 10**6
    chunk = budget.fit_chunk(LONG, 1000, limit)
    assert 1 <= chunk <= 1000
    assert budget.inference_bytes(LONG, chunk) <= limit
    # the next larger candidate (the one halved away) did not fit, unless nothing was cut
    assert chunk == 1000 or budget.inference_bytes(LONG, 2 * chunk + 1) > limit
    if limit_mb == 20_000:
        assert chunk == 1000


def test_fit_chunk_refuses_when_one_example_does_not_fit() -> None:
    words = r"evaluating model on chunks of 1 needs .*--max-memory-gb"
    with pytest.raises(CnnlabError, match=words):
        budget.fit_chunk(LONG, 1000, 5 * 10**6, "evaluating")


def test_fit_eval_chunk_keeps_every_other_setting() -> None:
    config = TrainConfig(model="x", epochs=3, seed=7)
    fitted = budget.fit_eval_chunk(config, LONG, 100 * 10**6)
    assert fitted.eval_batch_size < config.eval_batch_size
    assert budget.inference_bytes(LONG, fitted.eval_batch_size) <= 100 * 10**6
    assert {**vars(fitted), "eval_batch_size": 0} == {**vars(config), "eval_batch_size": 0}

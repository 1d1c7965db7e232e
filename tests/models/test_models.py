"""The three cases: Keras' parameter counts, shapes, initialisation, flatten order, summary."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cnnlab.models import (
    CASES,
    case_name,
    count_params,
    create_model,
    get,
    predict_proba,
    summary,
)
from cnnlab.models.layers.shaping import FlattenModule as FlattenLast


@pytest.mark.parametrize(
    ("case", "params"), [("case1", 61_002), ("case2", 3_210), ("case3", 10_090)]
)
def test_parameter_counts_match_keras(case: str, params: int) -> None:
    assert count_params(create_model(case)) == params


@pytest.mark.parametrize("case", sorted(CASES))
def test_output_is_logits_and_proba_sums_to_one(case: str, global_random_seed: int) -> None:
    model = create_model(case).eval()
    x = torch.rand(7, 1, 28, 28)
    logits = model(x)
    assert logits.shape == (7, 10)
    p = predict_proba(model, x)
    torch.testing.assert_close(p.sum(1), torch.ones(7))
    torch.testing.assert_close(p, torch.softmax(logits, 1))


@pytest.mark.parametrize("case", sorted(CASES))
def test_keras_initialisation(case: str, global_random_seed: int) -> None:
    """Glorot-uniform kernels (limit sqrt(6 / (fan_in + fan_out))) and zero biases."""
    for m in create_model(case).modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            w = m.weight
            receptive = w[0, 0].numel() if w.ndim == 4 else 1
            limit = math.sqrt(6 / (w.shape[1] * receptive + w.shape[0] * receptive))
            assert w.abs().max() <= limit
            # A uniform(-a, a) sample has std a / sqrt(3); loose enough for 90-element kernels.
            assert w.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.25)
            assert m.bias is not None and torch.count_nonzero(m.bias) == 0


def test_flatten_is_channels_last_like_keras() -> None:
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)  # (N, C, H, W)
    out = FlattenLast()(x)
    # Keras flattens (N, H, W, C): the channel index runs fastest.
    assert out[0, :3].tolist() == [x[0, 0, 0, 0], x[0, 1, 0, 0], x[0, 2, 0, 0]]
    torch.testing.assert_close(out, x.permute(0, 2, 3, 1).reshape(2, -1))


def test_case_names() -> None:
    assert case_name(1) == case_name("1") == case_name("case1") == "case1"
    with pytest.raises(ValueError, match="unknown case '4'"):
        case_name("4")


def test_summary_table() -> None:
    text = summary(get("case1"))
    assert "conv1 (Conv2D)" in text and "(None, 26, 26, 16)" in text
    assert "(None, 5, 5, 64)" in text and "51,232" in text
    assert "Total params: 61,002" in text and "Softmax" not in text
    text2 = summary(get("case2"))
    assert "(None, 1, 1, 10)" not in text2 and "softmax (Softmax)" in text2
    assert "Total params: 3,210" in text2

"""ZeroPadding (1-3 D, per-side amounts) and Flatten (Keras' channels-last order), against
NumPy, and through every consumer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.models import ModelDescription, build_module

from .helpers import check_network

HEAD = [("Flatten", {}), ("Dense", {"units": 2, "activation": "softmax"})]
CASES = [
    (
        (7, 2),
        [("ZeroPadding1D", {"padding": [1, 3]}), ("Conv1D", {"filters": 2, "kernel_size": 3})],
    ),
    ((5, 4, 3), [("ZeroPadding2D", {"padding": [[0, 2], [1, 1]]}), ("AveragePooling2D", {})]),
    (
        (3, 4, 5, 1),
        [("ZeroPadding3D", {"padding": 1}), ("Conv3D", {"filters": 2, "kernel_size": 2})],
    ),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_every_consumer(case: int) -> None:
    shape, layers = CASES[case]
    check_network(ModelDescription.build("z", shape, [*layers, *HEAD]), exact_fields=True)


def test_against_numpy() -> None:
    x = np.random.default_rng(0).normal(size=(2, 5, 4, 3))
    pads = ("ZeroPadding2D", {"padding": [[0, 2], [1, 1]]})
    desc = ModelDescription.build("z", (5, 4, 3), [pads, ("Flatten", {})])
    with torch.no_grad():
        got = build_module(desc).double()(torch.from_numpy(x).movedim(-1, 1)).numpy()
    want = np.pad(x, ((0, 0), (0, 2), (1, 1), (0, 0))).reshape(2, -1)  # (H, W, C) order
    np.testing.assert_array_equal(got, want)

"""MaxPooling, AveragePooling (1-3 D, Keras' ``same``: padding never counted) and their
global forms, against a brute-force loop and NumPy, and through every consumer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ops.helpers import brute_force_pool, tf_same_pads

from cnnlab.models import ModelDescription, build_module, parse_compact

from .helpers import check_network

CASES = [
    "Input(13,2) MaxPooling1D(3,2,same) AveragePooling1D(2) GlobalMaxPooling1D Dense(2,softmax)",
    "Input(9,8,2) Conv2D(3,2) AveragePooling2D(3,2,same) MaxPooling2D(2,1) "
    "GlobalAveragePooling2D Dense(3,softmax)",
    "Input(5,6,7,1) MaxPooling3D(2,padding=same) AveragePooling3D(1x2x2) Flatten Dense(2,softmax)",
]


@pytest.mark.parametrize("line", CASES)
def test_every_consumer(line: str) -> None:
    # max pooling's gradient reaches the winner only: fields are exact without it
    check_network(parse_compact(line), exact_fields="Max" not in line)


@pytest.mark.parametrize("kind", ["Max", "Average"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_against_a_brute_force_loop(kind: str, rank: int) -> None:
    rng = np.random.default_rng(rank + 3 * (kind == "Max"))
    for trial in range(5):
        spatial = [int(v) for v in rng.integers(3, 8, rank)]
        size = [int(v) for v in rng.integers(1, 4, rank)]
        strides = [int(v) for v in rng.integers(1, 3, rank)]
        padding = "same" if trial % 2 else "valid"
        if padding == "valid" and any(k > n for k, n in zip(size, spatial, strict=True)):
            continue
        args = {"pool_size": size, "strides": strides, "padding": padding}
        desc = ModelDescription.build("p", (*spatial, 2), [(f"{kind}Pooling{rank}D", args)])
        x = rng.normal(size=(3, *spatial, 2))
        pads = [
            tf_same_pads(n, k, s) if padding == "same" else (0, 0)
            for n, k, s in zip(spatial, size, strides, strict=True)
        ]
        want = brute_force_pool(x, size, strides, pads, "max" if kind == "Max" else "mean")
        with torch.no_grad():
            got = build_module(desc).double()(torch.from_numpy(x).movedim(-1, 1))
        np.testing.assert_allclose(got.movedim(1, -1).numpy(), want, rtol=1e-12)


def test_global_pooling_against_numpy() -> None:
    x = np.random.default_rng(0).normal(size=(4, 5, 6, 3))
    for kind, fn in (("Average", np.mean), ("Max", np.max)):
        desc = parse_compact(f"Input(5,6,3) Global{kind}Pooling2D")
        with torch.no_grad():
            got = build_module(desc).double()(torch.from_numpy(x).movedim(-1, 1)).numpy()
        np.testing.assert_allclose(got, fn(x, axis=(1, 2)), rtol=1e-12)

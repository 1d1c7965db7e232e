"""relu, softmax, flatten and dense against torch."""

from __future__ import annotations

import numpy as np
import torch

from cnnlab.ops import dense, flatten, relu, softmax

from .helpers import assert_matches


def test_relu() -> None:
    x = np.random.default_rng(0).standard_normal((4, 5, 5, 3))
    assert_matches(relu(x), torch.relu(torch.from_numpy(x)), rtol=0, atol=0)
    assert relu(x.astype(np.float32)).dtype == np.float32


def test_softmax_matches_torch_and_is_stable() -> None:
    x = np.random.default_rng(1).standard_normal((6, 10)) * 5
    assert_matches(softmax(x), torch.softmax(torch.from_numpy(x), dim=-1))
    assert_matches(softmax(x, axis=0), torch.softmax(torch.from_numpy(x), dim=0))
    huge = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, -1000.0, -1000.0]])
    expected = torch.softmax(torch.from_numpy(huge), dim=-1)  # naive exp would overflow
    assert_matches(softmax(huge), expected)
    assert_matches(softmax(huge.astype(np.float32)), expected, dtype=np.float32, rtol=1e-6)


def test_flatten_is_channels_last_row_major() -> None:
    x = np.arange(2 * 3 * 3 * 2).reshape(2, 3, 3, 2)
    flat = flatten(x)
    assert flat.shape == (2, 18)
    assert flat[0, :4].tolist() == [0, 1, 2, 3]  # (h=0, w=0, c=0), (0, 0, 1), (0, 1, 0), ...


def test_dense_matches_torch_linear() -> None:
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((5, 12)), rng.standard_normal((12, 4)), rng.standard_normal(4)
    # torch's linear stores the kernel transposed, (D_out, D_in)
    expected = torch.nn.functional.linear(
        torch.from_numpy(x), torch.from_numpy(w.T.copy()), torch.from_numpy(b)
    )
    assert_matches(dense(x, w, b), expected)
    assert_matches(dense(x, w), expected - torch.from_numpy(b))
    out32 = dense(x.astype(np.float32), w, b)
    assert_matches(out32, expected, dtype=np.float32, rtol=1e-5, atol=1e-5)

"""Batch normalisation fused with the ReLU and the max pooling after it (``csrc/norm.cpp``)
against float64 autograd, beyond the networks of ``test_blocks.py``: gamma of either sign,
ties in the windows, windows of 2x2, 2x3 and 1x4."""

from __future__ import annotations

import shutil

import pytest
import torch

from cnnlab.engine import native
from cnnlab.engine.plan import plan
from cnnlab.models.torch_module import build_module

from .test_blocks import check_net_against_float64, described, images

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")


@pytest.fixture(scope="module", autouse=True)
def kernels() -> None:
    assert native.load(), "the C++ kernels must build where there is a compiler"


# BatchNormalization + ReLU + max pooling fused, alone after a 1x1 convolution (so that it
# needs its input gradient): windows of 2x2, 2x3, 1x4; 5, 20 and 6 channels
FUSED_NORM = [
    "Input(9,11,5) Conv2D(5,1,use_bias=False) BatchNormalization ReLU MaxPooling2D(2) "
    "Flatten Dense(3,softmax)",
    "Input(8,7,20) Conv2D(20,1) BatchNormalization(center=False) Activation(relu) "
    "MaxPooling2D(2x3) GlobalAveragePooling2D Dense(3,softmax)",
    "Input(23,6) Conv1D(6,1) BatchNormalization ReLU MaxPooling1D(4) Flatten Dense(2,softmax)",
]


@pytest.mark.parametrize("n", [2, 9])
@pytest.mark.parametrize("text", FUSED_NORM, ids=["2x2", "2x3", "1d"])
def test_fused_batch_norm_matches_float64_with_gamma_of_either_sign(text: str, n: int) -> None:
    """gamma of either sign (a negative one makes a window's largest input its smallest
    output) and beta around 0 (some windows all zeros after the ReLU, some none), on inputs
    with ties in the windows: the kernels' block against float64 autograd."""
    desc = described(text)
    torch.manual_seed(n)
    model = build_module(desc)
    g = torch.Generator().manual_seed(10 + n)
    with torch.no_grad():
        for name, q in model.named_parameters():
            if name.startswith("batch_normalization."):
                q.copy_(torch.randn(q.shape, generator=g))
    assert [b.layers[1:] for b in plan(desc).blocks if b.kind == "batch_norm"] != [()]
    check_net_against_float64(desc, model, images(n, desc.input_shape, seed=n, uint8=False))

"""keras-zoo's 1-D and 2-D networks, saved by Keras itself, through the fast engine's C++ step.

Every block of ``conv2d_same_strides`` (a strided 'same' 5x5 convolution, a tanh
convolution, average pooling), of ``conv2d_bn_dilated`` (a dilated convolution,
BatchNormalization, 'same' 3x3/2 max pooling, a separate ReLU, global max pooling, dropout)
and of ``conv1d_timeseries`` (1-D convolutions and pooling, as one-row images) has a
kernel, so the whole step runs in C++ (``conv3d_video`` does not: 3-D runs in PyTorch).
With Keras' trained weights, the kernels' evaluation-mode forward pass (moving statistics
included) must give Keras' own outputs; and from a fresh initialisation, their training
steps must follow the plain loop's.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.engine import native
from cnnlab.engine.fastpath import fast_logits
from cnnlab.engine.plan import plan, where
from cnnlab.interop.keras_import import read_keras
from cnnlab.models.torch_module import build_module

from .test_blocks import steps_follow_the_plain_loop

REPO = Path(__file__).resolve().parents[2]
ZOO = Path(os.environ.get("CNNLAB_DATA") or REPO.parent / "shared" / "data") / "keras-zoo"
NAMES = ["conv2d_same_strides", "conv2d_bn_dilated", "conv1d_timeseries"]

pytestmark = [
    pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler"),
    pytest.mark.skipif(not (ZOO / "index.json").is_file(), reason=f"keras-zoo not in {ZOO}"),
]


def test_three_d_runs_in_pytorch() -> None:
    desc = read_keras(ZOO / "conv3d_video.keras").description
    assert not plan(desc).native
    assert set(where(desc, kernels=True).values()) == {"pytorch"}


@pytest.mark.parametrize("name", NAMES)
def test_kernels_give_keras_outputs(name: str) -> None:
    assert native.load()
    km = read_keras(ZOO / f"{name}.keras")
    p = plan(km.description)
    assert p.native, [b.kind for b in p.blocks]
    assert set(where(km.description, kernels=True).values()) == {"cnnlab"}
    model = build_module(km.description)
    model.load_state_dict(km.state_dict)
    model.eval()
    x = torch.from_numpy(np.load(ZOO / f"{name}.inputs.npy")).movedim(-1, 1).contiguous()
    want = np.load(ZOO / f"{name}.outputs.npy")
    got = torch.softmax(fast_logits(model, x), dim=1).numpy()
    assert got.shape == want.shape
    assert float(np.abs(got - want).max()) <= 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_kernel_steps_follow_the_plain_loop(name: str) -> None:
    desc = read_keras(ZOO / f"{name}.keras").description
    classes = json.loads((ZOO / "index.json").read_text())[name]["classes"]
    g = torch.Generator().manual_seed(7)
    x = torch.rand(5 * 8 - 3, *desc.input_shape, generator=g).movedim(-1, 1).contiguous()
    x[x < 0.5] = 0.0  # a flat background, as digits have: ties in the pooling windows
    y = torch.randint(0, classes, (len(x),), generator=g)
    steps_follow_the_plain_loop(desc, x, y, native=True)

"""Conv1D, Conv2D, Conv3D: the kind against PyTorch's functional convolution in float64,
TensorFlow's ``same`` rule written out independently, and through every consumer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ops.helpers import tf_same_pads, torch_conv

from cnnlab.models import ModelDescription, build_module, parse_compact
from cnnlab.models import layers as L

from .helpers import check_network

CASES = [
    "Input(17,3) Conv1D(4,5,2,same,gelu) Conv1D(3,2,padding=same,dilation_rate=3) "
    "GlobalAveragePooling1D Dense(2,softmax)",
    "Input(9,11,2) Conv2D(5,4x3,2,same,relu6) Conv2D(3,2,use_bias=false,activation=silu) "
    "Flatten Dense(3,softmax)",
    "Input(6,7,5,1) Conv3D(2,3,padding=same,strides=2) Conv3D(3,1x2x2,selu) "
    "GlobalMaxPooling3D Dense(2,softmax)",
]


@pytest.mark.parametrize("line", CASES)
def test_every_consumer(line: str) -> None:
    check_network(parse_compact(line), exact_fields=False)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_against_torch_functional(rank: int) -> None:
    rng = np.random.default_rng(rank)
    for trial in range(6):
        spatial = [int(v) for v in rng.integers(4, 10, rank)]
        cin, f = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        k = [int(v) for v in rng.integers(1, 4, rank)]
        strided = trial % 2 == 0
        s = [int(v) for v in rng.integers(1, 3, rank)] if strided else [1] * rank
        d = [1] * rank if strided else [int(v) for v in rng.integers(1, 3, rank)]
        padding = ["same", "valid"][trial % 3 == 0]
        args = {"filters": f, "kernel_size": k, "strides": s, "dilation_rate": d}
        try:
            desc = ModelDescription.build(
                "c", (*spatial, cin), [(f"Conv{rank}D", {**args, "padding": padding})]
            )
        except L.DescriptionError:
            continue  # a kernel larger than the map
        model = build_module(desc).double()
        x = rng.normal(size=(2, *spatial, cin))
        w = model.conv1d.weight if rank == 1 else getattr(model, f"conv{rank}d").weight
        b = getattr(model, f"conv{rank}d").bias
        kernel = w.detach().numpy().transpose(*range(2, 2 + rank), 1, 0)  # (*k, in, out)
        pads = (
            [tf_same_pads(n, kk, ss, dd) for n, kk, ss, dd in zip(spatial, k, s, d, strict=True)]
            if padding == "same"
            else [(0, 0)] * rank
        )
        want = torch_conv(x, kernel, b.detach().numpy(), pads=pads, stride=s, dilation=d)
        with torch.no_grad():
            got = model(torch.from_numpy(x).movedim(-1, 1)).movedim(1, -1).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_keras_arguments_are_checked() -> None:
    for line, message in [
        ("Input(8,1) Conv1D(2,3,2,dilation_rate=2)", "strides > 1 together with dilation"),
        ("Input(8,8,1) Conv2D(2,3x3x3)", "kernel_size needs 2 entries"),
        ("Input(8,8,1) Conv2D(0,3)", "filters must be at least 1"),
        ("Input(8,8,1) Conv2D(2,3,activation=swishy)", "activation must be one of"),
        ("Input(8,8,1) Conv2D(2,3,padding=causal)", "padding must be one of valid, same"),
        ("Input(8,8,1) Conv2D(2,9)", "input 8x8 is smaller than the kernel 9x9"),
        ("Input(8,8,1) Conv1D(2,3)", "needs a 1-D input with channels"),
    ]:
        with pytest.raises(L.DescriptionError, match=message):
            parse_compact(line)

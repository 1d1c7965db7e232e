"""Receptive-field arithmetic against hand-computed cases and against autograd."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.analysis.receptive import LayerSpec, layer_table, markdown, receptive_fields
from cnnlab.models import create_model


def test_chapter_stack_by_hand() -> None:
    # conv3: 1 + 2*1 = 3, jump 1; pool2: 3 + 1*1 = 4, jump 2;
    # conv3: 4 + 2*2 = 8, jump 2; pool2: 8 + 1*2 = 10, jump 4.
    specs = [
        LayerSpec("conv1", "conv", 3),
        LayerSpec("pool1", "pool", 2, 2),
        LayerSpec("conv2", "conv", 3),
        LayerSpec("pool2", "pool", 2, 2),
    ]
    fields = receptive_fields(specs)
    assert [(f.size, f.jump) for f in fields] == [(3, 1), (4, 2), (8, 2), (10, 4)]
    # Centre of the first unit: 1, then 1 + 0.5*1 = 1.5, then 1.5 + 1*2 = 3.5, then 3.5 + 0.5*2.
    assert [f.start for f in fields] == [1.0, 1.5, 3.5, 4.5]


def test_stride_dilation_padding_by_hand() -> None:
    specs = [
        LayerSpec("a", "conv", 5, stride=2, padding=2),  # 5, jump 2, centre 2 - 2 = 0
        LayerSpec("b", "conv", 3, dilation=2),  # k_eff 5: 5 + 4*2 = 13, jump 2, centre 0 + 2*2
        LayerSpec("c", "pool", 3, stride=3),  # 13 + 2*2 = 17, jump 6, centre 4 + 1*2
    ]
    fields = receptive_fields(specs)
    assert [(f.size, f.jump, f.start) for f in fields] == [(5, 2, 0.0), (13, 2, 4.0), (17, 6, 6.0)]


def test_invalid_geometry_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid layer geometry"):
        receptive_fields([LayerSpec("x", "conv", 0)])


def _input_support(model: nn.Sequential, upto: str, i: int, j: int) -> tuple[int, int]:
    """Rows and columns of the input that reach unit (i, j) of layer ``upto`` (autograd).

    ReLUs are dropped and max-pools replaced by average pools of the same geometry, so every
    path carries gradient: the support is then exactly the receptive field.
    """
    layers: list[nn.Module] = []
    for name, m in model.named_children():
        if isinstance(m, nn.MaxPool2d):
            layers.append(nn.AvgPool2d(m.kernel_size, m.stride))
        elif not isinstance(m, nn.ReLU):
            layers.append(m)
        if name == upto:
            break
    x = torch.zeros(1, 1, 28, 28, dtype=torch.float64, requires_grad=True)
    y = nn.Sequential(*layers).double()(x)
    y[0, :, i, j].sum().backward()
    assert x.grad is not None
    nz = x.grad[0, 0].abs() > 0
    rows = torch.nonzero(nz.any(1)).flatten()
    cols = torch.nonzero(nz.any(0)).flatten()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


@pytest.mark.parametrize("case", ["case1", "case2", "case3"])
def test_layer_table_matches_autograd(case: str, global_random_seed: int) -> None:
    model = create_model(case)
    rows = layer_table(model)
    for r in rows:
        if r.kind in ("Conv2D", "MaxPooling2D"):
            # Unit (1, 2): away from the corner, still fully inside the image.
            assert _input_support(model, r.name, 1, 2) == (r.field.size, r.field.size), r.name


def test_case1_table_numbers() -> None:
    rows = {r.name: r for r in layer_table(create_model("case1"))}
    conv1, conv2 = rows["conv1"], rows["conv2"]
    assert conv1.out_shape == (26, 26, 16) and conv1.params == 3 * 3 * 1 * 16 + 16
    # Dense from 28*28*1 inputs to 26*26*16 outputs, with a bias per output.
    assert conv1.dense_params == 784 * 10816 + 10816
    assert (conv1.fan_in, conv1.dense_fan_in, conv1.uses_per_weight) == (9, 784, 676)
    assert conv2.params == 3 * 3 * 16 * 64 + 64 and conv2.uses_per_weight == 11 * 11
    assert conv2.dense_params == 13 * 13 * 16 * 11 * 11 * 64 + 11 * 11 * 64
    assert rows["pool2"].field.size == 10 and rows["pool2"].field.jump == 4
    # The 5x5 pool2 grid covers 10 + 4*4 = 26 input pixels: rows/cols 26 and 27 are unseen.
    assert rows["dense1"].field.size == 26 and rows["dense1"].params == 1600 * 32 + 32
    assert sum(r.params for r in rows.values()) == sum(
        p.numel() for p in create_model("case1").parameters()
    )


def test_gap_sees_the_same_26_pixels() -> None:
    rows = {r.name: r for r in layer_table(create_model("case2"))}
    assert rows["gap"].field.size == 26 and rows["gap"].out_shape == (10,)
    assert rows["gap"].params == 0


def test_last_rows_never_reach_the_output(global_random_seed: int) -> None:
    model = create_model("case1").double().eval()
    x = torch.rand(1, 1, 28, 28, dtype=torch.float64, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None
    g = x.grad[0, 0].abs()
    assert float(g[26:].max()) == 0.0 and float(g[:, 26:].max()) == 0.0
    assert float(g[:26, :26].max()) > 0.0


def test_markdown_has_a_row_per_layer() -> None:
    md = markdown(layer_table(create_model("case3")))
    assert md.count("\n") == 2 + 6
    assert "| conv2 | Conv2D | 11x11x64 | 8x8 | 2 | 9,280 |" in md

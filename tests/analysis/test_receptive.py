"""Receptive fields from the description alone: by hand, and against autograd on a zoo."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from model_zoo import ZOO  # the description zoo (chapter, keras-zoo, random)

from cnnlab.analysis.receptive import Axis, layer_table, markdown, receptive_fields, step
from cnnlab.cli import main
from cnnlab.models import ModelDescription, build_module, get, parse_compact
from cnnlab.models import layers as L


def test_chapter_stack_by_hand() -> None:
    # conv3: 1 + 2*1 = 3, jump 1; pool2: 3 + 1*1 = 4, jump 2;
    # conv3: 4 + 2*2 = 8, jump 2; pool2: 8 + 1*2 = 10, jump 4.
    a = Axis(1, 1, 0.0)
    fields = []
    for kernel, stride in ((3, 1), (2, 2), (3, 1), (2, 2)):
        a = step(a, kernel, stride)
        fields.append(a)
    assert [(f.size, f.jump) for f in fields] == [(3, 1), (4, 2), (8, 2), (10, 4)]
    # Centre of the first unit: 1, then 1 + 0.5*1 = 1.5, then 1.5 + 1*2 = 3.5, then 3.5 + 0.5*2.
    assert [f.start for f in fields] == [1.0, 1.5, 3.5, 4.5]
    derived = receptive_fields(get("case1"))[:4]
    assert [f.axes for f in derived] == [(f, f) for f in fields]


def test_stride_dilation_padding_by_hand() -> None:
    a = step(Axis(1, 1, 0.0), 5, stride=2, pad=2)  # 5, jump 2, centre 2 - 2 = 0
    b = step(a, 3, dilation=2)  # k_eff 5: 5 + 4*2 = 13, jump 2, centre 0 + 2*2
    c = step(b, 3, stride=3)  # 13 + 2*2 = 17, jump 6, centre 4 + 1*2
    assert [(f.size, f.jump, f.start) for f in (a, b, c)] == [
        (5, 2, 0.0),
        (13, 2, 4.0),
        (17, 6, 6.0),
    ]
    with pytest.raises(ValueError, match="invalid window"):
        step(a, 0)


def test_same_padding_leading_pad_and_non_square() -> None:
    # 28 with a 5-tap kernel, stride 2, same: 3 zeros in all, 1 before (TensorFlow's rule).
    desc = parse_compact("Input(28,20,1) Conv2D(4,5x2,2,same) ZeroPadding2D(1) Flatten Dense(3)")
    conv, pad, flat, _ = receptive_fields(desc)
    assert conv.size == (5, 2) and conv.jump == (2, 2)
    # 5x2 kernel: rows pad (1, 2), columns (0, 0) since 20 is even and the kernel 2 fits.
    assert conv.interval((0, 0)) == [(-1.0, 3.0), (0.0, 1.0)]
    assert pad.interval((1, 1)) == conv.interval((0, 0))  # one zero ring before: unit 1 is 0
    assert flat.jump == (0, 0) and flat.size == (28, 20)  # the union, clipped to the input


def linearised(desc: ModelDescription) -> ModelDescription:
    """The same geometry with every path carrying gradient: no activations (linear), average
    pooling for max pooling, Rescaling by 1, merges as sums; with positive weights nothing
    cancels."""
    d = desc.to_dict()
    for layer in d["layers"]:
        cls = layer["class_name"]
        if "activation" in layer:
            layer["activation"] = "linear"
        if cls in ("ReLU", "Softmax"):  # a linear Activation, without their own arguments
            kept = {k: layer[k] for k in ("name", "inputs") if k in layer}
            layer.clear()
            layer.update(kept, class_name="Activation", activation="linear")
        layer["class_name"] = layer["class_name"].replace("MaxPooling", "AveragePooling")
        if cls == "Rescaling":
            layer.update(scale=1.0, offset=0.0)
        if cls in ("Subtract", "Multiply", "Maximum", "Minimum"):  # a winner or a cancellation
            layer["class_name"] = "Add"  # would hide paths; the same geometry
    return ModelDescription.from_dict(d)


def _support(
    model: Any, upto: int, index: tuple[int, ...], shape: tuple[int, ...]
) -> np.ndarray | None:
    """(first, last) input pixel per axis with a non-zero gradient of the outputs at
    ``index`` of layer ``upto`` (all channels; ``()`` for a flat layer)."""
    x = torch.rand(1, shape[-1], *shape[:-1], dtype=torch.float64, requires_grad=True)
    h = {L.INPUT: x}
    for info in model.description.info[: upto + 1]:  # over the graph, every path
        h[info.layer.name] = model._modules[info.layer.name](*[h[n] for n in info.inputs])
    h[model.description.info[upto].layer.name][(0, slice(None), *index)].sum().backward()
    assert x.grad is not None
    nz = np.argwhere(x.grad[0].abs().sum(0).numpy() > 0)  # (points, rank)
    if not len(nz):  # a unit that reads nothing but padding
        return None
    return np.stack([nz.min(0), nz.max(0)], axis=1)  # (rank, 2)


CHECKED = ["case1", "case2", "speedrun"]
CHECKED += [n for n in ZOO if n.startswith(("conv", "random", "graph"))]


@pytest.mark.parametrize("name", CHECKED)
def test_fields_match_autograd(name: str) -> None:
    desc = ZOO[name]
    torch.manual_seed(0)
    model = build_module(linearised(desc)).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_().add_(0.05)
    spatial = desc.input_shape[:-1]
    exact = 0
    for k, (info, field) in enumerate(zip(desc.info, receptive_fields(desc), strict=True)):
        layer = info.layer
        if not isinstance(layer, L.Conv | L.Pool | L.Flatten | L.GlobalPool | L.Dense | L.Merge):
            continue
        flat = len(info.out_shape) == 1
        out = info.out_shape[:-1]
        units = (
            [()]
            if flat
            else {(0,) * len(out), tuple(n - 1 for n in out), tuple(n // 2 for n in out)}
        )
        for index in units:
            got = _support(model, k, index, desc.input_shape)
            want = np.array(field.interval(index if index else (0,) * len(spatial)))
            last = np.array(spatial) - 1
            clipped = np.stack([np.maximum(want[:, 0], 0), np.minimum(want[:, 1], last)], 1)
            where = f"{name} {layer.name} unit {index}"
            inside = (want[:, 0] >= 0) & (want[:, 1] <= last)
            if got is None:  # only padding: then some axis of the field must pass the border
                assert not inside.all(), where
                continue
            assert (got[:, 0] >= clipped[:, 0]).all() and (got[:, 1] <= clipped[:, 1]).all(), where
            np.testing.assert_array_equal(got[inside], want[inside], err_msg=where)
            exact += int(inside.sum())
    assert exact > 0  # some axes of some units were compared exactly, not just contained


def test_case1_table_numbers() -> None:
    rows = {r.name: r for r in layer_table(get("case1"))}
    conv1, conv2 = rows["conv1"], rows["conv2"]
    assert conv1.out_shape == (26, 26, 16) and conv1.params == 3 * 3 * 1 * 16 + 16
    # Dense from 28*28*1 inputs to 26*26*16 outputs, with a bias per output.
    assert conv1.dense_params == 784 * 10816 + 10816
    assert (conv1.fan_in, conv1.dense_fan_in, conv1.uses_per_weight) == (9, 784, 676)
    assert conv2.params == 3 * 3 * 16 * 64 + 64 and conv2.uses_per_weight == 11 * 11
    assert conv2.dense_params == 13 * 13 * 16 * 11 * 11 * 64 + 11 * 11 * 64
    assert rows["pool2"].field.size == (10, 10) and rows["pool2"].field.jump == (4, 4)
    # The 5x5 pool2 grid covers 10 + 4*4 = 26 input pixels: rows/cols 26 and 27 are unseen.
    assert rows["dense1"].field.size == (26, 26) and rows["dense1"].params == 1600 * 32 + 32
    assert sum(r.params for r in rows.values()) == get("case1").params


def test_every_parameter_is_in_the_table() -> None:
    for name, desc in ZOO.items():
        assert sum(r.params for r in layer_table(desc)) == desc.params, name


def test_last_rows_never_reach_the_output(global_random_seed: int) -> None:
    model = build_module(get("case1")).double().eval()
    x = torch.rand(1, 1, 28, 28, dtype=torch.float64, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None
    g = x.grad[0, 0].abs()
    assert float(g[26:].max()) == 0.0 and float(g[:, 26:].max()) == 0.0
    assert float(g[:26, :26].max()) > 0.0


def test_markdown_rows() -> None:
    md = markdown(layer_table(get("case3")))
    assert md.count("\n") == 2 + 6  # conv1, pool1, conv2, pool2, gap, dense
    assert "| conv2 | Conv2D | 11x11x64 | 8x8 | 2 | 9,280 |" in md
    video = markdown(layer_table(ZOO["conv3d_video"]))
    assert "| conv3d_1 | Conv3D | 3x7x7x8 | 4x8x8 | 2 | 296 |" in video
    series = markdown(layer_table(ZOO["conv1d_timeseries"]))
    assert "| conv1d_1 | Conv1D | 23x32 | 16 | 4 | 2,592 |" in series


def test_cli_receptive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["receptive", "--case", "2"]) == 0
    assert "| gap | GlobalAveragePooling2D | 10 | 26x26 | - | 0 |" in capsys.readouterr().out
    line = "Input(100,6) Conv1D(16,7,same,relu) MaxPooling1D(2) Flatten Dense(4,softmax)"
    assert main(["receptive", "--model", line]) == 0
    assert "| conv1d | Conv1D | 100x16 | 7 | 1 | 688 |" in capsys.readouterr().out
    assert main(["receptive", "--model", "Input(28,28,1) Conv2D(8,30)"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: error:") and err.count("\n") == 1

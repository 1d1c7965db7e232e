"""resnet1d: Wang et al. (2017)'s ResNet, and the NumPy engine's float64 reading of it after
training (BatchNormalization statistics moved off their start, shortcuts and all)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.analysis.explain_series import class_activation_map
from cnnlab.engine.numpy_engine import from_torch
from cnnlab.models import build_module, count_params
from cnnlab.models.registry import resolve_for


def wang_params(channels: int, classes: int) -> int:
    """Trainable parameters of Wang et al.'s ResNet, counted by hand: per block three
    Conv1D (kernels 8, 5, 3) with biases and BatchNormalization (scale, offset), and a
    shortcut (1x1 Conv1D + BatchNormalization where the width changes, else BN alone)."""
    total, width = 0, channels
    for filters in (64, 128, 128):
        ins = width
        for kernel in (8, 5, 3):
            total += ins * filters * kernel + filters + 2 * filters
            ins = filters
        total += (width * filters + filters if width != filters else 0) + 2 * filters
        width = filters
    return total + 128 * classes + classes


@pytest.mark.parametrize(("channels", "classes"), [(1, 2), (6, 4)])
def test_resnet1d_is_wang_et_al(channels: int, classes: int) -> None:
    desc = resolve_for("resnet1d", (50, channels), classes)
    convs = [i.layer for i in desc.info if i.layer.class_name == "Conv1D"]
    main = [(c.filters, c.kernel_size[0]) for c in convs if not c.name.endswith("shortcut_conv")]
    assert main == [(f, k) for f in (64, 128, 128) for k in (8, 5, 3)]
    assert count_params(build_module(desc)) == wang_params(channels, classes)


def test_trained_resnet1d_against_the_numpy_engine_in_float64() -> None:
    desc = resolve_for("resnet1d", (37, 3), 4)
    torch.manual_seed(0)
    model = build_module(desc).double()
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(0.5, 2.0, (12, 37, 3)))
    y = torch.from_numpy(rng.integers(0, 4, 12))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    model.train()
    for _ in range(5):  # the BN statistics and every weight move away from their start
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x.movedim(-1, 1)), y).backward()
        opt.step()
    model.eval()
    engine = from_torch(model)
    assert engine.dtype == "float64"
    test = rng.normal(0.0, 1.5, (7, 37, 3))
    with torch.no_grad():
        ref = model(torch.from_numpy(test).movedim(-1, 1)).numpy()
    ours = engine.logits(test)
    assert np.abs(ours - ref).max() <= 1e-10 * max(1.0, np.abs(ref).max())
    # its class activation map splits the engine's logit over time, exactly
    for c in range(4):
        cam = class_activation_map(engine, test[0], c)
        assert cam.logit == pytest.approx(float(ref[0, c]), abs=1e-9)
        assert cam.cam.shape == (37,)

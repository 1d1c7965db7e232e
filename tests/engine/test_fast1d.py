"""The fast engine on 1-D networks, and the learning-rate plateau rule.

BatchNormalization runs in the fast engine as PyTorch's fused kernel with Keras' moving
statistics (:mod:`cnnlab.engine.batchnorm`); the plain loop runs the module's written-out
formulas. Same batches: the losses, the weights and the moving statistics must agree to
float32 rounding. ``ReduceLROnPlateau`` (:mod:`cnnlab.train.plateau`) follows Keras' rule.
"""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.data import Splits
from cnnlab.engine.batchnorm import batch_norm
from cnnlab.engine.fastpath import fast_logits, make_step
from cnnlab.models import build_module, parse_compact
from cnnlab.models.torch_module import BatchNorm
from cnnlab.models.zoo import fcn1d
from cnnlab.train.config import TrainConfig
from cnnlab.train.loop import fit, make_optimizer
from cnnlab.train.plateau import Plateau
from cnnlab.train.recipes import settings

QUIET = {"progress": False, "log": lambda _msg: None}


def series(n: int, t: int, c: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, t, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize(
    "text",
    [
        "Input(20,3) Conv1D(4,3,same) BatchNormalization(momentum=0.9) ReLU Flatten Dense(3)",
        "Input(9,2) Conv1D(5,4,same) BatchNormalization(center=false) ReLU "
        "Conv1D(3,2) BatchNormalization(scale=false,epsilon=0.01) GlobalAveragePooling1D Dense(3)",
        "Input(6,6,2) Conv2D(4,3,same) BatchNormalization ReLU GlobalAveragePooling2D Dense(3)",
    ],
)
def test_fused_batch_norm_is_the_modules(text: str) -> None:
    """Training and inference mode, values, input gradients and moving statistics."""
    torch.manual_seed(0)
    model = build_module(parse_compact(text, "m"))
    bn = next(m for m in model if isinstance(m, BatchNorm))
    channels = bn.running_mean.numel()
    spatial = (7,) if "1D" in text else (5, 4)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        if bn.weight is not None:
            bn.weight.uniform_(0.5, 2)
    other = copy.deepcopy(bn)
    x = (torch.randn(5, channels, *spatial) * 3 + 1).requires_grad_()
    for training in (True, False):
        bn.train(training)
        other.train(training)
        expected = bn(x)
        got = batch_norm(other, x)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        (ge,) = torch.autograd.grad((expected * expected.detach()).sum(), x)
        (gg,) = torch.autograd.grad((got * got.detach()).sum(), x)
        torch.testing.assert_close(gg, ge, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(other.running_mean, bn.running_mean, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(other.running_var, bn.running_var, rtol=1e-6, atol=1e-7)


def test_one_value_per_channel_falls_back_to_the_module() -> None:
    layer = parse_compact("Input(1,2) BatchNormalization Flatten Dense(2)", "m").layers[0]
    bn = BatchNorm(layer, 2)
    x = torch.randn(1, 2, 1)
    torch.testing.assert_close(batch_norm(bn, x), torch.zeros(1, 2, 1))


NO_BIAS = (
    "Input(17,3) Conv1D(8,8,same,use_bias=false,name=conv1) BatchNormalization(momentum=0.9) "
    "ReLU Conv1D(6,5,same,use_bias=false,name=conv2) BatchNormalization ReLU "
    "GlobalAveragePooling1D Dense(4,softmax)"
)


@pytest.mark.parametrize("which", ["fcn1d", "no conv biases"])
def test_fcn1d_fast_steps_match_the_plain_loop(which: str) -> None:
    """fcn1d (asymmetric ``same`` padding, BatchNormalization): six steps, short last batch.

    A bias before BatchNormalization has a gradient of 0 up to rounding, which Adam scales
    to steps of up to lr in either direction: fcn1d's conv biases (and with them the moving
    means) follow the rounding, so they are checked exactly on a network without them.
    """
    x, y = series(6 * 8 - 3, 17, 3, 4, seed=1)
    torch.manual_seed(2)
    description = fcn1d((17, 3), 4) if which == "fcn1d" else parse_compact(NO_BIAS, "m")
    plain = build_module(description)
    fast = copy.deepcopy(plain)
    opt = torch.optim.Adam(plain.parameters(), lr=1e-3, eps=1e-7)
    step = make_step(fast, make_optimizer(fast, TrainConfig()))
    plain.train()
    fast.train()
    # fcn1d's losses follow that rounding too: its third batch meets a map value 1.2e-7 from
    # the ReLU's kink (float64: measured), whose gradient rounding may send either way; the
    # losses then part by up to 1.2e-4 and weights with small gradients by an Adam step
    rtol = 2e-5 if which != "fcn1d" else 3e-4
    for i in range(0, len(x), 8):
        xb, yb = x[i : i + 8], y[i : i + 8]
        loss = F.cross_entropy(plain(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_sum, _ = step(xb, yb, None)
        np.testing.assert_allclose(loss_sum.item() / len(xb), loss.item(), rtol=rtol, atol=1e-6)
    for (name, a), b in zip(plain.state_dict().items(), fast.state_dict().values(), strict=True):
        if name.endswith((".running_mean", ".bias")) and not name.startswith("dense"):
            if name.startswith("conv"):
                assert max(a.abs().max(), b.abs().max()) <= 6 * 1e-3 * 1.01  # 6 Adam steps
            if which == "fcn1d":
                continue
        # fcn1d's weights follow the biases' rounding too: within two of its six Adam steps
        atol = 2e-5 if which != "fcn1d" else 2e-3
        torch.testing.assert_close(b, a, rtol=1e-4, atol=atol, msg=name)
    plain.eval()
    fast.eval()
    tol = 1e-4 if which != "fcn1d" else 1e-3  # the moving means hold the biases' history
    with torch.no_grad():
        torch.testing.assert_close(fast_logits(fast, x), plain(x), rtol=tol, atol=tol)


def test_plateau_follows_keras_rule() -> None:
    """Keras' ReduceLROnPlateau(factor=0.5, patience=2, min_lr=0.1, min_delta=1e-4)."""
    rule = Plateau(0.5, 2, 0.1)
    lrs, lr = [], 1.0
    for loss in [1.0, 0.9, 0.89995, 0.95, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]:
        lr = rule.step(loss, lr)
        lrs.append(lr)
    #       best 1.0, 0.9; 0.89995 is not 1e-4 better; 2 waits -> 0.5; 0.8 better; ...
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125, 0.1, 0.1, 0.1]
    again = Plateau(0.5, 2, 0.1)
    final = again.replay([{"loss": v} for v in [1.0, 0.9, 0.89995, 0.95]], 1.0)
    assert final == 0.5 and again.wait == 0 and again.best == 0.9


def _series_splits(n: int) -> Splits:
    x, y = series(n, 12, 2, 2, seed=3)
    xs, ys = x.transpose(1, 2).numpy(), y.numpy()  # channels-last, as the loader gives
    return Splits(xs, ys, xs[:8], ys[:8], xs[:8], ys[:8])


def test_fit_reduces_the_rate_on_a_plateau_and_stops_on_val_loss(tmp_path: Path) -> None:
    description = fcn1d((12, 2), 2)
    config = TrainConfig(model="fcn1d", data="ucr:X", epochs=6, patience=2, batch_size=8,
                         monitor="val_loss", plateau_factor=0.5, plateau_patience=1, lr=1e-3,
                         min_lr=1e-4)  # fmt: skip
    lines: list[str] = []
    fit(config, _series_splits(16), tmp_path, description=description, progress=False,
        log=lines.append)  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    losses = [float(r["loss"]) for r in rows]
    rule, lr, expected = Plateau(0.5, 1, 1e-4), 1e-3, []
    for loss in losses:
        new = rule.step(loss, lr)
        if new != lr:
            expected.append(f"learning rate {lr:g} -> {new:g}")
        lr = new
    assert [m for line in lines for m in expected if m in line] == expected
    val = [float(r["val_loss"]) for r in rows]
    best = min(range(len(val)), key=val.__getitem__)
    assert len(rows) == 6 or len(rows) - 1 - best == 2  # stopped 2 epochs after the best


def test_config_checks_the_new_fields() -> None:
    for bad in ({"monitor": "loss"}, {"plateau_factor": 1.0}, {"min_lr": 0.0},
                {"plateau_patience": 0}, {"min_lr": math.nan}):  # fmt: skip
        with pytest.raises(ValueError):
            TrainConfig(**bad)  # type: ignore[arg-type]
    assert TrainConfig().plateau_factor == 0.0  # off in the chapter's recipe


def test_time_series_recipe_turns_them_on_and_the_chapter_keeps_them_off() -> None:
    config = TrainConfig(**settings("ucr:Anything"))
    assert config.monitor == "val_loss" and config.plateau_factor == 0.5
    assert TrainConfig(**settings("mnist")) == TrainConfig()  # the chapter's recipe


def test_resume_rebuilds_the_plateau_state(tmp_path: Path) -> None:
    """Interrupted after epoch 3 and resumed: the same epochs and learning rates as one run."""
    description = fcn1d((12, 2), 2)
    config = TrainConfig(model="fcn1d", data="ucr:X", epochs=6, patience=6, batch_size=8,
                         plateau_factor=0.5, plateau_patience=1, lr=0.5, min_lr=1e-4)  # fmt: skip
    splits = _series_splits(16)

    def run(out: Path, stop_after: int | None) -> tuple[list[dict[str, str]], list[str]]:
        out.mkdir()
        lines: list[str] = []

        def interrupt(epoch: int, _row: dict[str, float]) -> None:
            if epoch == stop_after:
                raise KeyboardInterrupt

        try:
            fit(config, splits, out, description=description, progress=False,
                log=lines.append, on_epoch_end=interrupt)  # fmt: skip
        except KeyboardInterrupt:
            fit(config, splits, out, resume=True, progress=False, log=lines.append)
        rows = list(csv.DictReader((out / "history.csv").open()))
        rates = [line[line.index("learning rate") :] for line in lines if "learning rate" in line]
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows], rates

    one, two = run(tmp_path / "one", None), run(tmp_path / "two", 3)
    assert len(one[0]) == 6 and one[1]  # the rate fell at least once
    assert one == two

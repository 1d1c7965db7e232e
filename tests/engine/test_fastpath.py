"""The fast engine computes what the plain PyTorch loop computes, step for step.

The reference is the plain loop (``nn.Sequential`` forward, autograd, ``torch.optim.Adam``
with its default implementation); the fast engine changes the layout (channels-last),
the order of ReLU and pooling, the cropped border, the hand-written backward pass of
Case 1 and the fused Adam kernel. Same batches, same dropout draws: the losses must agree
to float32 rounding, and so must the weights after several steps.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.data import Splits
from cnnlab.data.scaling import input_scale
from cnnlab.engine.choice import for_model
from cnnlab.engine.fastpath import (
    conv_single_channel,
    fast_forward,
    fast_logits,
    make_step,
    run_epoch,
)
from cnnlab.engine.tensors import as_inputs
from cnnlab.models import create_model
from cnnlab.train import runs
from cnnlab.train.loop import TrainConfig, fit, make_optimizer

QUIET = {"progress": False, "log": lambda _msg: None}


def digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, 28, 28) images in [0, 1] with MNIST's flat zero background, and labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 28, 28)
    strokes = torch.rand(n, 1, 14, 14, generator=g)
    x[:, :, 6:20, 6:20] = torch.where(strokes > 0.6, strokes, torch.zeros(()))
    x[: n // 4, :, 10:14, :] = 1.0  # saturated bars: equal values, ties in every pool window
    return x, torch.randint(0, 10, (n,), generator=g)


def plain_losses(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int) -> list:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)  # the default implementation
    model.train()
    out = []
    for i in range(0, len(x), bs):
        loss = F.cross_entropy(model(x[i : i + bs]), y[i : i + bs])
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(loss.item())
    return out


def fast_losses(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    bs: int,
    use_native: bool | None = None,
) -> list:
    """The fast step's losses; every kernel the plan has runs (``rule=False``: the kernels
    must be right where the measured rule leaves a block to PyTorch too)."""
    opt = make_optimizer(model, TrainConfig(lr=1e-3, adam_eps=1e-7))
    choice = for_model(model, native=use_native is not False, rule=False)
    step = make_step(model, opt, choice=choice)
    model.train()
    out = []
    for i in range(0, len(x), bs):
        loss_sum, _ = step(x[i : i + bs], y[i : i + bs], None)
        out.append(loss_sum.item() / len(x[i : i + bs]))
    return out


# Case 1 runs through the C++ kernels where they build (None) and through PyTorch ops (False)
@pytest.mark.parametrize(
    ("case", "use_native"), [("case1", None), ("case1", False), ("case2", None), ("case3", None)]
)
def test_fast_steps_match_the_plain_loop(case: str, use_native: bool | None) -> None:
    """Same batches, same dropout draws: same losses and weights after eight steps."""
    x, y = digits(8 * 16 - 5, seed=1)  # a short last batch, too
    torch.manual_seed(3)
    plain_model = create_model(case)
    fast_model = copy.deepcopy(plain_model)
    torch.manual_seed(11)  # the dropout masks come from torch's global generator
    expected = plain_losses(plain_model, x, y, 16)
    torch.manual_seed(11)
    got = fast_losses(fast_model, x, y, 16, use_native)
    assert len(got) == len(expected) == 8
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)
    for (name, a), b in zip(
        plain_model.state_dict().items(), fast_model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=2e-6, msg=name)


def test_case1_dropout_masks_are_nn_dropouts() -> None:
    """With a different seed for the fast run the losses differ: the masks matter, and match."""
    x, y = digits(32, seed=2)
    torch.manual_seed(0)
    model = create_model("case1")
    other = copy.deepcopy(model)
    torch.manual_seed(5)
    expected = plain_losses(model, x, y, 32)
    torch.manual_seed(6)
    got = fast_losses(other, x, y, 32)
    assert abs(got[0] - expected[0]) > 1e-4


@pytest.mark.parametrize("case", ["case1", "case2", "case3"])
def test_fast_logits_match_the_model(case: str) -> None:
    x, _ = digits(300, seed=4)  # more than one evaluation chunk
    torch.manual_seed(0)
    model = create_model(case).eval()
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(fast_logits(model, x), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(fast_forward(model, x), expected, rtol=1e-5, atol=1e-5)


def test_single_channel_convolution_is_conv2d() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 9, 8, generator=g)
    w, b = torch.randn(5, 1, 3, 2, generator=g), torch.randn(5, generator=g)
    got = conv_single_channel(x, w, b)
    torch.testing.assert_close(got, F.conv2d(x, w, b), rtol=1e-5, atol=1e-6)
    assert got.is_contiguous(memory_format=torch.channels_last)


def test_uint8_images_scale_exactly_like_the_data_module() -> None:
    from cnnlab.data import scale

    raw = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    expected = torch.from_numpy(scale(raw))[..., 0]
    chapter = input_scale(dataset_pixels=True, network_takes_raw_pixels=False)
    assert torch.equal(as_inputs(torch.from_numpy(raw), chapter), expected)
    raw_pixels = input_scale(dataset_pixels=True, network_takes_raw_pixels=True)
    assert torch.equal(as_inputs(torch.from_numpy(raw), raw_pixels), torch.from_numpy(raw).float())
    with pytest.raises(TypeError, match="input scale"):  # nothing guesses
        as_inputs(torch.from_numpy(raw), None)


def test_run_epoch_sums_every_sample_once() -> None:
    x, y = digits(70, seed=5)
    torch.manual_seed(0)
    model = create_model("case3")
    step = make_step(model, make_optimizer(model, TrainConfig()))
    order = torch.randperm(70)
    sums = run_epoch(step, x, y, order, 32)
    assert sums.count == 70
    loss, acc = sums.means()
    assert loss > 0 and 0 <= acc <= 1
    assert 0 <= int(sums.hits) <= 70


@pytest.mark.parametrize("case", ["case1", "case3"])
def test_grad_hook_runs_between_backward_and_adam(case: str) -> None:
    """A hook that zeroes the gradients (as an all-reduce could rewrite them) stops the update."""
    x, y = digits(32, seed=8)
    torch.manual_seed(0)
    model = create_model(case)
    before = copy.deepcopy(model.state_dict())
    seen: list[float] = []

    def hook(grads: list[torch.Tensor]) -> None:
        seen.append(sum(float(g.abs().sum()) for g in grads))
        for g in grads:
            g.zero_()

    step = make_step(model, make_optimizer(model, TrainConfig()), grad_hook=hook)
    step(x, y, None)
    assert len(seen) == 1 and seen[0] > 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_run_epoch_shards_each_global_batch() -> None:
    """A shard sees half of every batch; the loss stays averaged over the global batch."""
    x, y = digits(64, seed=9)
    torch.manual_seed(0)
    model = create_model("case3")
    calls: list[tuple[int, int | None]] = []
    real = make_step(model, make_optimizer(model, TrainConfig()))

    def step(xb: torch.Tensor, yb: torch.Tensor, denom: int | None) -> tuple:
        calls.append((len(xb), denom))
        return real(xb, yb, denom)

    sums = run_epoch(step, x, y, torch.arange(64), 32, shard=lambda b: b[1::2])
    assert calls == [(16, 32), (16, 32)]
    assert sums.count == 64


def test_fused_adam_state_is_torch_adams(tmp_path: Path) -> None:
    """The fast engine's optimiser state round-trips through a plain Adam's state_dict."""
    x, y = digits(64, seed=6)
    torch.manual_seed(0)
    model = create_model("case1")
    opt = make_optimizer(model, TrainConfig())
    step = make_step(model, opt)
    step(x[:32], y[:32], None)
    state = opt.state_dict()
    assert {k for st in state["state"].values() for k in st} == {"step", "exp_avg", "exp_avg_sq"}
    plain = torch.optim.Adam(copy.deepcopy(model).parameters(), lr=1e-3, eps=1e-7)
    plain.load_state_dict(state)
    assert float(plain.state_dict()["state"][0]["step"]) == 1.0


def uint8_splits(splits: Splits) -> Splits:
    def back(a: np.ndarray) -> np.ndarray:
        return np.rint(a * 255).astype(np.uint8)

    return Splits(
        back(splits.x_train),
        splits.y_train,
        back(splits.x_val),
        splits.y_val,
        back(splits.x_test),
        splits.y_test,
    )


def history(run_dir: Path) -> list[dict[str, float]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in runs.read_history(run_dir)]


def test_fit_fast_engine_follows_the_plain_engine(tiny_splits: Splits, tmp_path: Path) -> None:
    """Whole runs: two epochs of Case 1 with both engines, and with uint8 images."""
    out = {}
    for name, engine, splits in (
        ("plain", "plain", tiny_splits),
        ("fast", "fast", tiny_splits),
        ("fast_u8", "fast", uint8_splits(tiny_splits)),
    ):
        out[name] = tmp_path / name
        out[name].mkdir()
        config = TrainConfig(model="case1", epochs=2, batch_size=16, seed=3, engine=engine)
        fit(config, splits, out[name], **QUIET)
    plain, fast = history(out["plain"] / "history.csv"), history(out["fast"] / "history.csv")
    for a, b in zip(plain, fast, strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    # uint8 images are scaled on the fly to the very same floats: identical runs
    assert history(out["fast_u8"] / "history.csv") == fast


def test_config_rejects_an_unknown_engine() -> None:
    with pytest.raises(ValueError, match="engine"):
        TrainConfig(engine="turbo")
    with pytest.raises(ValueError, match="threads"):
        TrainConfig(threads=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("case", ["case1", "case3"])
def test_cuda_fast_steps_match_the_plain_loop(case: str) -> None:
    """On a GPU too; dropout there is nn.Dropout's fused kernel, drawn the same way."""
    x, y = digits(64, seed=7)
    x, y = x.cuda(), y.cuda()
    torch.manual_seed(0)
    plain_model = create_model(case).cuda()
    fast_model = copy.deepcopy(plain_model)
    torch.manual_seed(1)
    expected = plain_losses(plain_model, x, y, 32)
    torch.manual_seed(1)
    got = fast_losses(fast_model, x, y, 32)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)

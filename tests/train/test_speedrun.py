"""The speedrun: its network, schedule, determinism, honesty about data, and its command."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.cli import main
from cnnlab.data import MNIST
from cnnlab.engine import native
from cnnlab.models import get
from cnnlab.train import speedrun
from cnnlab.train.speedrun import (
    SpeedrunConfig,
    accuracy,
    build_model,
    make_forward,
    normalise,
    one_cycle,
    train,
)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        SpeedrunConfig(epochs=0)
    with pytest.raises(ValueError):
        SpeedrunConfig(warmup=1.0)


def test_network_shape_and_size() -> None:
    model = build_model(SpeedrunConfig())
    out = model(torch.zeros(4, 1, 28, 28))
    assert out.shape == (4, 10)
    # conv 5x5 (1->32, with bias) + conv 3x3 (32->64) + BN + dense (576->10)
    assert sum(p.numel() for p in model.parameters()) == 832 + 18432 + 128 + 5770


def test_one_cycle_rises_then_falls() -> None:
    cfg = SpeedrunConfig(lr=0.01, warmup=0.25)
    lrs = [one_cycle(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.001)
    assert max(lrs) == pytest.approx(0.01) and int(np.argmax(lrs)) == 25
    assert one_cycle(100, 100, cfg) == pytest.approx(0.01 / 100)  # where the decay ends
    assert all(a < b for a, b in pairwise(lrs[:26]))
    assert all(a > b for a, b in pairwise(lrs[25:]))


def test_training_learns_and_is_deterministic(tiny_mnist: MNIST) -> None:
    cfg = SpeedrunConfig(epochs=8, batch_size=32, lr=0.01)
    a, seconds = train(tiny_mnist.x_train, tiny_mnist.y_train, cfg, seed=1)
    b, _ = train(tiny_mnist.x_train, tiny_mnist.y_train, cfg, seed=1)
    assert seconds > 0
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    # the synthetic digits are easy: far above the 10% of chance
    assert accuracy(a, tiny_mnist.x_test, tiny_mnist.y_test, cfg) >= 0.6


@pytest.mark.parametrize("fused", [True, False])
def test_both_first_blocks_learn(tiny_mnist: MNIST, fused: bool) -> None:
    """The C++ first block (where it builds) and PyTorch's bfloat16 layers train alike."""
    cfg = SpeedrunConfig(epochs=8, batch_size=32, lr=0.01, fused_first_block=fused)
    model, _ = train(tiny_mnist.x_train, tiny_mnist.y_train, cfg, seed=2)
    assert accuracy(model, tiny_mnist.x_test, tiny_mnist.y_test, cfg) >= 0.6


@pytest.mark.skipif(not native.load(), reason="cnnlab's C++ kernels do not build here")
def test_fused_first_block_is_conv_pool_relu_in_float64() -> None:
    torch.manual_seed(0)
    model = build_model(SpeedrunConfig())
    conv = model.conv1
    images = torch.randint(0, 256, (6, 28, 28), dtype=torch.uint8)
    images[:, :5] = 0  # a flat band: ties in the pooling windows
    forward = make_forward(model, SpeedrunConfig(bf16=False))  # float32 after the block too
    out = forward(images)
    x = normalise(images, torch.float64)
    ref = model.double()
    with torch.no_grad():  # the network normalises inside: it takes raw 0-255 pixels
        expected = ref(images.reshape(6, 1, 28, 28).double())
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)
    # gradients of the block's kernel and bias, through PyTorch's layers in float64
    model.float()
    g = torch.randn(6, 10, dtype=torch.float64)
    (forward(images).double() * g).sum().backward()
    w, b = conv.weight.detach().double().requires_grad_(), conv.bias.detach().double()
    b.requires_grad_()
    ref = copy.deepcopy(model).double()  # the layers' own modules: the plain reference
    rest = ref[list(ref._modules).index("conv2") :]  # after conv1, pool1, relu1
    h = torch.relu(F.max_pool2d(F.conv2d(x, w, b, stride=2, padding=2), 2))
    gw, gb = torch.autograd.grad((rest(h) * g).sum(), (w, b))
    torch.testing.assert_close(conv.weight.grad.double(), gw, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(conv.bias.grad.double(), gb, rtol=1e-4, atol=1e-5)


def test_run_never_trains_on_test_images(
    tiny_mnist: MNIST, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[np.ndarray] = []
    real_train = speedrun.train

    def spy(images: np.ndarray, labels: np.ndarray, config: SpeedrunConfig, seed: int):  # type: ignore[no-untyped-def]
        seen.append(images)
        return real_train(images, labels, config, seed)

    monkeypatch.setattr(speedrun, "train", spy)
    cfg = SpeedrunConfig(epochs=1, batch_size=64)
    summary = speedrun.run(tiny_mnist, cfg, seeds=[0, 1])
    assert len(seen) == 2 and all(s is tiny_mnist.x_train for s in seen)
    assert [r["seed"] for r in summary["seeds"]] == [0, 1]
    accs = [r["test_accuracy"] for r in summary["seeds"]]
    assert summary["mean_test_accuracy"] == pytest.approx(float(np.mean(accs)))
    assert summary["params"] == 25_162


def test_speedrun_command_refuses_an_unwritable_json_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["speedrun", "--json", str(tmp_path / "missing" / "out.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: error: cannot write") and err.count("\n") == 1


@pytest.mark.mnist
def test_speedrun_command_on_real_mnist(mnist_data_dir: Path, tmp_path: Path) -> None:
    """One seed of the real thing: it reaches 99% (the recipe's margin is about 0.15%)."""
    out = tmp_path / "speedrun.json"
    code = main(["speedrun", "--seeds", "1", "--data-dir", str(mnist_data_dir), "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert {"seeds", "mean_test_accuracy", "mean_train_seconds", "params"} <= result.keys()
    (seed,) = result["seeds"]
    assert set(seed) == {"seed", "train_seconds", "test_accuracy"}
    assert seed["train_seconds"] > 0
    assert result["mean_test_accuracy"] >= 0.985


def test_the_trained_model_is_the_registry_network(tiny_mnist: MNIST) -> None:
    """One network, written once: the registry's description; the fused first block and the
    network's own forward pass (it normalises inside) compute the same logits."""
    cfg = SpeedrunConfig(epochs=2, batch_size=32, lr=0.01, bf16=False, fused_first_block=False)
    model, _ = train(tiny_mnist.x_train, tiny_mnist.y_train, cfg, seed=3)
    model.eval()
    assert model.description.to_dict() == get("speedrun").to_dict()
    images = torch.from_numpy(tiny_mnist.x_test[:40])
    with torch.no_grad():
        expected = model(images.float().unsqueeze(1))  # raw pixels: it normalises inside
        plain = make_forward(model, cfg)(images)
        torch.testing.assert_close(plain, expected, rtol=1e-5, atol=1e-5)
        if native.load():
            fused = make_forward(model, replace(cfg, fused_first_block=True))(images)
            torch.testing.assert_close(fused, expected, rtol=1e-4, atol=1e-4)


def test_speedrun_out_writes_run_folders(
    synthetic_data: MNIST, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cnnlab.train.checkpoint import load_model

    out = tmp_path / "sr"
    assert main(["speedrun", "--seeds", "2", "--out", str(out)]) == 0
    for seed in (0, 1):
        net, ckpt = load_model(out / f"seed-{seed}")
        assert ckpt["name"] == "speedrun" and net.description.params == get("speedrun").params
        metrics = json.loads((out / f"seed-{seed}" / "metrics.json").read_text())
        assert 0 <= metrics["test_accuracy"] <= 1 and metrics["seed"] == seed
    capsys.readouterr()
    # the folder is a usable run: evaluate reads its dataset from config.json
    assert main(["evaluate", str(out / "seed-0")]) == 0
    assert main(["speedrun", "--seeds", "1", "--out", str(out / "seed-0")]) == 2


def test_a_set_smaller_than_one_batch_is_one_batch(tiny_mnist: MNIST) -> None:
    """50 images at batch 256: one step an epoch (it used to loop for ever, taking none)."""
    cfg = SpeedrunConfig(epochs=2, batch_size=256, bf16=False, fused_first_block=False)
    torch.manual_seed(3)
    before = [p.detach().clone() for p in speedrun.build_model(cfg).parameters()]
    model, _ = train(tiny_mnist.x_train[:50], tiny_mnist.y_train[:50], cfg, seed=3)
    after = list(model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))

"""The engine is chosen once (cnnlab.engine.choice) and every part of a run obeys it.

The PyTorch path (``engine="plain"`` or ``native=False``) must run no C++ kernel: not in
training, not in the validation and test passes, not when ``cnnlab evaluate`` scores the run
later. Every kernel call goes through ``torch.ops.cnnlab`` (single kernels) or
``torch.classes.cnnlab`` (the whole-step ``Program``); the tests put namespaces there that
raise on any use, so a single call anywhere fails the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from cnnlab import fileio
from cnnlab.analysis.evaluation import evaluate_run
from cnnlab.data import MNIST, Splits
from cnnlab.engine import choice as choice_mod
from cnnlab.engine import fastpath, inference, native
from cnnlab.engine.choice import EngineChoice, kernel_wins, resolve
from cnnlab.engine.plan import plan
from cnnlab.models import create_model, parse_compact
from cnnlab.train.loop import TrainConfig, fit

QUIET = {"progress": False, "log": lambda _msg: None}
needs_kernels = pytest.mark.skipif(not native.load(), reason="the C++ kernels do not build here")


class KernelCalled(AssertionError):
    pass


class Forbidden:
    """``torch.ops.cnnlab`` or ``torch.classes.cnnlab`` for a test: any kernel or class
    looked up raises, naming it."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __getattr__(self, name: str) -> Any:
        raise KernelCalled(f"C++ kernel {self.where}.{name} was called")


def forbid_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways into the kernels raise (their namespaces exist before they are replaced)."""
    torch.ops.cnnlab  # noqa: B018
    monkeypatch.setattr(torch.ops, "cnnlab", Forbidden("torch.ops.cnnlab"))
    torch.classes.cnnlab  # noqa: B018
    monkeypatch.setattr(torch.classes, "cnnlab", Forbidden("torch.classes.cnnlab"))
    native.program.cache_clear()  # a Program built by an earlier test would bypass the class


def forbid_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_namespaces(monkeypatch)

    def no_load() -> bool:
        raise KernelCalled("cnnlab.engine.native.load was called")

    monkeypatch.setattr(native, "load", no_load)


def train_and_score(splits: Splits, mnist: MNIST, out: Path, **engine: Any) -> dict[str, Any]:
    """One epoch of case 1 (validation and test passes included), then ``evaluate_run``."""
    out.mkdir()
    config = TrainConfig(model="case1", epochs=1, batch_size=16, **engine)
    fit(config, splits, out, **QUIET)
    return evaluate_run(out, mnist)


@pytest.mark.parametrize("engine", [{"native": False}, {"engine": "plain"}])
def test_the_pytorch_path_runs_no_kernel(
    engine: dict[str, Any],
    tiny_splits: Splits,
    tiny_mnist: MNIST,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forbid_kernels(monkeypatch)
    metrics = train_and_score(tiny_splits, tiny_mnist, tmp_path / "run", **engine)
    assert 0 <= metrics["test_accuracy"] <= 1
    resolved = fileio.read_json(tmp_path / "run" / "config.json")["resolved"]
    assert not resolved["native_kernels"] and not resolved["engine"]["kernels"]
    assert set(resolved["blocks"].values()) == {"pytorch"}


@needs_kernels
def test_the_forbidden_namespace_catches_the_kernels(
    tiny_splits: Splits, tiny_mnist: MNIST, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check can fail: with the kernels allowed, the same run calls them."""
    choice = resolve(create_model("case1").description, "cpu")
    assert choice.whole is not None  # case 1 runs its whole step in C++
    forbid_namespaces(monkeypatch)
    with pytest.raises(KernelCalled):
        train_and_score(tiny_splits, tiny_mnist, tmp_path / "run", native=True)


@needs_kernels
def test_evaluation_that_ignores_the_choice_is_caught(
    tiny_splits: Splits, tiny_mnist: MNIST, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mutant: evaluation computing its logits without the run's choice (deciding again,
    with the kernels allowed) calls a kernel in a ``native=False`` run, and the test sees it."""
    real = fastpath.fast_logits

    def ignores_choice(model: Any, x: torch.Tensor, scale: Any = None, choice: Any = None) -> Any:
        return real(model, x, scale, choice_mod.for_model(model))

    monkeypatch.setattr(inference, "fast_logits", ignores_choice)
    forbid_namespaces(monkeypatch)
    with pytest.raises(KernelCalled, match=r"torch\.classes\.cnnlab\.Program"):
        train_and_score(tiny_splits, tiny_mnist, tmp_path / "run", native=False)


def test_every_setting_that_forbids_kernels_gives_pytorch_only() -> None:
    desc = create_model("case1").description
    for got in (
        resolve(desc, "cpu", native=False),
        resolve(desc, "cpu", engine="plain"),
        resolve(desc, "cuda", available=True),  # a GPU: no C++ kernel (no device needed)
        resolve(desc, "cpu", available=False),  # no compiler
    ):
        assert not got.kernels and got.whole is None and not got.blocks and not got.adam
        assert set(got.layers.values()) == {"pytorch"} and got.reasons
    assert not resolve(desc, "cpu", engine="plain").fast


def test_the_chapter_cases_keep_their_whole_step_in_the_kernels() -> None:
    for case in ("case1", "case2", "case3"):
        got = resolve(create_model(case).description, "cpu", available=True)
        assert got.whole is not None and got.adam
        assert set(got.layers.values()) == {"cnnlab"}
        assert isinstance(got, EngineChoice) and got.to_dict()["whole_step_in_kernels"]


CIFAR = (
    "Input(32,32,3) Conv2D(32,3,same,relu) Conv2D(32,3,relu) MaxPooling2D(2) Dropout(0.25) "
    "Conv2D(64,3,same,relu) Conv2D(64,3,relu) MaxPooling2D(2) Dropout(0.25) Flatten "
    "Dense(512,relu) Dropout(0.5) Dense(10,softmax)"
)


def vgg_bn(size: int) -> str:
    blocks = " ".join(
        f"Conv2D({f},3,same) BatchNormalization Activation(relu) MaxPooling2D(2)"
        for f in (32, 64, 128)
    )
    return f"Input({size},{size},3) {blocks} GlobalAveragePooling2D Dense(10,softmax)"


def test_a_kernel_slower_than_pytorch_is_not_chosen() -> None:
    """The measured thresholds: conv_pool_relu above 32x32 goes to PyTorch, and with it the
    whole step; the CIFAR-10 CNN (32x32) keeps its whole step in C++, and so does the VGG
    network at 64x64 (its fused batch norm is chosen on every map size)."""
    cifar = resolve(parse_compact(CIFAR, "cifar"), "cpu", available=True)
    assert cifar.whole is not None and set(cifar.layers.values()) == {"cnnlab"}
    big = parse_compact(
        "Input(64,64,3) Conv2D(16,3,relu) MaxPooling2D(2) Conv2D(32,3,same) "
        "BatchNormalization ReLU MaxPooling2D(2) GlobalAveragePooling2D Dense(10,softmax)",
        "big",
    )
    assert plan(big).native  # every block has a kernel, but not every kernel is faster
    got = resolve(big, "cpu", available=True)
    assert got.whole is None and set(got.layers.values()) == {"pytorch"}
    assert any("conv_pool_relu" in why and "PyTorch" in why for why in got.reasons)
    assert resolve(big, "cpu", available=True, rule=False).whole is not None
    for size in (16, 64):
        vgg = resolve(parse_compact(vgg_bn(size), "vgg"), "cpu", available=True)
        assert vgg.whole is not None and set(vgg.layers.values()) == {"cnnlab"}


@pytest.mark.parametrize(("size", "channels", "whole", "mixed"), [
    (32, 16, True, False),   # 32x32 input: whole step yes; 32*32*16 > 8192 values
    (16, 32, True, True),    # 16*16*32 = 8192: both
    (64, 16, False, False),  # 64x64: neither
])  # fmt: skip
def test_conv_pool_relu_thresholds(size: int, channels: int, whole: bool, mixed: bool) -> None:
    desc = parse_compact(
        f"Input({size},{size},{channels}) Conv2D({channels},1) "
        f"Conv2D({channels},3,relu,name=b) MaxPooling2D(2) GlobalAveragePooling2D Dense(10)",
        "x",
    )
    block = next(b for b in plan(desc).blocks if b.kind == "conv_pool_relu")
    assert kernel_wins(desc, block)[0] == whole
    assert kernel_wins(desc, block, whole=False)[0] == mixed
    got = resolve(desc, "cpu", available=True)
    assert (got.whole is not None) == whole
    assert bool(got.blocks) == mixed
    assert (got.layers["b"] == "cnnlab") == (whole or mixed)


@pytest.mark.parametrize(("inputs", "chosen"), [(2048, True), (4096, False), (16384, True)])
def test_dense_inside_its_measured_window_goes_to_pytorch(inputs: int, chosen: bool) -> None:
    desc = parse_compact(f"Input(8,8,{inputs // 64}) Flatten Dense(512,relu,name=d) Dense(10)", "d")
    got = resolve(desc, "cpu", available=True)
    assert (got.whole is not None) == chosen
    assert (got.layers["d"] == "cnnlab") == chosen

"""cnnlab's C++ kernels against independent references.

- ``dropout_mask`` against PyTorch's own dropout draws: the same bits, and the default
  generator left in the same state;
- ``case1_gradients`` and ``case1_logits`` against autograd on the Case 1 network in
  float64 (the same weights, the same dropout masks), on random batches of several sizes,
  float32 and uint8, with MNIST-like ties in the pooling windows;
- building: the library lands atomically, a missing compiler gives one warning and the
  PyTorch version of the step.

Skipped only where there is no C++ compiler; where there is one, the kernels must build.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cnnlab.engine import native
from cnnlab.engine.adam import FusedAdam
from cnnlab.engine.fastcase1 import Case1Step, case1_weights
from cnnlab.engine.tensors import DROPOUT_KEEP
from cnnlab.models import create_model
from cnnlab.train.loop import TrainConfig, make_optimizer

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")


@pytest.fixture(scope="module", autouse=True)
def kernels() -> None:
    assert native.load(), "the C++ kernels must build where there is a compiler"


def torch_dropout_mask(shape: tuple[int, ...]) -> torch.Tensor:
    """The scaled mask ``nn.Dropout(0.25)`` multiplies an input of ``shape`` by."""
    return F.dropout(torch.ones(shape), 1 - DROPOUT_KEEP, training=True)


@pytest.mark.parametrize("seed", [0, 1, 42, 2**32 + 7])
def test_dropout_masks_are_pytorchs_bit_for_bit(seed: int) -> None:
    # shapes that cross MT19937's 624-word blocks at different offsets, an empty one
    shapes = [(32, 1600), (32, 32), (7, 3, 5), (1,), (311,), (0, 4), (13, 1600), (2, 2)]
    torch.manual_seed(seed)
    expected = [torch_dropout_mask(s) for s in shapes]
    after_expected = torch.rand(5)
    torch.manual_seed(seed)
    got = [torch.ops.cnnlab.dropout_mask(list(s), DROPOUT_KEEP) for s in shapes]
    after_got = torch.rand(5)
    for s, a, b in zip(shapes, got, expected, strict=True):
        assert a.shape == s and a.dtype == torch.float32
        assert torch.equal(a, b), s
    assert torch.equal(after_got, after_expected)  # the generator is left where torch leaves it
    assert native.exact_dropout()  # so the step draws its masks with the kernel


def test_dropout_masks_continue_a_used_generator() -> None:
    torch.manual_seed(3)
    torch.rand(1000)  # part-way through a block
    state = torch.get_rng_state()
    expected = torch_dropout_mask((40, 50))
    torch.set_rng_state(state)
    assert torch.equal(torch.ops.cnnlab.dropout_mask([40, 50], DROPOUT_KEEP), expected)
    assert 0.7 < (expected > 0).float().mean() < 0.8


def digit_batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (n, 28, 28) images with MNIST's flat zero background and saturated strokes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 28, 28, dtype=torch.uint8)
    strokes = torch.randint(0, 256, (n, 16, 16), generator=g, dtype=torch.uint8)
    x[:, 6:22, 6:22] = torch.where(strokes > 150, strokes, torch.zeros((), dtype=torch.uint8))
    x[: (n + 1) // 2, 12:15, :] = 255  # equal values: ties in every pooling window
    return x, torch.randint(0, 10, (n,), generator=g)


def reference(
    model: torch.nn.Sequential,
    x: torch.Tensor,
    y: torch.Tensor,
    m1: torch.Tensor,
    m2: torch.Tensor,
    denom: int,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Loss sum, logits and d(loss sum / denom)/d(weights) by autograd in float64."""
    ref = copy.deepcopy(model).double()
    h = x.double().div(255).unsqueeze(1) if x.dtype == torch.uint8 else x.double().unsqueeze(1)
    for name in ("conv1", "pool1", "conv2", "pool2", "flatten"):  # ReLUs inside conv1/2
        h = getattr(ref, name)(h)
    h = ref.dense1(h * m1.double()) * m2.double()  # Dense(32, relu)
    logits = ref.dense2(h)
    loss = F.cross_entropy(logits, y, reduction="sum")
    params = case1_weights(ref)
    assert params is not None
    grads = torch.autograd.grad(loss / denom, params)
    return loss.detach(), logits.detach(), list(grads)


@pytest.mark.parametrize("n", [1, 3, 32, 77])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_case1_gradients_match_float64_autograd(n: int, dtype: torch.dtype) -> None:
    torch.manual_seed(n)
    model = create_model("case1")
    weights = [p.detach() for p in case1_weights(model) or []]
    x, y = digit_batch(n, seed=n)
    if dtype == torch.float32:
        x = x.float() / 255
    m1 = torch_dropout_mask((n, 1600))
    m2 = torch_dropout_mask((n, 32))
    denom = n + 5  # a data-parallel shard averages over the global batch
    grads = [torch.full_like(w, float("nan")) for w in weights]  # every element is written
    loss, hits = torch.ops.cnnlab.case1_gradients(x, y, weights, grads, m1, m2, denom)
    ref_loss, ref_logits, ref_grads = reference(model, x, y, m1, m2, denom)
    assert loss.dtype == torch.float64 and hits.dtype == torch.int64
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    assert hits.item() == (ref_logits.argmax(1) == y).sum().item()
    names = ("w1", "b1", "w2", "b2", "w3", "b3", "w4", "b4")
    for name, got, want in zip(names, grads, ref_grads, strict=True):
        assert got.shape == want.shape and got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("n", [1, 5, 128])
def test_case1_logits_match_the_model_in_float64(n: int) -> None:
    torch.manual_seed(100 + n)
    model = create_model("case1").eval()
    weights = [p.detach() for p in case1_weights(model) or []]
    x, _ = digit_batch(n, seed=n)
    got = torch.ops.cnnlab.case1_logits(x, weights)
    with torch.no_grad():
        want = copy.deepcopy(model).double()(x.double().div(255).unsqueeze(1))
    assert got.shape == (n, 10) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_native", [True, False])
def test_fused_adam_is_torch_adam(use_native: bool) -> None:
    """cnnlab's C++ Adam and ``torch._fused_adam_`` against ``torch.optim.Adam``'s default."""
    torch.manual_seed(0)
    model = create_model("case1")
    ref = copy.deepcopy(model)
    fast_opt = make_optimizer(model, TrainConfig())
    adam = FusedAdam(fast_opt, list(model.parameters()), use_native=use_native)
    assert adam.native == use_native
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-3, eps=1e-7, foreach=False)
    g = torch.Generator().manual_seed(1)
    for i in range(30):
        # gradients of changing scale, some exactly zero (Adam's state still moves)
        grads = [torch.randn(p.shape, generator=g) * 10.0 ** (-i % 4) for p in ref.parameters()]
        grads[1].zero_()
        for p, gr in zip(ref.parameters(), grads, strict=True):
            p.grad = gr.clone()
        ref_opt.step()
        adam.step([gr.clone() for gr in grads])
    for a, b in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
        sa, sb = fast_opt.state[a], ref_opt.state[b]
        assert float(sa["step"]) == float(sb["step"]) == 30.0
        torch.testing.assert_close(sa["exp_avg"], sb["exp_avg"], rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(sa["exp_avg_sq"], sb["exp_avg_sq"], rtol=1e-5, atol=1e-12)


def test_kernels_reject_bad_inputs() -> None:
    weights = [p.detach() for p in case1_weights(create_model("case1")) or []]
    with pytest.raises(RuntimeError, match=r"\(N, 28, 28\)"):
        torch.ops.cnnlab.case1_logits(torch.zeros(2, 1, 28, 28), weights)
    with pytest.raises(RuntimeError, match="float32 or uint8"):
        torch.ops.cnnlab.case1_logits(torch.zeros(2, 28, 28, dtype=torch.float64), weights)
    with pytest.raises(RuntimeError, match="8 weight tensors"):
        torch.ops.cnnlab.case1_logits(torch.zeros(2, 28, 28), weights[:7])


def test_the_step_uses_the_kernels_by_default_on_a_cpu() -> None:
    model = create_model("case1")
    opt = make_optimizer(model, TrainConfig())
    step = Case1Step(model, opt)
    assert step.native and step.native_masks and step.adam.native
    torch_only = Case1Step(model, opt, use_native=False)  # what TrainConfig(native=False) runs
    assert not (torch_only.native or torch_only.native_masks or torch_only.adam.native)


def test_build_is_atomic_and_a_missing_compiler_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "tiny.cpp"
    source.write_text('extern "C" int cnnlab_answer() { return 42; }\n')
    target = tmp_path / "lib" / "tiny.so"
    native.build(target, [source])
    assert target.stat().st_size > 0
    assert list(target.parent.iterdir()) == [target]  # no temporary left behind
    source.write_text("this is not C++\n")
    with pytest.raises(native.NativeBuildError, match="failed"):
        native.build(target, [source])
    assert list(target.parent.iterdir()) == [target]  # the good library is untouched

    monkeypatch.setenv("CXX", "no-such-compiler-here")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(native.NativeBuildError, match=r"no C\+\+ compiler"):
        native.build(native.library_path())
    native.load.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="PyTorch version"):
            assert native.load() is False
        model = create_model("case1")
        assert not Case1Step(model, make_optimizer(model, TrainConfig())).native
        with pytest.raises(ValueError, match="do not run here"):
            Case1Step(model, make_optimizer(model, TrainConfig()), use_native=True)
    finally:
        native.load.cache_clear()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.so"))

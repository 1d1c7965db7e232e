"""cnnlab's C++ kernels against independent references.

- ``dropout_mask`` against PyTorch's own dropout draws: the same bits, and the default
  generator left in the same state;
- the block kernels against float64 autograd: ``tests/engine/test_blocks.py``;
- the step the fast engine picks: every chapter case through the kernels on a CPU;
- building: the library lands atomically, a missing compiler gives one warning and the
  PyTorch version of the step; every source compiles with the build's warnings on and none
  given (``-Werror``), and the check catches a warning where there is one.

Skipped only where there is no C++ compiler; where there is one, the kernels must build.
"""

from __future__ import annotations

import copy
import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cnnlab.engine import native
from cnnlab.engine.adam import FusedAdam
from cnnlab.engine.blocks import NativeStep
from cnnlab.engine.fastpath import AutogradStep, make_step
from cnnlab.engine.plan import plan
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
    model = create_model("case1")
    weights = [p.detach() for p in model.parameters()]
    program = native.program(plan(model.description).calls())
    with pytest.raises(RuntimeError, match=r"\(N, H, W, C\)"):
        program.logits(torch.zeros(2, 28, 28), weights, [])
    with pytest.raises(RuntimeError, match="float32"):
        program.logits(torch.zeros(2, 28, 28, 1, dtype=torch.float64), weights, [])
    with pytest.raises(RuntimeError, match="too few weight"):
        program.logits(torch.zeros(2, 28, 28, 1), weights[:7], [])
    with pytest.raises(RuntimeError, match="does not fit"):
        program.logits(torch.zeros(2, 20, 20, 1), weights, [])


@pytest.mark.parametrize("case", ["case1", "case2", "case3"])
def test_the_step_uses_the_kernels_by_default_on_a_cpu(case: str) -> None:
    model = create_model(case)
    opt = make_optimizer(model, TrainConfig())
    step = make_step(model, opt)
    assert isinstance(step, NativeStep) and step.adam.native
    assert step.native_masks or case != "case1"
    torch_only = make_step(model, opt, use_native=False)  # what TrainConfig(native=False) runs
    assert isinstance(torch_only, AutogradStep) and not torch_only.adam.native


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

    # several sources, compiled side by side and linked into one library
    sources = [tmp_path / f"part{i}.cpp" for i in range(3)]
    for i, src in enumerate(sources):
        src.write_text(f'extern "C" int cnnlab_part{i}() {{ return {i + 10}; }}\n')
    native.build(target, sources)
    lib = ctypes.CDLL(str(target))
    assert [getattr(lib, f"cnnlab_part{i}")() for i in range(3)] == [10, 11, 12]
    assert list(target.parent.iterdir()) == [target]  # no objects left behind
    sources[1].write_text("int broken(\n")
    before = target.read_bytes()
    with pytest.raises(native.NativeBuildError, match="failed"):
        native.build(target, sources)
    assert list(target.parent.iterdir()) == [target] and target.read_bytes() == before

    monkeypatch.setenv("CXX", "no-such-compiler-here")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(native.NativeBuildError, match=r"no C\+\+ compiler"):
        native.build(native.library_path())
    native.load.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="PyTorch version"):
            assert native.load() is False
        model = create_model("case1")
        assert isinstance(make_step(model, make_optimizer(model, TrainConfig())), AutogradStep)
        with pytest.raises(ValueError, match="do not run here"):
            make_step(model, make_optimizer(model, TrainConfig()), use_native=True)
    finally:
        native.load.cache_clear()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.so"))


def warnings_of(source: Path) -> subprocess.CompletedProcess[str]:
    command = native.warnings_command(source)
    return subprocess.run(command, capture_output=True, text=True, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("source", native.SOURCES, ids=lambda p: p.name)
def test_the_kernels_compile_without_warnings(source: Path) -> None:
    """cnnlab's own sources and headers, with -Wall -Wextra -Wshadow -Wconversion as errors
    (torch's headers are system headers: their warnings are not ours)."""
    assert {"-Wall", "-Wextra", "-Wshadow"} <= set(native.warnings_command(source))
    done = warnings_of(source)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr[-3000:]


def test_the_warnings_check_catches_a_warning(tmp_path: Path) -> None:
    """The check above fails on a source with a shadowed name, and passes without it."""
    source = tmp_path / "shadow.cpp"
    source.write_text("int twice(int x) {\n  { int x = 2; return x; }\n}\n")
    done = warnings_of(source)
    assert done.returncode != 0 and "shadows a parameter" in done.stderr, done.stderr
    source.write_text("int twice(int x) {\n  { int y = 2; return x * y; }\n}\n")
    assert warnings_of(source).returncode == 0

"""The typed interface between plan.py and the kernels (``csrc/program.h``, ``program.cpp``).

- every call a plan makes is a method of the kernels' ``Program``, its arguments named and
  typed as the method's schema says, and the program holds the blocks asked for; its
  step shows in the profiler under the kernels' name;
- a call with a mistyped, missing, unknown or out-of-range argument is refused;
- mutation checks: a deliberately mis-set field (a stride, a padding, epsilon, momentum,
  an offset, an activation, the pooling mode, the ReLU's place) fails the comparison with
  float64 autograd that the right program passes.
"""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch

from cnnlab.engine import native
from cnnlab.engine.blocks import NativeStep, kernel_inputs
from cnnlab.engine.plan import ACTIVATIONS, Arg, Call, call, plan
from cnnlab.models import ModelDescription
from cnnlab.models.torch_module import build_module
from cnnlab.train.loop import TrainConfig, make_optimizer

from .test_blocks import CHAPTER, NETS, as_double, images, reference
from .test_native_graphs import GRAPHS

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")

PYTHON_TYPES = {"int": int, "float": float, "bool": bool, "str": str}
PADS: dict[str, Arg] = {"pad_top": 0, "pad_bottom": 0, "pad_left": 0, "pad_right": 0}
CONV = {"stride_h": 1, "stride_w": 1, "dilation_h": 1, "dilation_w": 1, "activation": "relu"}
CONV |= PADS | {"bias": True}
POOL = {"mode": "max", "size_h": 2, "size_w": 2, "stride_h": 2, "stride_w": 2}
POOL |= PADS | {"relu_after": False}


@pytest.fixture(scope="module", autouse=True)
def kernels() -> None:
    assert native.load(), "the C++ kernels must build where there is a compiler"


@pytest.mark.parametrize("name", [*NETS, *GRAPHS])
def test_every_call_matches_its_method_schema(name: str) -> None:
    calls = plan({**NETS, **GRAPHS}[name]).calls()
    program = native.program(calls)
    assert program.kinds() == [c.kind for c in calls]
    for c in calls:  # (the Program's other methods, logits and gradients, run it)
        schema = program._get_method(c.kind).schema
        declared = {a.name: str(a.type) for a in schema.arguments[1:]}  # after self
        assert list(declared) == [arg for arg, _ in c.args], (c, schema)
        for arg, value in c.args:
            # exact types: a bool is no int here, an int no float
            assert type(value) is PYTHON_TYPES[declared[arg]], (c, arg, value)


def test_the_activations_are_named_alike_on_both_sides() -> None:
    program = native.program(tuple(call("activation", function=f) for f in sorted(ACTIVATIONS)))
    assert program.kinds() == ["activation"] * len(ACTIVATIONS) == ["activation"] * 5


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (call("conv_pool_relu", pooled_h=1.5, pooled_w=2), "type 'int'"),
        (call("conv_pool_relu", pooled_h=3), "missing value for argument 'pooled_w'"),
        (call("dense", activation="relu", bias=True), r"dense\(\) expected at most 2 argument"),
        (call("dense", activation="softplus"), "unknown activation 'softplus'"),
        (call("batch_norm", scale=True, center=True, epsilon="0.001", momentum=0.99), "float"),
        (call("batch_norm", scale=True, center=True, epsilon=0.0, momentum=0.99), "epsilon"),
        (call("pad", top=1, bottom=-1, left=0, right=0), "negative"),
        (call("conv", **(CONV | {"stride_h": 0})), "at least 1"),
        (call("pool", **(POOL | {"mode": "median"})), "'max' or 'average'"),
        (call("store", slot=-1), r"slot must be in \[0, 4096\)"),
        (call("add", slot=4096), r"slot must be in \[0, 4096\)"),
        (call("load"), "missing value for argument 'slot'"),
    ],
)
def test_bad_calls_are_refused(bad: Call, message: str) -> None:
    with pytest.raises(RuntimeError, match=message):
        native.program((bad,))


def test_a_slot_read_before_it_is_kept_is_refused() -> None:
    program = native.program((call("load", slot=0), call("global_average")))
    with pytest.raises(RuntimeError, match="slot 0 is read before a map is kept in it"):
        program.logits(torch.zeros(2, 3, 3, 4), [], [])


def test_the_step_is_named_in_the_profiler() -> None:
    """A method call, not an op: it still shows as cnnlab::net_gradients and net_logits in
    torch.profiler's table (benchmarks/profile_step.py reads the kernels' time there)."""
    desc = NETS["case2"]
    model = build_module(desc)
    program = native.program(plan(desc).calls())
    weights = [q.detach() for q in model.parameters()]
    grads = [torch.zeros_like(q) for q in weights]
    x, y = torch.rand(2, 28, 28, 1), torch.tensor([1, 7])
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        program.gradients(x, y, weights, grads, [], [], 2)
        program.logits(x, weights, [])
    names = {ev.key for ev in prof.key_averages()}
    assert {"cnnlab::net_gradients", "cnnlab::net_logits"} <= names, names


def check_against_autograd(desc: ModelDescription, calls: tuple[Call, ...], n: int = 7) -> None:
    """Loss, gradients, moving statistics and logits of ``calls`` on ``desc``'s module against
    float64 autograd (as test_blocks' net test); raises AssertionError where they differ."""
    torch.manual_seed(n)
    model = build_module(desc)
    x = images(n, desc.input_shape, seed=n, uint8=False)
    y = torch.randint(0, desc.info[-1].out_shape[-1], (n,))
    step = NativeStep(model, make_optimizer(model, TrainConfig()), plan(desc))
    torch.manual_seed(100 + n)
    masks = step.masks(n)
    torch.manual_seed(100 + n)
    cf = [torch.nn.functional.dropout(torch.ones(n, *s), r, training=True) for s, r in step.drops]
    weights = [q.detach() for q in model.parameters()]
    grads = [torch.full_like(q, float("nan")) for q in weights]
    state = [s.detach() for s in model.buffers()]
    ref_loss, _, ref_grads, ref = reference(model, x, y, cf, n)
    program = native.program(calls)
    inputs = kernel_inputs(x, CHAPTER)
    loss, _ = program.gradients(inputs, y, weights, grads, masks, state, n)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)
    for got, want in zip(model.buffers(), ref.buffers(), strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    logits = program.logits(inputs, weights, state)
    with torch.no_grad():
        want = ref.eval()(as_double(x))  # (ref's moving statistics: the ones just updated)
    torch.testing.assert_close(logits.double(), want, rtol=1e-5, atol=1e-5)


def mis_set(calls: tuple[Call, ...], kind: str, arg: str, value: Arg) -> tuple[Call, ...]:
    """``calls`` with ``arg`` of the first ``kind`` call set to ``value`` (it must differ)."""
    i = next(j for j, c in enumerate(calls) if c.kind == kind)
    assert calls[i][arg] != value
    args = tuple((k, value if k == arg else v) for k, v in calls[i].args)
    return (*calls[:i], replace(calls[i], args=args), *calls[i + 1 :])


# (network, kind, argument, the wrong value)
MIS_SET = [
    ("general_mix", "conv", "stride_h", 1),
    ("general_mix", "conv", "pad_top", 2),  # (1, 2) -> (2, 2): one row more, shifted
    ("same_pool", "pad", "bottom", 0),
    ("general_mix", "batch_norm", "epsilon", 1e-2),
    ("general_mix", "batch_norm", "momentum", 0.9),
    ("rescaled", "rescale", "offset", -0.25),
    ("rescaled_strided", "conv", "activation", "relu"),
    ("bn_dilated", "pool", "mode", "average"),
    ("general_mix", "pool", "relu_after", False),
    ("case1", "conv_pool_relu", "pooled_h", 11),
]


@pytest.mark.parametrize(("name", "kind", "arg", "value"), MIS_SET)
def test_a_mis_set_field_fails_the_autograd_comparison(
    name: str, kind: str, arg: str, value: Arg
) -> None:
    desc = NETS[name]
    calls = plan(desc).calls()
    check_against_autograd(desc, calls)  # the right program passes ...
    wrong = mis_set(calls, kind, arg, value)
    # ... and the wrong one differs, or no longer fits the network's shapes
    with pytest.raises((AssertionError, RuntimeError)):
        check_against_autograd(desc, wrong)

"""The fast engine's block kernels against float64 autograd, on shapes of every kind.

- ``conv_pool_relu`` (Conv2D valid + bias + ReLU + 2x2 max pooling, ReLU after the pooling):
  output and gradients against ``F.conv2d``/``relu``/``max_pool2d`` in float64, for one and
  several input channels, channel counts that are not multiples of 16, odd map sizes,
  3x3/5x5 (compiled in) and other kernel sizes (read at run time), a cropped pooled size,
  and ties in the pooling windows (flat backgrounds, saturated bars);
- ``Program.gradients``/``logits`` (``csrc/net.cpp``: a whole description's step) against
  autograd on the network's own module in float64, for the chapter's cases and
  descriptions outside them: the general blocks too (strided, dilated, same-padded and
  bias-free convolutions, every activation, max and average pooling of other sizes,
  BatchNormalization with its moving statistics, global max pooling);
- the plan (blocks matched by kind, the crop), nn.Dropout's masks, the step against the
  plain loop on the same batches, and mutation checks: deliberately broken kernels fail.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data.scaling import input_scale
from cnnlab.engine import native
from cnnlab.engine.blocks import NativeStep, kernel_inputs, runs_natively
from cnnlab.engine.choice import for_model
from cnnlab.engine.fastpath import fast_logits, make_step
from cnnlab.engine.plan import call, plan, where
from cnnlab.models import ModelDescription, create_model, parse_compact
from cnnlab.models.torch_module import build_module
from cnnlab.train.loop import TrainConfig, make_optimizer

from .test_fastpath import fast_losses, plain_losses

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")


@pytest.fixture(scope="module", autouse=True)
def kernels() -> None:
    assert native.load(), "the C++ kernels must build where there is a compiler"


def described(text: str, kernels: dict[int, list[int]] | None = None) -> ModelDescription:
    """A description from its compact line, with non-square kernel sizes by layer index."""
    d = parse_compact(text).to_dict()
    for i, size in (kernels or {}).items():
        d["layers"][i]["kernel_size"] = size
    return ModelDescription.from_dict(d)


# outside the chapter: odd sizes, 5x5 and run-time kernel sizes, channel counts of 3 to 33,
# a dropout on a map, a linear output, other class counts
ZOO = {
    "odd_5x5": described(
        "Input(23,19,1) Conv2D(7,5,relu) MaxPooling2D(2) Conv2D(19,3,relu) MaxPooling2D(2) "
        "Flatten Dropout(0.4) Dense(13,relu) Dense(6,softmax)"
    ),
    "rgb_mixed_kernels": described(
        "Input(17,21,3) Conv2D(20,3,relu) MaxPooling2D(2) Conv2D(33,4,relu) MaxPooling2D(2) "
        "GlobalAveragePooling2D Dense(5)",
        {0: [2, 3]},
    ),
    "map_dropout": described(
        "Input(14,15,1) Conv2D(17,3,relu) MaxPooling2D(2) Dropout(0.3) Flatten Dense(4,softmax)"
    ),
    # 'same' convolutions before 2x2 max pooling, an even kernel (padding 1 before, 2 after),
    # zero padding, an odd map whose last pooled row the next block does not read
    "same_pool": described(
        "Input(14,13,1) Conv2D(10,3,relu,padding=same) MaxPooling2D(2) "
        "Conv2D(18,4,relu,padding=same) MaxPooling2D(2) ZeroPadding2D(1) Conv2D(7,3,relu) "
        "MaxPooling2D(2) Flatten Dense(5,softmax)"
    ),
    # Rescaling first (as Keras tutorials start), then one-channel convolutions: no input
    # gradient is needed below them, so they are kernels as the first layer is
    "rescaled": described(
        "Input(16,15,1) Rescaling(2.0,-0.5) Conv2D(6,3,relu) MaxPooling2D(2) "
        "Conv2D(7,3,sigmoid,padding=same) GlobalAveragePooling2D Dense(4,softmax)"
    ),
    "rescaled_strided": described(
        "Input(13,12,1) Rescaling(0.5) Conv2D(5,3,elu,strides=2) Flatten Dense(3,softmax)"
    ),
    # 1-D networks as one-row images: fcn1d's blocks on an odd length (without the biases
    # before BatchNormalization, whose gradients are 0 up to rounding and which Adam then
    # moves by up to lr either way: tests/engine/test_fast1d.py checks fcn1d itself) ...
    "series_fcn": described(
        "Input(37,3) Conv1D(10,8,padding=same,use_bias=False) BatchNormalization ReLU "
        "Conv1D(12,5,padding=same,use_bias=False) BatchNormalization ReLU "
        "GlobalAveragePooling1D Dense(4,softmax)"
    ),
    # ... strides, dilation, same-padded max and average pooling, zero padding, no bias
    "series_mix": described(
        "Input(41,2) Conv1D(6,5,strides=2,padding=same,activation=tanh) "
        "MaxPooling1D(3,strides=2,padding=same) Conv1D(9,3,relu,dilation_rate=2) "
        "MaxPooling1D(2) ZeroPadding1D(1) Conv1D(5,4,elu,use_bias=False) "
        "AveragePooling1D(2,padding=same) Flatten Dropout(0.3) Dense(7,relu) Dense(3,softmax)"
    ),
    # ... and one channel, dropout on a map, global max pooling
    "series_one_channel": described(
        "Input(20,1) Conv1D(4,3,relu) MaxPooling1D(2) Dropout(0.2) Conv1D(5,3,relu) "
        "GlobalMaxPooling1D Dense(2,softmax)"
    ),
    # the general blocks (csrc/layers.cpp): keras-zoo's conv2d_same_strides ...
    "same_strides": described(
        "Input(28,28,1) Conv2D(8,5,relu,padding=same,strides=2) Conv2D(16,3,tanh,padding=same) "
        "AveragePooling2D(2) Flatten Dense(10,softmax)"
    ),
    # ... and conv2d_bn_dilated, on odd sizes
    "bn_dilated": described(
        "Input(19,17,1) Conv2D(8,3,relu,dilation_rate=2) BatchNormalization "
        "MaxPooling2D(3,strides=2,padding=same) Conv2D(12,3) Activation(relu) "
        "GlobalMaxPooling2D Dropout(0.3) Dense(10,softmax)"
    ),
    # asymmetric same padding (even kernels), no bias, BN without scale or centre, a ReLU
    # convolution's ReLU after its max pooling, elu/sigmoid/tanh, same-padded averages
    "general_mix": described(
        "Input(21,18,3) Conv2D(6,4,relu,padding=same,strides=2,use_bias=False) "
        "BatchNormalization(center=False) Conv2D(9,3,relu,padding=same) MaxPooling2D(3,strides=2) "
        "Conv2D(17,3,elu,padding=same,dilation_rate=2) BatchNormalization(scale=False) "
        "AveragePooling2D(3,strides=2,padding=same) Activation(sigmoid) ReLU Flatten "
        "Dense(9,tanh) Dense(4,softmax)",
        {4: [2, 3]},
    ),
    # BatchNormalization with its ReLU and max pooling fused (csrc/norm.cpp; no biases before
    # it, as series_fcn): odd maps whose last row or column no window reads, 3x3 and 1x2
    # windows, 17 channels, a ReLU alone; overlapping windows are a pool block of their own
    "bn_relu_pool": described(
        "Input(15,13,3) Conv2D(6,3,padding=same,use_bias=False) BatchNormalization ReLU "
        "MaxPooling2D(2) Conv2D(17,3,padding=same,use_bias=False) "
        "BatchNormalization(center=False) Activation(relu) MaxPooling2D(3) "
        "Conv2D(5,1,use_bias=False) BatchNormalization(scale=False) ReLU MaxPooling2D(1x2) "
        "Flatten Dense(4,softmax)"
    ),
    "series_bn_pool": described(
        "Input(29,4) Conv1D(9,3,padding=same,use_bias=False) BatchNormalization ReLU "
        "MaxPooling1D(2) Conv1D(6,3,use_bias=False) BatchNormalization ReLU "
        "MaxPooling1D(2,strides=1) GlobalAveragePooling1D Dense(3,softmax)"
    ),
}
NETS = {name: create_model(name).description for name in ("case1", "case2", "case3")} | ZOO


def images(n: int, shape: tuple[int, ...], seed: int, uint8: bool) -> torch.Tensor:
    """(n, C, H, W) images with a flat zero background and saturated bars (pooling ties);
    for a (L, C) shape, (n, C, L) series: Gaussian, with a flat zero start (ties again).
    (Series that are constant over their whole length make BatchNormalization's steps
    sensitive to rounding: the plain loop and PyTorch's own fused kernel differ by 1e-4.)"""
    if len(shape) == 2:
        length, c = shape
        x = torch.randn(n, c, length, generator=torch.Generator().manual_seed(seed))
        x[:, :, : length // 4] = 0.0
        return x
    h, w, c = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g)
    x = torch.where(x > 0.55, x, torch.zeros(()))
    x[:, :, : h // 4, :] = 0.0  # flat background
    x[: (n + 1) // 2, :, h // 2 : h // 2 + 3, :] = 1.0  # saturated bars
    return (x * 255).round().to(torch.uint8) if uint8 else x


CHAPTER = input_scale(dataset_pixels=True, network_takes_raw_pixels=False)


def as_double(x: torch.Tensor) -> torch.Tensor:
    return x.double().div(255) if x.dtype == torch.uint8 else x.double()


# (n, H, W, Cin, Cout, kh, kw, pooled rows/columns kept (None: all), pixel values)
CONV_SHAPES = [
    (3, 9, 11, 1, 5, 3, 3, None, True),
    (2, 13, 12, 1, 33, 5, 5, None, False),
    (2, 12, 11, 1, 16, 2, 3, (4, 3), True),
    (4, 10, 9, 17, 10, 3, 3, None, False),
    (1, 8, 11, 3, 20, 2, 3, None, False),
    (2, 12, 12, 32, 10, 3, 3, None, False),
    (3, 15, 14, 7, 19, 5, 5, None, False),
    (2, 16, 16, 16, 64, 3, 3, (5, 6), False),
    (1, 11, 9, 5, 3, 4, 4, None, False),
]


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s[:7])))
def test_conv_pool_relu_matches_float64_autograd(shape: tuple) -> None:
    n, h, w, cin, cout, kh, kw, keep, uint8 = shape
    g = torch.Generator().manual_seed(h * w + cout)
    x = images(n, (h, w, cin), seed=cin, uint8=uint8)
    # pixel images (flat regions, ties) reach the kernels as float inputs, scaled in Python
    x = x.to(torch.float32).div_(255) if x.dtype == torch.uint8 else x
    weight = torch.randn(cout, cin, kh, kw, generator=g) * 0.3
    bias = torch.randn(cout, generator=g) * 0.1  # some positive: flat regions pass the ReLU
    ph, pw = keep or ((h - kh + 1) // 2, (w - kw + 1) // 2)
    x_cl = x.permute(0, 2, 3, 1).contiguous()
    a, idx = torch.ops.cnnlab.conv_pool_relu(x_cl, weight, bias, ph, pw, True)
    grad = torch.randn(n, ph, pw, cout, generator=g)
    grad[torch.rand(grad.shape, generator=g) < 0.3] = 0.0
    gx, gw, gb = torch.ops.cnnlab.conv_pool_relu_backward(grad, a, idx, x_cl, weight, cin > 1)

    xd = as_double(x).requires_grad_(cin > 1)
    wd, bd = weight.double().requires_grad_(), bias.double().requires_grad_()
    ref = F.max_pool2d(torch.relu(F.conv2d(xd, wd, bd)), 2)[:, :, :ph, :pw].permute(0, 2, 3, 1)
    (ref * grad.double()).sum().backward()
    assert a.shape == (n, ph, pw, cout) and idx.dtype == torch.uint8
    torch.testing.assert_close(a.double(), ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw.double(), wd.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gb.double(), bd.grad, rtol=1e-4, atol=1e-5)
    if cin > 1:
        assert xd.grad is not None
        torch.testing.assert_close(gx.double(), xd.grad.permute(0, 2, 3, 1), rtol=1e-4, atol=1e-5)


def reference(
    model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, masks: list[torch.Tensor], denom: int
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], nn.Sequential]:
    """Loss sum, logits and d(loss sum / denom)/d(weights): autograd on the module, float64;
    the dropouts multiply by the given (channels-first) masks. Also the float64 copy, with
    its moving statistics updated."""
    ref = copy.deepcopy(model).double()
    h, masks_left = as_double(x), list(masks)
    for i, module in enumerate(ref):
        if i >= ref.n_forward:  # type: ignore[operator]
            break
        h = h * masks_left.pop(0).double() if isinstance(module, nn.Dropout) else module(h)
    loss = F.cross_entropy(h, y, reduction="sum")
    grads = torch.autograd.grad(loss / denom, list(ref.parameters()))
    return loss.detach(), h.detach(), list(grads), ref


@pytest.mark.parametrize("n", [1, 7, 32])
@pytest.mark.parametrize("name", list(NETS))
def test_net_gradients_match_float64_autograd(name: str, n: int) -> None:
    desc = NETS[name]
    torch.manual_seed(n)
    model = build_module(desc)
    uint8 = len(desc.input_shape) == 3 and desc.input_shape[-1] == 1 and n != 7
    x = images(n, desc.input_shape, seed=n, uint8=uint8)
    check_net_against_float64(desc, model, x)


def check_net_against_float64(desc: ModelDescription, model: nn.Module, x: torch.Tensor) -> None:
    """The kernels' step and logits of ``desc`` against autograd on its module in float64:
    loss, hits, every weight's gradient, the moving statistics, evaluation logits."""
    n = len(x)
    p = plan(desc)
    assert p.native, [b.kind for b in p.blocks]
    classes = desc.info[-1].out_shape[-1]
    y = torch.randint(0, classes, (n,))
    step = NativeStep(model, make_optimizer(model, TrainConfig()), p)
    torch.manual_seed(100 + n)
    masks = step.masks(n)  # laid out as the kernels read them
    torch.manual_seed(100 + n)
    cf = [F.dropout(torch.ones(n, *s), r, training=True) for s, r in step.drops]
    weights = [q.detach() for q in model.parameters()]
    grads = [torch.full_like(q, float("nan")) for q in weights]  # every element is written
    denom = n + 3  # a data-parallel shard averages over the global batch
    state = [s.detach() for s in model.buffers()]  # BatchNormalization's moving statistics
    inputs = kernel_inputs(x, CHAPTER)  # uint8 pixels divided by 255, as the chapter
    ref_loss, ref_logits, ref_grads, ref = reference(model, x, y, cf, denom)
    program = native.program(p.calls())
    loss, hits = program.gradients(inputs, y, weights, grads, masks, state, denom)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    assert hits.item() == (ref_logits.argmax(1) == y).sum().item()
    for (pname, _), got, want in zip(model.named_parameters(), grads, ref_grads, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6, msg=pname)
    for (bname, got), want in zip(model.named_buffers(), ref.buffers(), strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6, msg=bname)
    logits = program.logits(inputs, weights, state)
    with torch.no_grad():
        want = copy.deepcopy(model).double().eval()(as_double(x))
    torch.testing.assert_close(logits.double(), want, rtol=1e-5, atol=1e-5)


def test_dropout_masks_are_nn_dropouts_on_maps_and_vectors() -> None:
    desc = ZOO["map_dropout"]
    model = build_module(desc)
    step = NativeStep(model, make_optimizer(model, TrainConfig()), plan(desc))
    assert step.drops == [((17, 6, 6), 0.3)]  # nn.Dropout sees (N, C, H, W)
    torch.manual_seed(4)
    got = step.masks(5)[0]
    torch.manual_seed(4)
    want = F.dropout(torch.ones(5, 17, 6, 6), 0.3, training=True)
    assert torch.equal(got, want.permute(0, 2, 3, 1))


def test_blocks_are_matched_by_kind() -> None:
    case1 = plan(NETS["case1"])
    # 2x2 pooling drops conv2's last row and column, so conv1 keeps 12 of its 13 pooled rows
    assert case1.calls() == (
        call("conv_pool_relu", pooled_h=12, pooled_w=12),
        call("conv_pool_relu", pooled_h=5, pooled_w=5),
        call("flatten"), call("dropout"), call("dense", activation="relu"), call("dropout"),
        call("dense", activation="linear"),
    )  # fmt: skip
    assert [b.kind for b in plan(NETS["case2"]).blocks][-1] == "global_average"
    assert plan(NETS["case2"]).folded == ("softmax",)  # the final softmax goes with the loss
    odd = plan(ZOO["odd_5x5"])
    # 23x19 -> conv 5x5 -> 19x15 -> pool 9x7, of which conv 3x3 + pool (3x2) reads 8x6
    assert [b.pooled() for b in odd.blocks[:2]] == [(8, 6), (3, 2)]
    # the general blocks, a ReLU convolution's ReLU left to the max pooling after it
    general = plan(NETS["general_mix"])
    assert [b.kind for b in general.blocks][:4] == ["conv", "batch_norm", "conv", "pool"]
    # its ReLU stays: BatchNormalization comes next
    assert general.blocks[0].calls == (
        call("conv", stride_h=2, stride_w=2, dilation_h=1, dilation_w=1, pad_top=1,
             pad_bottom=2, pad_left=1, pad_right=1, activation="relu", bias=False),
    )  # fmt: skip
    assert general.blocks[2].calls[0]["activation"] == "linear"  # its ReLU after the pooling
    assert general.blocks[2].calls[0]["bias"] is True
    assert general.blocks[3].calls[0]["relu_after"] is True
    # 'same' before 2x2 max pooling: zeros first, in the same block
    same = plan(NETS["same_pool"])
    assert same.blocks[0].calls == (
        call("pad", top=1, bottom=1, left=1, right=1),
        call("conv_pool_relu", pooled_h=7, pooled_w=6),
    )  # fmt: skip
    assert same.blocks[0].pads == (1,) * 4
    # a 4x4 kernel: 1 before, 2 after
    assert same.blocks[1].calls[0] == call("pad", top=1, bottom=2, left=1, right=2)
    # a block without a kernel (a softmax over channels) runs as PyTorch, so the whole step is
    # autograd: the unpadded conv_pool_relu blocks through their kernels, the rest PyTorch
    other = parse_compact(
        "Input(28,28,1) Conv2D(8,3,relu,strides=2) MaxPooling2D(2) Activation(softmax) "
        "Conv2D(12,3,relu) MaxPooling2D(2) Flatten Dense(10,softmax)"
    )
    p = plan(other)
    assert [b.kind for b in p.blocks] == [
        "conv", "pool", "pytorch", "conv_pool_relu", "flatten", "dense",
    ]  # fmt: skip
    assert not p.native and runs_natively(build_module(other), None) is None
    placed = where(other, kernels=True)
    assert placed["conv2d"] == "pytorch" and placed["conv2d_1"] == "cnnlab"
    assert placed["dense"] == "pytorch"
    assert set(where(other, kernels=False).values()) == {"pytorch"}


def steps_follow_the_plain_loop(
    desc: ModelDescription, x: torch.Tensor, y: torch.Tensor, native: bool
) -> tuple[nn.Module, nn.Module]:
    """Eight-sample batches from the same weights with the same dropout draws: the fast step
    (one C++ call where ``native``, else autograd mixing kernels and PyTorch) gives the plain
    loop's losses and weights. Returns the plain and fast models after the steps."""
    torch.manual_seed(3)
    plain_model = build_module(desc)
    fast_model = copy.deepcopy(plain_model)
    every = for_model(fast_model, rule=False)  # every kernel, whatever the measured rule
    step = make_step(fast_model, make_optimizer(fast_model, TrainConfig()), choice=every)
    assert isinstance(step, NativeStep) == native
    torch.manual_seed(11)
    expected = plain_losses(plain_model, x, y, 8)
    torch.manual_seed(11)
    got = fast_losses(fast_model, x, y, 8)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)
    for (key, a), b in zip(
        plain_model.state_dict().items(), fast_model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=2e-6, msg=key)
    return plain_model, fast_model


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_steps_match_the_plain_loop(name: str) -> None:
    """Same batches, same dropout draws: the kernels' step follows the plain loop's."""
    desc = ZOO[name]
    x = images(6 * 8 - 3, desc.input_shape, seed=2, uint8=False)
    y = torch.randint(0, desc.info[-1].out_shape[-1], (len(x),))
    steps_follow_the_plain_loop(desc, x, y, native=True)


MIXED = parse_compact(
    "Input(24,22,1) Conv2D(8,3,relu,padding=same) MaxPooling2D(2) Activation(softmax) "
    "Conv2D(12,3,relu) MaxPooling2D(2) Conv2D(9,3,relu) MaxPooling2D(2) Flatten "
    "Dropout(0.25) Dense(10,softmax)"
)


def test_mixed_steps_match_the_plain_loop() -> None:
    """A block without a kernel (a softmax over channels) runs as PyTorch in the same step,
    as does the padded convolution before it; the convolution blocks after it through the
    kernels, under autograd."""
    x = images(5 * 8, MIXED.input_shape, seed=5, uint8=False)
    y = torch.randint(0, 10, (len(x),))
    model = build_module(MIXED)
    step = make_step(model, make_optimizer(model, TrainConfig()))
    assert getattr(step, "blocks", None) == {3: (4, 4), 5: (1, 1)}  # 5x4 pooled, 4x4 used
    assert where(MIXED, kernels=True)["conv2d_2"] == "cnnlab"
    plain_model, fast_model = steps_follow_the_plain_loop(MIXED, x, y, native=False)
    with torch.no_grad():
        want = plain_model.eval()(x)
    torch.testing.assert_close(fast_logits(fast_model.eval(), x), want, rtol=1e-5, atol=1e-5)


MUTANTS = {
    1: "one-channel convolution: the last tap left out",
    2: "sparse backward: one nonzero gradient per window position lost",
    3: "max pooling: ties go to the last maximum, not the first",
    4: "dropout's backward pass without the mask",
    5: "general blocks: the activation's derivative left out of the backward pass",
    6: "average pooling: the gradient scaled twice",
    7: "batch normalisation: moving variance from the unbiased batch variance",
    8: "the program's interface: batch normalisation's epsilon and momentum swapped",
    9: "graphs: a kept map's gradient from its later readers lost",
    10: "graphs: an Add's kept input gets no gradient",
    11: "graphs: a Concatenate's kept input gets the wrong channels of the gradient",
    12: "fused batch normalisation: the pooled gradient to each window's first value",
}


@pytest.mark.slow
def test_broken_kernels_fail_these_tests(tmp_path: Path) -> None:
    """Mutation check: a build with each deliberate error fails the tests above."""
    if os.environ.get("CNNLAB_MUTANT"):
        pytest.skip("inside a mutant run")
    lib = tmp_path / "mutants.so"
    native.build(lib, extra=["-DCNNLAB_MUTANTS"])
    here = Path(__file__)
    for mutant in (0, *MUTANTS):
        env = {**os.environ, "CNNLAB_NATIVE_LIB": str(lib), "CNNLAB_MUTANT": str(mutant)}
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", str(here),
             str(here.with_name("test_native_graphs.py")), str(here.with_name("test_norm.py")),
             "-k", "float64 or mixed"],
            cwd=here.parents[2], env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if mutant == 0:  # the mutant build itself, unbroken, passes
            assert run.returncode == 0, run.stdout[-2000:]
        else:
            assert run.returncode == 1 and "failed" in run.stdout, (MUTANTS[mutant], run.stdout)

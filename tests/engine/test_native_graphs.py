"""Graphs in the kernels' whole step: residual adds, forks and several readers of one map.

A graph runs as one C++ call where each of its layers has a kernel (``plan._graph_program``:
the layers in order, with ``store``/``load``/``add``/``concat`` calls for the maps read
again). Checked
against float64 autograd on the network's own modules (gradients, moving statistics,
logits) and step for step against the plain PyTorch loop; mutants 9, 10 and 11
(``test_blocks.py``) break the slots' backward pass and must fail here.
"""

from __future__ import annotations

import copy
import shutil
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.engine import native
from cnnlab.engine.blocks import NativeStep, kernel_inputs
from cnnlab.engine.choice import for_model
from cnnlab.engine.fastpath import make_step
from cnnlab.engine.plan import plan
from cnnlab.models import ModelDescription, build_module
from cnnlab.models.zoo import inception1d, resnet1d
from cnnlab.train.loop import TrainConfig, make_optimizer

from .test_blocks import CHAPTER, as_double, images
from .test_fastpath import fast_losses, plain_losses

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")


def _graph(name: str, shape: list[int], layers: list[dict[str, Any]]) -> ModelDescription:
    return ModelDescription.from_dict({"name": name, "input_shape": shape, "layers": layers})


def _l(cls: str, name: str, inputs: list[str], **args: Any) -> dict[str, Any]:
    return {"class_name": cls, "name": name, "inputs": inputs, **args}


NO_BIAS = {"use_bias": False}  # before BatchNormalization (a bias there only adds noise)
GRAPHS = {
    # Wang et al.'s ResNet on 3 channels: 1x1 shortcuts, then BN-only shortcuts
    "resnet1d": resnet1d((23, 3), 4),
    # an identity shortcut from the input itself, and a conv + pool block after the add
    "input_shortcut": _graph("input_shortcut", [13, 12, 4], [
        _l("Conv2D", "c1", ["input"], filters=4, kernel_size=3, padding="same", **NO_BIAS),
        _l("BatchNormalization", "bn", ["c1"]),
        _l("Add", "add", ["bn", "input"]),
        _l("ReLU", "relu", ["add"]),
        _l("Conv2D", "c2", ["relu"], filters=6, kernel_size=3, activation="relu"),
        _l("MaxPooling2D", "p2", ["c2"]),
        _l("GlobalAveragePooling2D", "gap", ["p2"]),
        _l("Dense", "dense", ["gap"], units=5, activation="softmax"),
    ]),
    # one map read by three branches, added in one Add of three; a dropout after
    "three_way": _graph("three_way", [11, 10, 3], [
        _l("Conv2D", "stem", ["input"], filters=5, kernel_size=3, activation="relu"),
        _l("Conv2D", "a", ["stem"], filters=6, kernel_size=3, padding="same", activation="tanh"),
        _l("Conv2D", "b", ["stem"], filters=6, kernel_size=1),
        _l("Conv2D", "c0", ["stem"], filters=6, kernel_size=2, padding="same", activation="elu"),
        _l("AveragePooling2D", "c", ["c0"], pool_size=3, strides=1, padding="same"),
        _l("Add", "add", ["a", "b", "c"]),
        _l("Flatten", "flat", ["add"]),
        _l("Dropout", "drop", ["flat"], rate=0.3),
        _l("Dense", "dense", ["drop"], units=4, activation="softmax"),
    ]),
    # a one-channel series read by two convolutions (no input gradient for either), a map
    # added to itself, a branch whose ReLU convolution leaves its ReLU to its max pooling
    "series_fork": _graph("series_fork", [26, 1], [
        _l("Conv1D", "a", ["input"], filters=7, kernel_size=5, padding="same"),
        _l("Conv1D", "b", ["input"], filters=7, kernel_size=1, activation="relu"),
        _l("Add", "ab", ["a", "b"]),
        _l("Add", "twice", ["ab", "ab"]),
        _l("Conv1D", "c", ["twice"], filters=8, kernel_size=3, activation="relu"),
        _l("MaxPooling1D", "pc", ["c"], pool_size=2),
        _l("Conv1D", "d", ["twice"], filters=8, kernel_size=3, strides=2),
        _l("Add", "cd", ["d", "pc"]),
        _l("GlobalMaxPooling1D", "gmp", ["cd"]),
        _l("Dense", "dense", ["gmp"], units=3, activation="softmax"),
    ]),
    # InceptionTime's modules: Concatenate of four branches, a bottleneck on 2 channels ...
    "inception1d": inception1d((23, 2), 3),
    # ... and on one: the max-pooled input's 1x1 convolution needs no input gradient
    "inception1d_uni": inception1d((19, 1), 2),
    # Concatenate whose first input is not the running map, maps and then vectors
    "concat_2d": _graph("concat_2d", [10, 9, 3], [
        _l("Conv2D", "a", ["input"], filters=4, kernel_size=3, padding="same", activation="relu"),
        _l("Conv2D", "b", ["input"], filters=5, kernel_size=1, activation="sigmoid"),
        _l("Concatenate", "ba", ["b", "a"]),
        _l("Conv2D", "c", ["ba"], filters=6, kernel_size=3, strides=2),
        _l("GlobalAveragePooling2D", "gap", ["c"]),
        _l("GlobalMaxPooling2D", "gmp", ["a"]),
        _l("Concatenate", "vec", ["gmp", "gap", "gmp"], axis=1),
        _l("Dense", "dense", ["vec"], units=4, activation="softmax"),
    ]),
}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def kernels() -> None:
    assert native.load(), "the C++ kernels must build where there is a compiler"


def test_graphs_are_one_program_with_slots() -> None:
    """Every layer of these graphs has a kernel: the whole step is one C++ call, the maps
    read again kept in slots; a graph with a Multiply stays a mixed step."""
    for name, desc in GRAPHS.items():
        p = plan(desc)
        assert p.native, (name, [b.kind for b in p.blocks])
        kinds = [c.kind for c in p.calls()]
        fused_adds = [c for c in p.calls() if c.kind == "batch_norm" and c["add_slot"] != -1]
        assert "store" in kinds and ("add" in kinds or "concat" in kinds or fused_adds), name
    # resnet1d's three Adds each go into the batch norm before them, with the ReLU after
    ends = [b for b in plan(GRAPHS["resnet1d"]).blocks if b.kind == "batch_norm"]
    assert [b.layers for b in ends if len(b.layers) == 3] == [
        (f"block{i}_shortcut_bn", f"block{i}_add", f"block{i}_out") for i in (1, 2, 3)
    ]
    assert all(b.calls[-1]["add_slot"] != -1 and b.calls[-1]["relu"] for b in ends[-1:])
    calls = [(c.kind, dict(c.args)) for c in plan(GRAPHS["input_shortcut"]).calls()]
    assert calls[0] == ("store", {"slot": 0})  # the input, read again by the add
    # the Add and its ReLU go into the batch norm before them, reading the input's slot
    assert [a["add_slot"] for k, a in calls if k == "batch_norm"] == [0]
    assert "add" not in [k for k, _ in calls]
    three = [c.kind for c in plan(GRAPHS["three_way"]).calls()]
    assert "add" in three  # an Add of three maps stays an add block
    other = copy.deepcopy(GRAPHS["three_way"].to_dict())
    other["layers"][5]["class_name"] = "Multiply"  # a merge without a kernel
    assert not plan(ModelDescription.from_dict(other)).native


def _inputs(n: int, desc: ModelDescription, seed: int) -> torch.Tensor:
    """:func:`images` (flat zeros: ties in pooling windows), but Gaussian series for the
    Inception networks: there a flat stretch makes equal maps that float32 convolutions
    leave a rounding apart, which decides where max pooling sends its gradient (float64
    sees an exact tie and takes the first): a valid subgradient, not the reference's."""
    if desc.name.startswith("inception"):
        length, c = desc.input_shape
        return torch.randn(n, c, length, generator=torch.Generator().manual_seed(seed))
    return images(n, desc.input_shape, seed=seed, uint8=False)


@pytest.mark.parametrize("n", [1, 6])
@pytest.mark.parametrize("name", list(GRAPHS))
def test_graph_gradients_match_float64_autograd(name: str, n: int) -> None:
    desc = GRAPHS[name]
    torch.manual_seed(n)
    model = build_module(desc)
    p = plan(desc)
    x = _inputs(n, desc, seed=n + 1)
    y = torch.randint(0, desc.info[-1].out_shape[-1], (n,))
    step = NativeStep(model, make_optimizer(model, TrainConfig()), p)
    torch.manual_seed(7)
    masks = step.masks(n)
    torch.manual_seed(7)
    cf = [F.dropout(torch.ones(n, *s), r, training=True) for s, r in step.drops]
    ref = copy.deepcopy(model).double()
    hooks = [  # the dropouts multiply by the masks the kernels were given
        m.register_forward_hook(lambda _m, _i, out, k=k: out * cf[k].double())
        for k, m in enumerate(x for x in ref.modules() if isinstance(x, torch.nn.Dropout))
    ]
    for m in ref.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0  # the hook applies the mask
    weights = [q.detach() for q in model.parameters()]
    grads = [torch.full_like(q, float("nan")) for q in weights]
    state = [s.detach() for s in model.buffers()]
    denom = n + 2
    program = native.program(p.calls())
    loss, hits = program.gradients(kernel_inputs(x, CHAPTER), y, weights, grads, masks, state,
                                   denom)  # fmt: skip
    logits = ref(as_double(x))
    want_loss = F.cross_entropy(logits, y, reduction="sum")
    want = torch.autograd.grad(want_loss / denom, list(ref.parameters()))
    torch.testing.assert_close(loss, want_loss.detach(), rtol=1e-5, atol=1e-5)
    assert hits.item() == (logits.argmax(1) == y).sum().item()
    for (pname, _), got, w in zip(model.named_parameters(), grads, want, strict=True):
        torch.testing.assert_close(got.double(), w, rtol=1e-4, atol=1e-6, msg=pname)
    for (bname, got), w in zip(model.named_buffers(), ref.buffers(), strict=True):
        torch.testing.assert_close(got.double(), w, rtol=1e-5, atol=1e-6, msg=bname)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        want_eval = copy.deepcopy(model).double().eval()(as_double(x))
    got_eval = program.logits(kernel_inputs(x, CHAPTER), weights, state)
    torch.testing.assert_close(got_eval.double(), want_eval, rtol=1e-5, atol=1e-5)


def _no_bias_before_norm(desc: ModelDescription) -> ModelDescription:
    """``desc`` without the biases of convolutions that BatchNormalization alone reads: their
    gradients are 0 up to rounding, which Adam scales to whole steps of either sign."""
    d = desc.to_dict()
    for layer in d["layers"]:
        readers = [desc.by_name[r].layer.class_name for r in desc.consumers[layer["name"]]]
        conv = layer["class_name"] in ("Conv1D", "Conv2D")
        if conv and readers and all(r == "BatchNormalization" for r in readers):
            layer["use_bias"] = False
    return ModelDescription.from_dict(d)


@pytest.mark.parametrize("name", list(GRAPHS))
def test_graph_steps_follow_the_plain_loop_in_float64(name: str) -> None:
    """Same batches and dropout draws, three steps (the last one short): the one-call
    float32 step against the plain loop in float64. resnet1d's steps are sensitive to
    rounding on every path: after 3 steps the float32 plain loop is 2.6e-5 from its float64
    run in a conv weight, this step 8.9e-5, the autograd step 1.4e-3; hence the float64
    reference and an absolute tolerance of 3e-4 (Adam moves each weight ~1e-3 a step)."""
    desc = _no_bias_before_norm(GRAPHS[name])
    x = _inputs(3 * 8 - 3, GRAPHS[name], seed=3)
    y = torch.randint(0, desc.info[-1].out_shape[-1], (len(x),))
    torch.manual_seed(3)
    fast_model = build_module(desc)
    plain_model = copy.deepcopy(fast_model).double()
    step = make_step(fast_model, make_optimizer(fast_model, TrainConfig()),
                     choice=for_model(fast_model, rule=False))  # fmt: skip
    assert isinstance(step, NativeStep)
    torch.manual_seed(11)
    expected = plain_losses(plain_model, x.double(), y, 8)
    torch.manual_seed(11)
    got = fast_losses(fast_model, x, y, 8)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)
    for (key, a), b in zip(
        plain_model.state_dict().items(), fast_model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(b.double(), a, rtol=1e-3, atol=3e-4, msg=key)


def test_resnet1d_runs_whole_on_series_of_any_length() -> None:
    """The engine choice takes the whole step for resnet1d, short series or long: its fused
    batch norm is chosen on every map size (measured, batch 32, quiet: the whole step 0.82,
    0.85 and 0.84 of the PyTorch path's time at 150, 427 and 1,024 steps)."""
    for length in (150, 427, 1024):
        choice = for_model(build_module(resnet1d((length, 1), 2)))
        assert choice.whole is not None and set(choice.layers.values()) == {"cnnlab"}

"""The fast engine on graphs: its convolution blocks run through cnnlab's kernels inside the
graph, everything else as the layers' PyTorch modules, and a step equals the plain loop's."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

from cnnlab.engine import native
from cnnlab.engine.fastpath import fast_logits
from cnnlab.engine.plan import KERNEL, plan, where
from cnnlab.models import ModelDescription, build_module

from .test_fastpath import digits, fast_losses, plain_losses


def _graph(name: str, layers: list[dict[str, Any]]) -> ModelDescription:
    return ModelDescription.from_dict({"name": name, "input_shape": [28, 28, 1], "layers": layers})


def _l(cls: str, name: str, inputs: list[str], **args: Any) -> dict[str, Any]:
    return {"class_name": cls, "name": name, "inputs": inputs, **args}


GRAPHS = {
    # conv + pool on the image (a kernel block), a residual pair on the pooled maps
    "residual": _graph("residual", [
        _l("Conv2D", "c1", ["input"], filters=8, kernel_size=3, activation="relu"),
        _l("MaxPooling2D", "p1", ["c1"]),
        _l("Conv2D", "c2", ["p1"], filters=8, kernel_size=3, padding="same", activation="relu"),
        # no bias before BatchNormalization: its gradient is rounding noise, which Adam
        # scales to whole steps that differ between any two orders of summation
        _l("Conv2D", "c3", ["c2"], filters=8, kernel_size=3, padding="same", use_bias=False),
        _l("BatchNormalization", "bn", ["c3"]),
        _l("Add", "add", ["bn", "p1"]),
        _l("ReLU", "relu", ["add"]),
        _l("Conv2D", "c4", ["relu"], filters=12, kernel_size=3, activation="relu"),
        _l("MaxPooling2D", "p2", ["c4"]),
        _l("Flatten", "flat", ["p2"]),
        _l("Dropout", "drop", ["flat"], rate=0.25),
        _l("Dense", "dense", ["drop"], units=10, activation="softmax"),
    ]),
    # two kernel blocks in parallel branches of one map, joined
    "branches": _graph("branches", [
        _l("Conv2D", "stem", ["input"], filters=6, kernel_size=3, activation="relu"),
        _l("MaxPooling2D", "pool", ["stem"]),
        _l("Conv2D", "a", ["pool"], filters=5, kernel_size=3, activation="relu"),
        _l("MaxPooling2D", "pa", ["a"]),
        _l("Conv2D", "b", ["pool"], filters=5, kernel_size=3, activation="relu"),
        _l("MaxPooling2D", "pb", ["b"]),
        _l("Concatenate", "cat", ["pa", "pb"]),
        _l("GlobalAveragePooling2D", "gap", ["cat"]),
        _l("Dense", "dense", ["gap"], units=10),
        _l("Softmax", "softmax", ["dense"]),
    ]),
}  # fmt: skip
# the same branches multiplied: a merge without a kernel keeps the step mixed
_mul = GRAPHS["branches"].to_dict()
_mul["layers"][6] = _l("Multiply", "cat", ["pa", "pb"])
GRAPHS["multiplied"] = ModelDescription.from_dict(_mul | {"name": "multiplied"})


@pytest.mark.parametrize("name", list(GRAPHS))
def test_kernel_blocks_inside_a_graph(name: str) -> None:
    desc = GRAPHS[name]
    kinds = {b.layers: b.kind for b in plan(desc).blocks}
    # every layer of the first two has a kernel (Add, Concatenate on the channels): the
    # whole step is one C++ call (test_native_graphs.py); a Multiply has none
    assert plan(desc).native == (name != "multiplied")
    blocks = [layers for layers, kind in kinds.items() if kind == "conv_pool_relu"]
    assert blocks == (
        [("c1", "p1"), ("c4", "p2")]
        if name == "residual"
        else [("stem", "pool"), ("a", "pa"), ("b", "pb")]
    )
    if native.load():  # where the kernels run: every layer, or the blocks in a mixed step
        ran = {n for n, w in where(desc, True).items() if w == KERNEL}
        whole = {x.name for x in desc.layers}
        assert ran == (whole if plan(desc).native else {n for b in blocks for n in b})


@pytest.mark.parametrize("use_native", [None, False])
@pytest.mark.parametrize("name", list(GRAPHS))
def test_graph_steps_match_the_plain_loop(name: str, use_native: bool | None) -> None:
    x, y = digits(6 * 16 - 3, seed=4)
    torch.manual_seed(5)
    plain_model = build_module(GRAPHS[name])
    fast_model = copy.deepcopy(plain_model)
    torch.manual_seed(12)  # the dropout masks come from torch's global generator
    expected = plain_losses(plain_model, x, y, 16)
    torch.manual_seed(12)
    got = fast_losses(fast_model, x, y, 16, use_native)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)
    for (key, a), b in zip(
        plain_model.state_dict().items(), fast_model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=2e-6, msg=key)
    fast_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast_logits(fast_model, x), fast_model(x), rtol=1e-5, atol=1e-5)

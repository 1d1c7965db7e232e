"""A network's layers as the blocks cnnlab's C++ kernels compute, matched by kind.

The fast engine reads a model description as a sequence of blocks. Each block is one of
the common kinds the kernels (``csrc/blocks.cpp``, ``csrc/net.cpp``) have, with its shapes
read from the description, whatever the network:

- ``conv_pool_relu``: Conv2D('valid', stride 1, bias, relu) followed by MaxPooling2D(2x2),
  any channel counts, map sizes and kernels up to 7x7; ReLU after the pooling;
- ``flatten``, ``dropout`` (nn.Dropout's masks, bit for bit), ``dense`` (bias, relu or
  linear), ``global_average`` (GlobalAveragePooling2D);
- anything else is a ``pytorch`` block: the network's own module.

When every block has a kernel, a training step is one call (:class:`NativeStep`): forward,
softmax cross-entropy and backward in C++. Otherwise :mod:`cnnlab.engine.fastpath` runs the
step with autograd, the convolution blocks through the same kernels and the rest through
PyTorch operations (:func:`where` says which ran where; ``config.json`` records it).

No work on what pooling drops: a 2x2 pooling of an odd-sized map drops its last row and
column, so the rows and columns of the block before it that feed only those are not
computed either (:func:`plan` works the needed sizes out from the last block back).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from cnnlab.engine import native
from cnnlab.engine.adam import FusedAdam
from cnnlab.engine.tensors import GradHook, as_float_images, dropout_mask
from cnnlab.models import ModelDescription
from cnnlab.models import layers as L

CONV, FLATTEN, DROPOUT, DENSE, GAP = range(5)  # block kinds, as csrc/net.cpp numbers them
MAX_TAPS = 49  # kernels up to 7x7 (csrc/blocks.h: kMaxTaps)
KERNEL, PYTORCH = "cnnlab", "pytorch"  # where a layer ran, as config.json records it


@dataclass(frozen=True)
class Block:
    """One block: its kind, the description's layers it computes, its kernel plan entry."""

    kind: str
    layers: tuple[str, ...]
    code: tuple[int, ...] = ()  # kind number and arguments; empty for a pytorch block
    drop: tuple[tuple[int, ...], float] | None = None  # dropout: nn.Dropout's shape, rate
    conv: tuple[int, int, int, int] | None = None  # conv_pool_relu: in H, in W, kh, kw


@dataclass(frozen=True)
class Plan:
    blocks: tuple[Block, ...]
    folded: tuple[str, ...]  # a final softmax: computed by the loss, not by a block

    @property
    def native(self) -> bool:
        """Whether every block has a kernel (the whole step can run in C++)."""
        return bool(self.blocks) and all(b.kind != PYTORCH for b in self.blocks)

    def code(self) -> list[int]:
        return [v for b in self.blocks for v in b.code]


def forward_layers(desc: ModelDescription) -> tuple[int, bool]:
    """How many layers ``Network.forward`` computes, and whether the last of them is a Dense
    whose softmax is left to the loss (as :class:`cnnlab.models.torch_module.Network`)."""
    layers = desc.layers
    last = layers[-1] if layers else None
    n = len(layers) - isinstance(last, L.Softmax)
    if isinstance(last, L.Dense) and last.activation == "softmax":
        return n, True
    if isinstance(last, L.Activation) and last.activation == "softmax":
        n -= 1
    return n, False


def _conv_pool(layer: L.Layer, nxt: L.Layer | None, in_shape: tuple[int, ...]) -> bool:
    if not (isinstance(layer, L.Conv) and isinstance(nxt, L.Pool) and layer.rank == 2):
        return False
    kh, kw = layer.kernel_size
    return (
        layer.padding == "valid"
        and layer.strides == (1, 1)
        and layer.dilation_rate == (1, 1)
        and layer.use_bias
        and layer.activation == "relu"
        and kh * kw <= MAX_TAPS
        and in_shape[0] - kh + 1 >= 2
        and in_shape[1] - kw + 1 >= 2
        and nxt.kind == "max"
        and nxt.rank == 2
        and nxt.pool_size == (2, 2)
        and nxt.strides == (2, 2)
        and nxt.padding == "valid"
    )


def plan(desc: ModelDescription) -> Plan:
    """The blocks of ``desc``: each with a kernel where its kind has one, else ``pytorch``."""
    n_forward, linear_last = forward_layers(desc)
    infos = desc.info[:n_forward]
    image = len(desc.input_shape) == 3  # (H, W, C): the kernels are for 2-D maps
    blocks: list[Block] = []
    i = 0
    while i < len(infos):
        info, layer = infos[i], infos[i].layer
        nxt = infos[i + 1].layer if i + 1 < len(infos) else None
        shape = info.in_shape
        # (one input channel: the kernel gives no input gradient, so only as the first layer)
        if image and _conv_pool(layer, nxt, shape) and (shape[-1] > 1 or i == 0):
            assert isinstance(layer, L.Conv) and nxt is not None
            kh, kw = layer.kernel_size
            ph, pw = (shape[0] - kh + 1) // 2, (shape[1] - kw + 1) // 2
            blocks.append(Block("conv_pool_relu", (layer.name, nxt.name), (CONV, ph, pw),
                                conv=(shape[0], shape[1], kh, kw)))  # fmt: skip
            i += 2
            continue
        if image and isinstance(layer, L.Flatten):
            blocks.append(Block("flatten", (layer.name,), (FLATTEN,)))
        elif image and isinstance(layer, L.Dropout) and layer.rate < 1:
            torch_shape = (shape[-1], *shape[:-1]) if len(shape) > 1 else shape  # (C, H, W)
            drop = (tuple(torch_shape), layer.rate)
            blocks.append(Block("dropout", (layer.name,), (DROPOUT,), drop=drop))
        elif image and _dense(layer, linear_last and i == n_forward - 1, shape):
            assert isinstance(layer, L.Dense)
            relu = layer.activation == "relu" and not (linear_last and i == n_forward - 1)
            blocks.append(Block("dense", (layer.name,), (DENSE, int(relu))))
        elif image and isinstance(layer, L.GlobalPool) and layer.kind == "average":
            blocks.append(Block("global_average", (layer.name,), (GAP,)))
        else:
            blocks.append(Block(PYTORCH, (layer.name,)))
        i += 1
    folded = tuple(layer.name for layer in desc.layers[n_forward:])
    return Plan(_crop(blocks), folded)


def _dense(layer: L.Layer, softmax_to_loss: bool, in_shape: tuple[int, ...]) -> bool:
    return (
        isinstance(layer, L.Dense)
        and layer.use_bias
        and len(in_shape) == 1
        and (layer.activation in ("relu", "linear") or softmax_to_loss)
    )


def _crop(blocks: list[Block]) -> tuple[Block, ...]:
    """Shrink each convolution block to the pooled rows and columns the next one uses."""
    out = list(blocks)
    need: tuple[int, int] | None = None  # input rows and columns the next block reads
    for j in range(len(out) - 1, -1, -1):
        b = out[j]
        if b.kind != "conv_pool_relu" or b.conv is None:
            need = None
            continue
        _, ph, pw = b.code
        if need is not None:
            ph, pw = min(ph, need[0]), min(pw, need[1])
            out[j] = replace(b, code=(CONV, ph, pw))
        need = (2 * ph + b.conv[2] - 1, 2 * pw + b.conv[3] - 1)
    return tuple(out)


def where(desc: ModelDescription, kernels: bool) -> dict[str, str]:
    """Which layers run in cnnlab's kernels and which in PyTorch operations, by layer name.

    ``kernels``: whether the kernels run here (fast engine, CPU, built). A final softmax
    goes with the loss: in the kernels when the whole step is.
    """
    p = plan(desc)
    out: dict[str, str] = {}
    for b in p.blocks:
        runs = kernels and (p.native or b.kind == "conv_pool_relu")
        out.update(dict.fromkeys(b.layers, KERNEL if runs else PYTORCH))
    out.update(dict.fromkeys(p.folded, KERNEL if kernels and p.native else PYTORCH))
    return out


def kernel_inputs(xb: torch.Tensor, p: Plan) -> torch.Tensor:
    """A batch (N, C, H, W) as the kernels read it: (N, H, W, C) contiguous; uint8 only
    where the first block scales it itself (a one-channel convolution)."""
    first = p.blocks[0]
    if xb.shape[1] == 1 and first.kind == "conv_pool_relu":
        return xb.reshape(xb.shape[0], xb.shape[2], xb.shape[3], 1)  # the same memory
    return as_float_images(xb).permute(0, 2, 3, 1).contiguous()


def runs_natively(model: nn.Module, use_native: bool | None) -> Plan | None:
    """The plan of ``model`` if its whole step runs in the kernels here, else None."""
    desc = getattr(model, "description", None)
    if use_native is False or not isinstance(desc, ModelDescription):
        return None
    p = plan(desc)
    params = list(model.parameters())
    flat = all(
        q.device.type == "cpu" and q.dtype == torch.float32 and q.requires_grad for q in params
    )
    if not (p.native and flat and native.load()):
        return None
    return p


class NativeStep:
    """One training step (forward, loss, backward, Adam) of a network whose every block has
    a kernel: one call into C++, then Adam. ``grad_hook`` runs before Adam (an all-reduce)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        p: Plan,
        grad_hook: GradHook | None = None,
    ) -> None:
        params = list(model.parameters())
        self.model = model
        self.plan = p
        self.code = p.code()
        self.drops = [b.drop for b in p.blocks if b.drop is not None]
        self.weights = [q.detach() for q in params]
        self.grads = [torch.zeros_like(q) for q in params]
        self.grad_hook = grad_hook
        self.adam = FusedAdam(optimizer, params, None)
        self.native_masks = native.exact_dropout()

    def masks(self, n: int) -> list[torch.Tensor]:
        """nn.Dropout's masks for this batch, in layer order, laid out as the kernels read."""
        out = []
        for shape, rate in self.drops:
            if self.native_masks:  # keep = 1 - p, as torch computes it
                m = torch.ops.cnnlab.dropout_mask([n, *shape], 1 - rate)
            else:
                m = dropout_mask((n, *shape), self.weights[0], rate)
            out.append(m.permute(0, 2, 3, 1).contiguous() if m.ndim == 4 else m)
        return out

    def __call__(
        self, xb: torch.Tensor, yb: torch.Tensor, denom: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update the weights on (xb (N, C, H, W) float32 in [0, 1] or uint8, yb (N,));
        returns (sum of losses, hits). ``denom``: the batch the loss is averaged over."""
        n = xb.shape[0]
        masks = self.masks(n)
        loss, hits = torch.ops.cnnlab.net_gradients(
            kernel_inputs(xb, self.plan), yb, self.code, self.weights, self.grads, masks,
            denom or n,
        )  # fmt: skip
        if self.grad_hook is not None:
            self.grad_hook(self.grads)
        self.adam.step(self.grads)
        return loss, hits


class _ConvPoolRelu(torch.autograd.Function):
    """The convolution block's kernels as an autograd node, for a step that mixes them with
    PyTorch operations: (N, H, W, Cin) -> (N, ph, pw, Cout), channels-last."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ph: int, pw: int
    ) -> torch.Tensor:
        a, idx = torch.ops.cnnlab.conv_pool_relu(x, weight, bias, ph, pw, True)
        ctx.save_for_backward(a, idx, x, weight)
        return a

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        a, idx, x, weight = ctx.saved_tensors
        need_x = bool(ctx.needs_input_grad[0])
        gx, gw, gb = torch.ops.cnnlab.conv_pool_relu_backward(
            grads[0].contiguous(), a, idx, x, weight, need_x
        )
        return (gx if need_x else None), gw, gb, None, None


def conv_pool_relu(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ph: int, pw: int
) -> torch.Tensor:
    """A convolution block through the kernels, differentiable: (N, C, H, W) channels-last
    float32 -> (N, Cout, ph, pw) channels-last."""
    x = h.permute(0, 2, 3, 1).contiguous()  # a view where h is channels-last already
    if torch.is_inference_mode_enabled() or not torch.is_grad_enabled():
        a = torch.ops.cnnlab.conv_pool_relu(x, weight, bias, ph, pw, False)[0]
    else:
        a = _ConvPoolRelu.apply(x, weight, bias, ph, pw)
    return a.permute(0, 3, 1, 2)


def kernel_blocks(model: nn.Module, use_native: bool | None) -> dict[int, tuple[int, int]]:
    """For a step mixing kernels and PyTorch: the index of each layer that starts a
    convolution block the kernels compute here, with its pooled size. Empty where they
    do not run (a GPU, no compiler, ``use_native=False``)."""
    desc = getattr(model, "description", None)
    params = list(model.parameters())
    cpu = all(q.device.type == "cpu" and q.dtype == torch.float32 for q in params)
    if use_native is False or not isinstance(desc, ModelDescription) or not cpu:
        return {}
    if not native.load():
        return {}
    starts = {
        b.layers[0]: (b.code[1], b.code[2]) for b in plan(desc).blocks if b.code[:1] == (CONV,)
    }
    return {
        i: starts[info.layer.name] for i, info in enumerate(desc.info) if info.layer.name in starts
    }


def native_logits(model: nn.Module, p: Plan, x: torch.Tensor) -> torch.Tensor:
    """Evaluation-mode logits through the kernels: (N, C, H, W) -> (N, classes)."""
    weights = [q.detach() for q in model.parameters()]
    return torch.ops.cnnlab.net_logits(kernel_inputs(x, p), p.code(), weights)

"""The fast engine's C++ kernels as a training step, composed from a network's blocks.

:func:`cnnlab.engine.plan.plan` reads a description as blocks, matched by kind. Where every
block has a kernel, :class:`NativeStep` runs forward, softmax cross-entropy and backward in
one call (``csrc/net.cpp``), then Adam in one loop. Otherwise the step is autograd on
:func:`cnnlab.engine.fastpath.fast_forward`, with the ``conv_pool_relu`` blocks as autograd
nodes over their kernels (:func:`conv_pool_relu`, :func:`kernel_blocks`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cnnlab.data.scaling import InputScale
from cnnlab.engine import native
from cnnlab.engine.adam import FusedAdam
from cnnlab.engine.choice import for_model
from cnnlab.engine.plan import Plan
from cnnlab.engine.tensors import GradHook, as_inputs, dropout_mask


def channels_last(t: torch.Tensor) -> torch.Tensor:
    """A map as the kernels lay it out: (N, C, H, W) -> (N, H, W, C), and a series
    (N, C, L) -> (N, 1, L, C), a one-row image; contiguous. Vectors pass unchanged."""
    if t.ndim == 3:
        t = t.unsqueeze(2)
    return t.permute(0, 2, 3, 1).contiguous() if t.ndim == 4 else t


def kernel_inputs(xb: torch.Tensor, scale: InputScale | None) -> torch.Tensor:
    """A batch (N, C, H, W) or (N, C, L) as the kernels read it (:func:`channels_last`):
    float32 network inputs (uint8 values scaled by the run's ``scale``)."""
    return channels_last(as_inputs(xb, scale))


def runs_natively(model: nn.Module, use_native: bool | None) -> Plan | None:
    """The plan of ``model`` if the engine choice runs its whole step in the kernels here,
    else None (:func:`cnnlab.engine.choice.for_model` decides; this only reads it)."""
    return for_model(model, native=use_native is not False).whole


class NativeStep:
    """One training step (forward, loss, backward, Adam) of a network whose every block has
    a kernel: one call into C++, then Adam. ``grad_hook`` runs before Adam (an all-reduce)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        p: Plan,
        grad_hook: GradHook | None = None,
        scale: InputScale | None = None,
    ) -> None:
        params = list(model.parameters())
        self.scale = scale
        self.model = model
        self.plan = p
        self.program = native.program(p.calls())
        self.drops = [b.drop for b in p.blocks if b.drop is not None]
        self.weights = [q.detach() for q in params]
        self.grads = [torch.zeros_like(q) for q in params]
        self.state = [s.detach() for s in model.buffers()]  # BatchNormalization's moving stats
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
            out.append(channels_last(m))
        return out

    def __call__(
        self, xb: torch.Tensor, yb: torch.Tensor, denom: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update the weights on (xb (N, C, H, W) float32 inputs or uint8 values, yb (N,));
        returns (sum of losses, hits). ``denom``: the batch the loss is averaged over."""
        n = xb.shape[0]
        masks = self.masks(n)
        loss, hits = self.program.gradients(
            kernel_inputs(xb, self.scale), yb, self.weights, self.grads, masks, self.state,
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
    convolution block the kernels compute here, with its pooled size, as the engine choice
    has it (:func:`cnnlab.engine.choice.for_model`). Empty where they do not run (a GPU, no
    compiler, ``use_native=False``)."""
    return dict(for_model(model, native=use_native is not False).blocks)


def native_logits(
    model: nn.Module, p: Plan, x: torch.Tensor, scale: InputScale | None = None
) -> torch.Tensor:
    """Evaluation-mode logits through the kernels: (N, C, H, W) -> (N, classes)."""
    weights = [q.detach() for q in model.parameters()]
    state = [s.detach() for s in model.buffers()]
    program = native.program(p.calls())
    return program.logits(kernel_inputs(x, scale), weights, state)

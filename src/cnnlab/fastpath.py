"""The chapter's recipe with the per-step overhead removed; the same arithmetic, faster.

Where the time of a plain PyTorch step on a CPU goes at batch 32 is mostly not the
arithmetic: the autograd graph, MKL-DNN's slow single-input-channel convolution, ReLU on
the full-size maps, max pooling on channels-first maps (a slow kernel), Adam's Python loop.
This module computes the same function and the same gradients another way:

- every feature map is channels-last (N, H, W, C) in memory, where MKL-DNN's convolution
  and PyTorch's max pooling are fastest;
- ReLU runs after max pooling, on a quarter of the values: ``max(relu(a)) == relu(max(a))``
  exactly, and the gradient reaches the same pixel (shown in ``tests/test_fastpath.py``);
- a convolution with one input channel (every case's first layer) is one matrix product
  over the nine shifted copies of the image;
- Case 1 has a hand-written backward pass (no autograd graph) and Adam runs as one fused
  kernel (``torch._fused_adam_``) on the optimiser's own state, so checkpoints and resume
  work unchanged; Cases 2 and 3 use autograd on the same fast forward;
- dropout draws its masks with the same calls, in the same order, as ``nn.Dropout``, so a
  seeded run follows the plain loop's random path;
- nothing in the loop waits for the host: loss and hits are summed on the device.

On a CPU, Case 1's step runs through cnnlab's C++ kernels (:mod:`cnnlab.native`) where they
build: the same arithmetic again, with the small layers fused and conv2's backward pass
summed over its nonzero gradients only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import native

CL = torch.channels_last
DROPOUT_KEEP = 0.75  # the chapter's Dropout(0.25)
EVAL_CHUNK = 128  # images per forward pass in evaluation (measured: 128 beats 32 to 3000)
CASE1_LAYERS = ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten"]
CASE1_LAYERS += ["dropout1", "dense1", "relu3", "dropout2", "dense2"]


@dataclass
class EpochSums:
    """Per-epoch sums kept on the device; a data-parallel run all-reduces these."""

    loss: torch.Tensor  # float64 scalar: sum of per-sample losses
    hits: torch.Tensor  # int64 scalar: correct predictions
    count: int

    def means(self) -> tuple[float, float]:
        return self.loss.item() / self.count, self.hits.item() / self.count


def as_float_images(x: torch.Tensor) -> torch.Tensor:
    """Images as float32 in [0, 1]: uint8 ones are scaled here, on the device, batch by batch.

    ``uint8 / 255`` in float32 is the value :func:`cnnlab.data.scale` computes, bit for bit.
    """
    return x.to(torch.float32).div_(255) if x.dtype == torch.uint8 else x


def conv_single_channel(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A valid, stride-1 convolution of one-channel images as one matrix product.

    (N, 1, H, W) -> (N, O, H-kh+1, W-kw+1), channels-last in memory. Differentiable in
    ``weight`` and ``bias`` (the images never need a gradient).
    """
    n, _, h, w = x.shape
    out_c, _, kh, kw = weight.shape
    oh, ow = h - kh + 1, w - kw + 1
    img = x.reshape(n, h, w)
    # (kh*kw, N, oh, ow): the shifted copies, in the weight's (i, j) order
    cols = torch.stack([img[:, i : i + oh, j : j + ow] for i in range(kh) for j in range(kw)])
    out = torch.addmm(bias, cols.view(kh * kw, -1).t(), weight.view(out_c, -1).t())
    return out.view(n, oh, ow, out_c).permute(0, 3, 1, 2)  # (N, O, oh, ow) channels-last


def _is_plain_conv(m: nn.Module) -> bool:
    return (
        isinstance(m, nn.Conv2d)
        and m.in_channels == 1
        and m.groups == 1
        and m.stride == (1, 1)
        and m.dilation == (1, 1)
        and m.padding in ((0, 0), "valid")
        and m.bias is not None
    )


def fast_forward(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` computed the fast way: channels-last, ReLU after pooling. (N, 1, H, W) in."""
    layers = list(model.children())
    h = x.contiguous(memory_format=CL)
    i = 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, nn.ReLU) and isinstance(nxt, nn.MaxPool2d):
            h = torch.relu(nxt(h))  # same values and gradients, a quarter of the work
            i += 2
            continue
        if _is_plain_conv(layer):
            assert isinstance(layer, nn.Conv2d) and layer.bias is not None
            h = conv_single_channel(h, layer.weight, layer.bias)
        else:
            h = layer(h)
        i += 1
    return h


class FusedAdam:
    """Adam's update as one fused kernel on the state of a ``torch.optim.Adam``.

    The optimiser object keeps its state (``step``, ``exp_avg``, ``exp_avg_sq``), so its
    ``state_dict`` is what the plain loop saves and resumes from. On a CPU the update is
    cnnlab's C++ loop (:mod:`cnnlab.native`; measured on Case 1's weights: 30 against 46
    µs alone, ~50 µs less per training step) where the kernels build, else
    ``torch._fused_adam_``; ``use_native`` forces one or the other.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        params: Sequence[torch.Tensor],
        use_native: bool | None = None,
    ) -> None:
        group = optimizer.param_groups[0]
        if group["amsgrad"] or group["weight_decay"] or group["maximize"]:
            raise ValueError("the fast path implements plain Adam only")
        self.group = group
        self.params = [p.detach() for p in params]
        states = [optimizer.state[p] for p in params]
        for p, st in zip(params, states, strict=True):
            if not st:  # what Adam's first step creates, with fused=True's dtypes
                st["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            elif st["step"].device != p.device or st["step"].dtype != torch.float32:
                st["step"] = st["step"].to(device=p.device, dtype=torch.float32)
        self.steps = [st["step"] for st in states]
        self.exp_avgs = [st["exp_avg"] for st in states]
        self.exp_avg_sqs = [st["exp_avg_sq"] for st in states]
        flat = all(
            p.device.type == "cpu" and p.dtype == torch.float32 and p.is_contiguous()
            for p in self.params
        )
        if use_native and not (flat and native.load()):
            raise ValueError("cnnlab's C++ Adam needs contiguous float32 CPU weights and kernels")
        self.native = flat and native.load() if use_native is None else use_native

    def step(self, grads: list[torch.Tensor]) -> None:
        g = self.group
        beta1, beta2 = g["betas"]
        if self.native:
            torch.ops.cnnlab.adam_step(
                self.params,
                grads,
                self.exp_avgs,
                self.exp_avg_sqs,
                self.steps,
                float(g["lr"]),
                beta1,
                beta2,
                g["eps"],
            )
            return
        torch._foreach_add_(self.steps, 1)
        torch._fused_adam_(
            self.params,
            grads,
            self.exp_avgs,
            self.exp_avg_sqs,
            [],
            self.steps,
            amsgrad=False,
            lr=float(g["lr"]),
            beta1=beta1,
            beta2=beta2,
            weight_decay=0.0,
            eps=g["eps"],
            maximize=False,
        )


def dropout_mask(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """The scaled mask ``nn.Dropout(0.25)`` draws for an input of ``shape`` (0 or 1/0.75).

    ``native_dropout`` is what ``nn.Dropout`` runs on a GPU, and on a CPU it draws exactly
    as ``nn.Dropout`` does there (``bernoulli_(0.75)`` on a tensor of that shape): a
    seeded fast run follows the plain loop's random path on either device.
    """
    ones = torch.ones(shape, dtype=like.dtype, device=like.device)
    return torch.native_dropout(ones, 1 - DROPOUT_KEEP, True)[0]


def case1_weights(model: nn.Module) -> list[torch.Tensor] | None:
    """Case 1's eight weight tensors in layer order, or None if ``model`` is not Case 1."""
    names = [n for n, _ in model.named_children()]
    if names != CASE1_LAYERS:
        return None
    return [
        getattr(model, layer).get_parameter(kind)
        for layer in ("conv1", "conv2", "dense1", "dense2")
        for kind in ("weight", "bias")
    ]


@torch.inference_mode()
def fast_logits(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Logits of ``model`` in evaluation mode (no dropout): (N, 1, 28, 28) -> (N, 10).

    Works through ``x`` in chunks of ``EVAL_CHUNK`` images, small enough for the
    intermediate maps to stay in the CPU's cache (per-image results do not depend on it).
    """
    from cnnlab.fastcase1 import case1_logits

    weights = case1_weights(model)
    images = x.reshape(x.shape[0], 1, x.shape[-2], x.shape[-1])
    out = []
    for i in range(0, len(images), EVAL_CHUNK):
        chunk = images[i : i + EVAL_CHUNK]
        if weights is None:
            out.append(fast_forward(model, as_float_images(chunk)))
        else:
            out.append(case1_logits([w.detach() for w in weights], chunk[:, 0]))
    return torch.cat(out)


GradHook = Callable[[list[torch.Tensor]], None]


class AutogradStep:
    """Any case: autograd on :func:`fast_forward`, then the fused Adam kernel.

    ``grad_hook(grads)``, if given, runs between the backward pass and Adam (where a
    data-parallel run sums the gradients of its processes).
    """

    def __init__(
        self,
        model: nn.Sequential,
        optimizer: torch.optim.Optimizer,
        grad_hook: GradHook | None = None,
        use_native: bool | None = None,
    ) -> None:
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.adam = FusedAdam(optimizer, self.params, use_native)
        self.grad_hook = grad_hook

    def __call__(
        self, xb: torch.Tensor, yb: torch.Tensor, denom: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = fast_forward(self.model, as_float_images(xb).unsqueeze(1))
        loss_sum = F.cross_entropy(logits, yb, reduction="sum")
        for p in self.params:
            p.grad = None
        (loss_sum / (denom or xb.shape[0])).backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        if self.grad_hook is not None:
            self.grad_hook(grads)
        self.adam.step(grads)
        return loss_sum.detach().double(), (logits.detach().argmax(1) == yb).sum()


Step = Callable[[torch.Tensor, torch.Tensor, int | None], tuple[torch.Tensor, torch.Tensor]]


def make_step(
    model: nn.Sequential,
    optimizer: torch.optim.Optimizer,
    grad_hook: GradHook | None = None,
    use_native: bool | None = None,
) -> Step:
    """The fastest faithful step for ``model``: hand-written for Case 1, autograd otherwise.

    ``use_native`` picks cnnlab's C++ kernels (True: Case 1's step and Adam) or PyTorch
    operations only (False); None takes the kernels whenever they run here
    (:mod:`cnnlab.native`).
    """
    from cnnlab.fastcase1 import Case1Step

    if case1_weights(model) is not None:
        return Case1Step(model, optimizer, grad_hook, use_native)
    return AutogradStep(model, optimizer, grad_hook, use_native)


def run_epoch(
    step: Step,
    x: torch.Tensor,
    y: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    *,
    on_batch: Callable[[int, EpochSums], Any] | None = None,
    shard: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> EpochSums:
    """One pass over ``x[order]`` in mini-batches; x: (N, 1, 28, 28) float32 or uint8
    (the step scales uint8 batches).

    ``on_batch(batch_len, sums)`` is called after each step (for a progress bar).
    ``shard(batch_indices)`` picks this process's share of each global batch (data
    parallel): the loss is still averaged over the global batch, and the returned sums
    are this process's, to be all-reduced (``count`` is the global number of samples).
    """
    model = getattr(step, "model", None)
    if isinstance(model, nn.Module):
        model.train()
    images = x.reshape(x.shape[0], x.shape[-2], x.shape[-1])  # (N, 28, 28), a view
    sums = EpochSums(
        loss=torch.zeros((), dtype=torch.float64, device=x.device),
        hits=torch.zeros((), dtype=torch.int64, device=x.device),
        count=len(order),
    )
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        denom = len(idx)
        if shard is not None:
            idx = shard(idx)
        xb = images.index_select(0, idx)
        loss, hits = step(xb, y.index_select(0, idx), denom)
        sums.loss += loss
        sums.hits += hits
        if on_batch is not None:
            on_batch(denom, sums)
    return sums

"""The chapter's recipe with the per-step overhead removed; the same arithmetic, faster.

Where the time of a plain PyTorch step on a CPU goes at batch 32 is mostly not the
arithmetic: the autograd graph, MKL-DNN's slow single-input-channel convolution, ReLU on
the full-size maps, max pooling on channels-first maps (a slow kernel), Adam's Python loop.
This module computes the same function and the same gradients another way:

- every feature map is channels-last (N, H, W, C) in memory, where MKL-DNN's convolution
  and PyTorch's max pooling are fastest;
- BatchNormalization runs as PyTorch's fused kernel, with Keras' moving statistics
  (:mod:`cnnlab.engine.batchnorm`);
- ReLU runs after max pooling, on a quarter of the values: ``max(relu(a)) == relu(max(a))``
  exactly, and the gradient reaches the same pixel (shown in ``tests/engine/test_fastpath.py``);
- a convolution with one input channel (every case's first layer) is one matrix product
  over the nine shifted copies of the image;
- Adam runs as one fused kernel on the optimiser's own state, so checkpoints and resume
  work unchanged;
- dropout draws its masks with the same calls, in the same order, as ``nn.Dropout``, so a
  seeded run follows the plain loop's random path;
- nothing in the loop waits for the host: loss and hits are summed on the device.

On a CPU, where cnnlab's C++ kernels build (:mod:`cnnlab.engine.native`), a network whose
every block has a kernel (the kinds are listed once, in :mod:`cnnlab.engine.plan`, and
declared as ``csrc/program.h``'s structs; the chapter's three cases and residual graphs such
as ``resnet1d`` among them) runs its whole step through them (:mod:`cnnlab.engine.blocks`),
with a hand-written backward pass (no autograd graph): the same arithmetic again, with the
small layers fused and each convolution's backward pass summed over its nonzero gradients
only. Any other network uses autograd on :func:`fast_forward`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data.scaling import InputScale
from cnnlab.engine import heap
from cnnlab.engine.adam import FusedAdam
from cnnlab.engine.batchnorm import batch_norm
from cnnlab.engine.blocks import NativeStep, conv_pool_relu, native_logits
from cnnlab.engine.choice import EngineChoice, for_model
from cnnlab.engine.plan import exact
from cnnlab.engine.tensors import CL, GradHook, as_inputs
from cnnlab.models import Network
from cnnlab.models import layers as L
from cnnlab.models.layers import INPUT
from cnnlab.models.torch_module import BatchNorm, activate

EVAL_CHUNK = 128  # images per forward pass in evaluation (measured: 128 beats 32 to 3000)


@dataclass
class EpochSums:
    """Per-epoch sums kept on the device; a data-parallel run all-reduces these."""

    loss: torch.Tensor  # float64 scalar: sum of per-sample losses
    hits: torch.Tensor  # int64 scalar: correct predictions
    count: int

    def means(self) -> tuple[float, float]:
        return self.loss.item() / self.count, self.hits.item() / self.count


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


def _single_channel(layer: L.Layer, in_shape: tuple[int, ...]) -> bool:
    """A 2-D convolution that :func:`conv_single_channel` computes: one input channel,
    valid, stride 1, undilated, with a bias."""
    return (
        exact(layer, L.Conv)
        and layer.rank == 2
        and in_shape[-1] == 1
        and layer.padding == "valid"
        and layer.strides == (1, 1)
        and layer.dilation_rate == (1, 1)
        and layer.use_bias
    )


def _relu_then_max_pool(layer: L.Layer, nxt: L.Layer | None) -> bool:
    """A ReLU convolution followed by valid max pooling: ``relu(max(a)) == max(relu(a))``."""
    return (
        exact(layer, L.Conv)
        and layer.activation == "relu"
        and exact(nxt, L.Pool)
        and nxt.kind == "max"
        and nxt.padding == "valid"
    )


def fast_forward(
    model: Network, x: torch.Tensor, blocks: dict[int, tuple[int, int]] | None = None
) -> torch.Tensor:
    """``model(x)`` computed the fast way: channels-last, ReLU after pooling. (N, C, ...) in.

    Walks the network's description, chain or graph: any layer it has no faster form for
    runs as the network's own module. ``blocks`` (:func:`cnnlab.engine.blocks.kernel_blocks`):
    the convolution blocks that run through cnnlab's kernels, by their first layer's index.
    """
    desc = model.description
    plan = desc.logits
    layers = list(plan.layers)  # a final Dense's linear copy where the loss takes the softmax
    index = {info.layer.name: i for i, info in enumerate(desc.info)}
    left = {name: len(readers) for name, readers in desc.consumers.items()}
    outs = {INPUT: x.contiguous(memory_format=CL) if x.ndim == 4 else x}
    k = 0
    while k < len(layers):
        layer = layers[k]
        info, module = desc.by_name[layer.name], model._modules[layer.name]
        nxt = layers[k + 1] if k + 1 < len(layers) else None
        # the next layer, where it alone reads this one (so the two may run as one)
        alone = nxt if nxt is not None and desc.consumers[layer.name] == (nxt.name,) else None
        hs = [outs[n] for n in info.inputs]
        for n in info.inputs:
            left[n] -= 1
            if left[n] == 0 and n != plan.output:
                outs.pop(n, None)
        step = 1
        if not exact(layer, L.Conv):
            h = batch_norm(module, hs[0]) if isinstance(module, BatchNorm) else module(*hs)
        elif blocks and index[layer.name] in blocks and alone is not None:
            # conv + bias + relu + 2x2 max pooling, one kernel
            assert isinstance(module, nn.Conv2d) and module.bias is not None
            h = conv_pool_relu(hs[0], module.weight, module.bias, *blocks[index[layer.name]])
            step = 2
        else:
            assert isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d)
            if _single_channel(layer, info.in_shape):
                assert module.bias is not None
                h = conv_single_channel(hs[0], module.weight, module.bias)
            else:
                pads = getattr(module, "pads", None)
                h = module._conv_forward(
                    F.pad(hs[0], pads) if pads else hs[0], module.weight, module.bias
                )
            if alone is not None and _relu_then_max_pool(layer, alone):
                # same values and gradients, a quarter of the work
                h = torch.relu(model._modules[alone.name](h))
                step = 2
            else:
                h = activate(h, layer.activation)
        if step == 2:
            assert nxt is not None
            left[layer.name] -= 1
            layer = nxt
        outs[layer.name] = h
        k += step
    return outs[plan.output]


@torch.inference_mode()
def fast_logits(
    model: Network,
    x: torch.Tensor,
    scale: InputScale | None = None,
    choice: EngineChoice | None = None,
) -> torch.Tensor:
    """Logits of ``model`` in evaluation mode (no dropout): (N, C, ...) -> (N, classes);
    ``scale``: how uint8 inputs become network inputs; ``choice``: the run's engine
    (:mod:`cnnlab.engine.choice`; None: resolved for ``model`` with the kernels allowed).

    Works through ``x`` in chunks of ``EVAL_CHUNK`` inputs, small enough for the
    intermediate maps to stay in the CPU's cache (per-input results do not depend on it).
    """
    choice = choice or for_model(model)
    whole = choice.whole if x.device.type == "cpu" else None
    blocks = choice.blocks if x.device.type == "cpu" else {}
    out = []
    for i in range(0, len(x), EVAL_CHUNK):
        chunk = x[i : i + EVAL_CHUNK]
        if whole is None:
            out.append(fast_forward(model, as_inputs(chunk, scale), dict(blocks)))
        else:
            out.append(native_logits(model, whole, chunk, scale))
    return torch.cat(out)


class AutogradStep:
    """Any case: autograd on :func:`fast_forward`, then the fused Adam kernel.

    ``grad_hook(grads)``, if given, runs between the backward pass and Adam (where a
    data-parallel run sums the gradients of its processes).
    """

    def __init__(
        self,
        model: Network,
        optimizer: torch.optim.Optimizer,
        grad_hook: GradHook | None = None,
        choice: EngineChoice | None = None,
        scale: InputScale | None = None,
    ) -> None:
        choice = choice or for_model(model)
        self.model = model
        self.scale = scale
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.adam = FusedAdam(optimizer, self.params, None if choice.adam else False)
        self.grad_hook = grad_hook
        self.blocks = dict(choice.blocks)  # the blocks the kernels compute, as chosen

    def __call__(
        self, xb: torch.Tensor, yb: torch.Tensor, denom: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = fast_forward(self.model, as_inputs(xb, self.scale), self.blocks)
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
    model: Network,
    optimizer: torch.optim.Optimizer,
    grad_hook: GradHook | None = None,
    use_native: bool | None = None,
    scale: InputScale | None = None,
    *,
    choice: EngineChoice | None = None,
) -> Step:
    """The training step of ``model`` as the run's engine choice says
    (:mod:`cnnlab.engine.choice`, decided there and only there).

    The whole step in C++ (:class:`NativeStep`) where the choice says so; otherwise
    autograd on :func:`fast_forward`, with the chosen kernel blocks inside. ``choice``: the
    run's (what ``cnnlab train`` passes); None resolves one for ``model`` here, with
    ``use_native``: True requires the kernels, False forbids them, None takes them where they
    run. ``scale``: how uint8 batches become network inputs (the run's, decided once).
    """
    if choice is None:
        choice = for_model(model, native=use_native is not False)
        if use_native and not choice.kernels:
            raise ValueError("cnnlab's C++ kernels do not run here (CPU only; see the warning)")
    if choice.heap:
        heap.keep()
    if choice.whole is not None:
        return NativeStep(model, optimizer, choice.whole, grad_hook, scale)
    return AutogradStep(model, optimizer, grad_hook, choice, scale)


def run_batches(
    step: Step,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, int]],
    count: int,
    device: torch.device,
    *,
    on_batch: Callable[[int, EpochSums], Any] | None = None,
) -> EpochSums:
    """One pass of ``step`` over ``batches`` ((inputs, labels, global batch size) each, as
    :meth:`cnnlab.engine.feed.Feed.batches` gives them); ``count``: the samples in the pass.

    ``on_batch(batch_len, sums)`` is called after each step (for a progress bar). Under data
    parallelism each batch is this process's share of a global batch: the loss is still
    averaged over the global batch, and the sums returned are this process's, to be
    all-reduced (``count`` is the global number of samples).
    """
    model = getattr(step, "model", None)
    if isinstance(model, nn.Module):
        model.train()
    sums = EpochSums(
        loss=torch.zeros((), dtype=torch.float64, device=device),
        hits=torch.zeros((), dtype=torch.int64, device=device),
        count=count,
    )
    for xb, yb, denom in batches:
        loss, hits = step(xb, yb, denom)
        sums.loss += loss
        sums.hits += hits
        if on_batch is not None:
            on_batch(denom, sums)
    return sums


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
    """:func:`run_batches` over ``x[order]`` in mini-batches of tensors on one device;
    x: (N, C, *spatial) float32 or uint8 (the step scales uint8 batches).
    ``shard(batch_indices)`` picks this process's share of each global batch."""

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            mine = shard(idx) if shard is not None else idx
            yield x.index_select(0, mine), y.index_select(0, mine), len(idx)

    return run_batches(step, batches(), len(order), x.device, on_batch=on_batch)

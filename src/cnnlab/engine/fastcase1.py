"""Case 1's training step written out by hand: forward, backward and Adam, no autograd.

Shapes for a batch of N: image (N, 28, 28) -> conv1 (N, 24, 24, 16) -> pool+relu
(N, 12, 12, 16) -> conv2 (N, 10, 10, 64) -> pool+relu (N, 5, 5, 64) -> flatten 1600
(Keras' H, W, C order) -> dropout -> dense 32 + relu -> dropout -> dense 10 (logits).
Every map is channels-last in memory.

Why 24 and 10 and not the chapter's 26 and 11: 2x2 max pooling drops the last row and
column of an odd-sized map (11 -> 5), so conv2's row and column 10 never reach the
output, nor do conv1's rows and columns 24-25 (they feed only pool1's row 12, which feeds
only conv2's row 10). Leaving them out gives the same values and gradients with 17% less
arithmetic.

The dropout masks are drawn by the same calls as ``nn.Dropout``, in the same order, so a
seeded run follows the plain loop's random path.

On a CPU, when cnnlab's C++ kernels build (:mod:`cnnlab.engine.native`), the step runs through
them: the same arithmetic, with the small layers fused (``csrc/case1.cpp``). The functions
here are the PyTorch version, used elsewhere (a GPU, no compiler) and as their reference.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.engine import native
from cnnlab.engine.adam import FusedAdam
from cnnlab.engine.tensors import CL, DROPOUT_KEEP, GradHook, as_float_images, dropout_mask
from cnnlab.models import ModelDescription, parse_compact

# The one network whose whole step the C++ kernel computes: its shapes are compiled into
# csrc/case1.cpp (16 and 64 filters, 1600 features, ...). A description matches when it
# computes exactly this, whatever its layers are called; any other runs layer by layer.
KERNEL_NETWORK = (
    "Input(28,28,1) Conv2D(16,3,relu) MaxPooling2D(2) Conv2D(64,3,relu) MaxPooling2D(2) "
    "Flatten Dropout(0.25) Dense(32,relu) Dropout(0.25) Dense(10,softmax)"
)


@cache
def _kernel_layers() -> tuple[dict[str, Any], ...]:
    return tuple(_structure(parse_compact(KERNEL_NETWORK)))


def _structure(desc: ModelDescription) -> list[dict[str, Any]]:
    """The description without its layer names: what the network computes."""
    return [{"input": list(desc.input_shape)}] + [
        {k: v for k, v in layer.to_dict().items() if k != "name"} for layer in desc.layers
    ]


def matches_kernel(desc: ModelDescription) -> bool:
    """Whether ``desc`` computes exactly the network the whole-step kernel was written for."""
    return tuple(_structure(desc)) == _kernel_layers()


def case1_weights(model: nn.Module) -> list[torch.Tensor] | None:
    """The kernel network's eight weight tensors in layer order, or None if ``model``
    computes anything else."""
    desc = getattr(model, "description", None)
    if not isinstance(desc, ModelDescription) or not matches_kernel(desc):
        return None
    return list(model.parameters())


def case1_features(
    xb: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2c: torch.Tensor, b2: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Image (N, 28, 28) -> flattened features (N, 1600), with what the backward pass needs.

    ``w2c`` is conv2's kernel in channels-last memory. Returns
    (cols, c1, i1, a1, c2, i2, f): the nine shifted images, conv1's output and pool
    indices, pool1+relu's output, conv2's output and pool indices, the features.
    """
    n = xb.shape[0]
    cols = torch.stack([xb[:, i : i + 24, j : j + 24] for i in range(3) for j in range(3)])
    cols = cols.view(9, -1)  # (9, N*24*24)
    c1 = torch.addmm(b1, cols.t(), w1.view(16, 9).t())  # (N*24*24, 16)
    c1 = c1.view(n, 24, 24, 16).permute(0, 3, 1, 2)  # (N, 16, 24, 24) channels-last
    p1, i1 = F.max_pool2d_with_indices(c1, (2, 2))
    a1 = p1.relu_()  # (N, 16, 12, 12); relu after pooling: same values, a quarter the work
    c2 = F.conv2d(a1, w2c, b2)  # (N, 64, 10, 10)
    p2, i2 = F.max_pool2d_with_indices(c2, (2, 2))
    f = p2.relu_().permute(0, 2, 3, 1).reshape(n, 1600)  # Keras' (H, W, C) flatten
    return cols, c1, i1, a1, c2, i2, f


def case1_logits(weights: list[torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
    """Evaluation-mode logits (no dropout): (N, 28, 28) float32 or uint8 -> (N, 10)."""
    if xb.device.type == "cpu" and native.load():
        return torch.ops.cnnlab.case1_logits(xb.contiguous(), weights)
    xb = as_float_images(xb)
    w1, b1, w2, b2, w3, b3, w4, b4 = weights
    f = case1_features(xb, w1, b1, w2.contiguous(memory_format=CL), b2)[-1]
    return torch.addmm(b4, torch.addmm(b3, f, w3.t()).relu_(), w4.t())


def _pool_backward(grad: torch.Tensor, inp: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.max_pool2d_with_indices_backward(
        grad, inp, [2, 2], [2, 2], [0, 0], [1, 1], False, indices
    )


def case1_gradients(
    weights: list[torch.Tensor],
    grads: list[torch.Tensor],
    xb: torch.Tensor,
    yb: torch.Tensor,
    m1: torch.Tensor,
    m2: torch.Tensor,
    denom: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Write d(sum of losses / denom)/d(weights) into ``grads``; returns (loss sum, hits).

    ``m1`` (N, 1600) and ``m2`` (N, 32) are the scaled dropout masks.
    """
    w1, b1, w2, b2, w3, b3, w4, b4 = weights
    gw1, gb1, gw2, gb2, gw3, gb3, gw4, gb4 = grads
    n = xb.shape[0]
    w2c = w2.contiguous(memory_format=CL)
    cols, c1, i1, a1, c2, i2, f = case1_features(xb, w1, b1, w2c, b2)
    d1 = f * m1
    h = torch.addmm(b3, d1, w3.t()).relu_()  # (N, 32)
    d2 = h * m2
    logits = torch.addmm(b4, d2, w4.t())  # (N, 10)
    logp = torch.log_softmax(logits, 1)
    rows = torch.arange(n, device=xb.device)
    loss_sum = -logp[rows, yb].sum()
    hits = (logits.argmax(1) == yb).sum()
    # backward: d(cross-entropy)/d(logits) = softmax - one-hot
    g = logp.exp_()
    g[rows, yb] -= 1
    g.div_(denom)  # (N, 10)
    torch.mm(g.t(), d2, out=gw4)
    torch.sum(g, 0, out=gb4)
    gh = (g @ w4).mul_(m2).mul_(h.sign())  # relu: h >= 0, so its sign is the 0/1 mask
    torch.mm(gh.t(), d1, out=gw3)
    torch.sum(gh, 0, out=gb3)
    gf = (gh @ w3).mul_(m1).mul_(f.sign())  # (N, 1600)
    gc2 = _pool_backward(gf.view(n, 5, 5, 64).permute(0, 3, 1, 2), c2, i2)
    ga1, gw2_, gb2_ = torch.ops.aten.convolution_backward(
        gc2, a1, w2c, [64], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, True, True]
    )
    gw2.copy_(gw2_)  # channels-last -> the parameter's own layout
    gb2.copy_(gb2_)
    gc1 = _pool_backward(ga1.mul_(a1.sign()), c1, i1)  # (N, 16, 24, 24) channels-last
    gm = gc1.permute(0, 2, 3, 1).reshape(-1, 16)
    torch.mm(gm.t(), cols.t(), out=gw1.view(16, 9))
    torch.sum(gm, 0, out=gb1)
    return loss_sum.double(), hits


class Case1Step:
    """One training step of Case 1 (forward, backward, Adam) for ``run_epoch``."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        grad_hook: GradHook | None = None,
        use_native: bool | None = None,
    ) -> None:
        params = case1_weights(model)
        if params is None:
            raise ValueError("Case1Step needs the Case 1 network")
        self.model = model
        self.weights = [p.detach() for p in params]
        self.grads = [torch.zeros_like(p) for p in params]
        self.grad_hook = grad_hook  # between backward and Adam (a data-parallel all-reduce)
        # the C++ kernels when they run here (None: whenever they build), else PyTorch ops
        runs_here = params[0].device.type == "cpu" and native.load()
        if use_native and not runs_here:
            raise ValueError("cnnlab's C++ kernels do not run here (CPU only; see the warning)")
        self.adam = FusedAdam(optimizer, params, use_native)
        self.native = runs_here if use_native is None else use_native
        self.native_masks = self.native and native.exact_dropout()

    def __call__(
        self, xb: torch.Tensor, yb: torch.Tensor, denom: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update the weights on (xb (N, 1, 28, 28), yb (N,)); returns (sum of losses, hits).

        ``xb`` is float32 in [0, 1] or uint8 (scaled here). ``denom`` is the batch size the
        loss is averaged over (default N; a data-parallel shard passes the global batch size).
        """
        n = xb.shape[0]
        xb = xb.reshape(n, xb.shape[-2], xb.shape[-1])  # (N, 1, 28, 28) -> (N, 28, 28), a view
        # nn.Dropout's draws, in its order: dropout1 (N, 1600), then dropout2 (N, 32)
        if self.native_masks:
            m1 = torch.ops.cnnlab.dropout_mask([n, 1600], DROPOUT_KEEP)
            m2 = torch.ops.cnnlab.dropout_mask([n, 32], DROPOUT_KEEP)
        else:
            m1 = dropout_mask((n, 1600), self.weights[0])
            m2 = dropout_mask((n, 32), self.weights[0])
        if self.native:
            loss, hits = torch.ops.cnnlab.case1_gradients(
                xb.contiguous(), yb, self.weights, self.grads, m1, m2, denom or n
            )
        else:
            xb = as_float_images(xb)
            loss, hits = case1_gradients(self.weights, self.grads, xb, yb, m1, m2, denom or n)
        if self.grad_hook is not None:
            self.grad_hook(self.grads)
        self.adam.step(self.grads)
        return loss, hits

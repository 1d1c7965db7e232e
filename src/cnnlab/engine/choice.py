"""The engine of a run, decided once: which blocks run in cnnlab's C++ kernels, which in PyTorch.

:func:`resolve` reads the run's settings (``engine``, ``native``), the device and the network
description (its input shape included) and returns one frozen :class:`EngineChoice`. The
training step (:func:`cnnlab.engine.fastpath.make_step`), Adam, evaluation
(:func:`cnnlab.engine.fastpath.fast_logits`) and the run's ``config.json`` all read that
value; none of them decides again. ``native=False`` or ``engine="plain"`` therefore means no
C++ kernel anywhere in the run, evaluation included.

Which blocks the kernels *can* compute is :func:`cnnlab.engine.plan.plan`'s answer; whether
they *should* is :func:`kernel_wins`, a rule measured against the PyTorch (oneDNN) path
(numbers in its docstring and ``benchmarks/README.md``): a kernel slower than PyTorch for a
block is not chosen. The whole step runs in C++ only when every block's kernel is chosen;
otherwise autograd runs the step, with the chosen ``conv_pool_relu`` kernels inside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cnnlab.engine import heap
from cnnlab.engine import native as native_lib
from cnnlab.engine.plan import KERNEL, PYTORCH, Block, Plan, mixed_kernel, plan
from cnnlab.models import ModelDescription

FAST, PLAIN = "fast", "plain"


@dataclass(frozen=True)
class EngineChoice:
    """How a run computes, decided once (:func:`resolve`) and read by every part of it."""

    engine: str = FAST  # "fast" (cnnlab.engine.fastpath) or "plain" (the reference loop)
    kernels: bool = False  # cnnlab's C++ kernels may run: fast, native, a CPU, built here
    whole: Plan | None = None  # the plan, when the whole step runs in C++ (NativeStep)
    blocks: Mapping[int, tuple[int, int]] = field(default_factory=dict)  # mixed step:
    # the conv_pool_relu kernels by their first layer's index, with their pooled size
    adam: bool = False  # Adam's update in C++ (else torch._fused_adam_)
    layers: Mapping[str, str] = field(default_factory=dict)  # layer -> "cnnlab" / "pytorch"
    reasons: tuple[str, ...] = ()  # why each kernel that could run does or does not
    heap: bool = False  # glibc's heap kept between steps (cnnlab.engine.heap): fast, a CPU

    @property
    def fast(self) -> bool:
        return self.engine == FAST

    def to_dict(self) -> dict[str, Any]:
        """The choice as ``config.json`` records it."""
        return {
            "engine": self.engine,
            "kernels": self.kernels,
            "whole_step_in_kernels": self.whole is not None,
            "adam_in_kernels": self.adam,
            "heap_kept": self.heap,
            "reasons": list(self.reasons),
        }


# The rule's thresholds, from benchmarks/bench_blocks.py (see kernel_wins)
CONV_POOL_MAX_PIXELS = 32 * 32  # conv_pool_relu in the whole C++ step: input maps up to 32x32
MIXED_MAX_VALUES = 8192  # conv_pool_relu inside an autograd step: H * W * Cout up to 8192
DENSE_SLOW_INPUTS = (4096, 8192)  # dense: a window of input sizes where the kernel lost


def kernel_wins(desc: ModelDescription, b: Block, whole: bool = True) -> tuple[bool, str]:
    """Whether block ``b``'s kernel is chosen over the PyTorch path, and why.

    ``whole``: in the whole C++ step (else as an autograd node in a PyTorch step).
    Measured per block kind, a training step at batch 32 of ``Conv2D(C, 1)``, the block,
    global average pooling and a Dense, kernels over PyTorch's time (``bench_blocks.py``,
    2-core Xeon, AVX-512, 2 threads, load 0.9 at the start, 3.5 at the end; below 1 the
    kernel is faster):

    - ``conv_pool_relu`` (cnnlab's own loops), whole step: 0.37-0.65 on 8x8 maps,
      0.58-0.85 on 16x16, 0.64-0.88 on 32x32, 1.27 on 64x64 (C=16): chosen up to
      ``CONV_POOL_MAX_PIXELS`` (32x32) input pixels;
    - ``conv_pool_relu`` in an autograd step: 0.76-0.96 up to 8,192 values per image
      (H * W * C: 8x8x128, 16x16x32), 1.04 at 16x16x64, 1.06 at 32x32x32, 1.68 at 64x64x16
      (0.87 at 32x32x16, left to PyTorch): chosen up to ``MIXED_MAX_VALUES``;
    - ``conv`` (MKL-DNN's convolution called from C++, with the ReLU fused): 0.45-0.84 from
      8x8 to 64x64 maps, C 16-128: always chosen;
    - ``batch_norm``, fused with the ReLU and the max pooling after it (``csrc/norm.cpp``),
      measured on a quiet machine, two runs: BN + ReLU 0.39-0.76 from 8x8 to 64x64 maps (C
      16-128) and 0.67 at 128x128 (C 16, 32); Conv 3x3 + BN + ReLU + pool 0.46-0.80 from 8x8
      to 64x64: always chosen. (The unfused kernels measured 0.47-0.92 quietly, 1.15 once at
      64x64; an earlier 1.06-1.14 at 32x32 and 64x64 was measured at load 3.5.)
    - ``dense`` (Flatten of S x S x C maps into 512 units, MKL's products and C++ Adam):
      0.47-0.99 at 1,024, 2,048 and 16,384 inputs, 0.40-0.85 at 32,768-65,536, but
      1.85-2.65 at 4,096 inputs (8x8x64, 16x16x16) and 1.35 at 8,192 (8x8x128); two more
      runs at load 6 gave 1.52-1.97 at 4,096 and, over S=8, 1.64-1.91 at 4,096-8,192
      against 0.73-0.92 at 1,536-3,072 and 12,288: left to PyTorch for
      ``DENSE_SLOW_INPUTS`` (4,096-8,192 inputs; why that window loses is not understood).
    - The other kinds (pooling, activations, dropout, flatten, global pooling, padding)
      move memory only and follow their neighbours.
    """
    info = desc.by_name[b.layers[0]]
    pixels = math.prod(info.in_shape[:-1]) if len(info.in_shape) > 1 else 0
    if b.kind == "conv_pool_relu" and whole:
        measure, limit = ("input pixels", pixels), CONV_POOL_MAX_PIXELS
    elif b.kind == "conv_pool_relu":
        measure, limit = ("H*W*C in autograd", pixels * info.out_shape[-1]), MIXED_MAX_VALUES
    elif b.kind == "dense":
        low, high = DENSE_SLOW_INPUTS
        won = not low <= info.in_shape[-1] <= high
        side = "kernel" if won else "PyTorch"
        return won, f"dense {b.layers[0]}: {side}, {info.in_shape[-1]} inputs vs {low}-{high}"
    else:
        return True, ""
    won = measure[1] <= limit
    shape = "x".join(map(str, info.in_shape))
    side = "kernel" if won else "PyTorch"
    return won, f"{b.kind} {b.layers[0]} ({shape}): {side}, {measure[0]} {measure[1]} vs {limit}"


def resolve(
    desc: ModelDescription,
    device: torch.device | str = "cpu",
    *,
    engine: str = FAST,
    native: bool = True,
    rule: bool = True,
    whole_step: bool = True,
    trainable: bool = True,
    float32: bool = True,
    available: bool | None = None,
) -> EngineChoice:
    """The engine of a run of ``desc`` on ``device``, decided here and only here.

    ``engine``/``native``: the run's settings (:class:`cnnlab.train.config.TrainConfig`).
    ``rule=False`` takes every kernel the plan has, ``whole_step=False`` never the whole
    step in C++ (a benchmark measuring them).
    ``trainable``: every weight has a gradient (the whole-step kernel updates them all);
    ``float32``: every weight is float32 (the kernels' only type). ``available``: whether
    the kernels load here (None: load them).
    """
    p = plan(desc)
    names = [*(n for b in p.blocks for n in b.layers), *p.folded]
    if engine == PLAIN:
        reason = "the plain engine: the network's own PyTorch modules"
        return EngineChoice(PLAIN, layers=dict.fromkeys(names, PYTORCH), reasons=(reason,))
    device = torch.device(device)
    on_cpu = device.type == "cpu"
    kept = on_cpu and heap.available()
    why = (
        "native=False" if not native
        else f"device {device.type}" if not on_cpu
        else "weights not float32" if not float32
        else "" if (native_lib.load() if available is None else available)
        else "the C++ kernels do not load here"
    )  # fmt: skip
    if why:
        layers = dict.fromkeys(names, PYTORCH)
        reason = f"PyTorch operations only ({why})"
        return EngineChoice(FAST, False, None, {}, False, layers, (reason,), kept)
    whole: Plan | None = None
    reasons: tuple[str, ...] = ()
    if whole_step and p.native and trainable:
        verdicts = [kernel_wins(desc, b) if rule else (True, "") for b in p.blocks]
        reasons = tuple(why for _, why in verdicts if why)
        whole = p if all(won for won, _ in verdicts) else None
    index = {info.layer.name: i for i, info in enumerate(desc.info)}
    blocks: dict[int, tuple[int, int]] = {}
    for b in p.blocks:  # the conv_pool_relu kernels of a step not all in C++ (or evaluation)
        if mixed_kernel(b):
            won, why = kernel_wins(desc, b, whole=False) if rule else (True, "")
            reasons += (why,) if why and whole is None else ()
            if won:
                blocks[index[b.layers[0]]] = b.pooled()
    layers = _layers(desc, p, whole, blocks)
    return EngineChoice(FAST, True, whole, blocks, True, layers, reasons, kept)


def _layers(
    desc: ModelDescription, p: Plan, whole: Plan | None, blocks: Mapping[int, tuple[int, int]]
) -> dict[str, str]:
    """Where each layer runs: all in the kernels with ``whole``, else the chosen blocks'."""
    starts = {desc.info[i].layer.name for i in blocks}
    layers: dict[str, str] = {}
    for b in p.blocks:
        ran = whole is not None or b.layers[0] in starts
        layers.update(dict.fromkeys(b.layers, KERNEL if ran else PYTORCH))
    layers.update(dict.fromkeys(p.folded, KERNEL if whole is not None else PYTORCH))
    return layers


def for_model(
    model: nn.Module, *, engine: str = FAST, native: bool = True, rule: bool = True
) -> EngineChoice:
    """:func:`resolve` for a built network, on the device its weights are on."""
    desc = getattr(model, "description", None)
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    if not isinstance(desc, ModelDescription) or any(q.device != device for q in params):
        return resolve_torch_only(engine)
    trainable = all(q.requires_grad for q in params)
    float32 = all(q.dtype == torch.float32 for q in params)
    return resolve(
        desc, device, engine=engine, native=native, rule=rule, trainable=trainable,
        float32=float32,
    )  # fmt: skip


def resolve_torch_only(engine: str = FAST) -> EngineChoice:
    """PyTorch operations only: a module without a description, or spread over devices."""
    return EngineChoice(engine, reasons=("PyTorch operations only (no description)",))

"""A network's layers as the blocks cnnlab's C++ kernels compute, matched by kind.

The fast engine reads a model description as a sequence of blocks, each with its shapes
read from the description, whatever the network. Each kind below but ``pytorch`` is declared
once, in C++: a struct of typed fields (``csrc/program.h``) and the kernels' ``Program``
method of the kind's name, its arguments named and typed (``csrc/program.cpp``); a block's
:class:`Call` names the method and its arguments (:func:`cnnlab.engine.native.program`):

- ``conv_pool_relu``: Conv2D('valid' or 'same', stride 1, bias, relu) followed by
  MaxPooling2D(2x2), any channel counts and map sizes, kernels up to 7x7: cnnlab's own loops
  (``csrc/blocks.cpp``), ReLU after the pooling, the backward pass summed over the nonzero
  gradients only, and no work on the rows and columns that later pooling drops;
- ``conv``: any other Conv2D (padding, strides, dilation, with or without a bias, a linear,
  relu, tanh, sigmoid or elu activation); ``pool``: max or average pooling of any size and
  stride, ``valid`` or TensorFlow's ``same``; a ReLU convolution followed by max pooling
  takes its ReLU after the pooling; ``activation``; ``batch_norm`` on maps (Keras' moving
  statistics); ``global_max`` (``csrc/layers.cpp``, over MKL-DNN's convolution and ATen's
  channels-last pooling loops);
- ``flatten``, ``dropout`` (nn.Dropout's masks, bit for bit), ``dense`` (bias, any of
  those activations), ``global_average``, ``pad`` (ZeroPadding2D), ``rescale``
  (Rescaling);
- anything else is a ``pytorch`` block: the network's own module.

1-D networks (time series) run through the same blocks: a (L, C) map is a (1, L, C) image,
a Conv1D a Conv2D with a (1, k) kernel.

When every block has a kernel, a training step is one call (:class:`cnnlab.engine.blocks.
NativeStep`). Otherwise the step runs with autograd, the ``conv_pool_relu`` blocks through
their kernels and the rest as PyTorch operations (:func:`where` says which ran where;
``config.json`` records it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypeGuard, TypeVar

from cnnlab.models import ModelDescription
from cnnlab.models import layers as L
from cnnlab.ops import padding_amounts

# the activations the kernels compute, by the names csrc/program.cpp reads
ACTIVATIONS = frozenset({"linear", "relu", "tanh", "sigmoid", "elu"})
MAX_TAPS = 49  # conv_pool_relu: kernels up to 7x7 (csrc/blocks.h: kMaxTaps)
KERNEL, PYTORCH = "cnnlab", "pytorch"  # where a layer ran, as config.json records it
# blocks with weights (a pytorch block may have some): the ones that need input gradients
WEIGHTED = frozenset({"conv_pool_relu", "conv", "batch_norm", "dense", PYTORCH})


T = TypeVar("T", bound=L.Layer)


def exact(layer: L.Layer | None, kind: type[T]) -> TypeGuard[T]:
    """``layer`` is exactly a ``kind``: a subclass (a depthwise convolution is a Conv) has
    kernels of its own, or none, never the plain kind's."""
    return type(layer) is kind


Arg = int | float | bool | str  # the types of the Program methods' arguments


@dataclass(frozen=True)
class Call:
    """One block of the kernels' program: ``Program.<kind>(**args)`` (``csrc/program.cpp``
    declares each kind's argument names and types; torch checks them at the call)."""

    kind: str
    args: tuple[tuple[str, Arg], ...] = ()

    def __getitem__(self, name: str) -> Arg:
        return dict(self.args)[name]


def call(kind: str, **args: Arg) -> Call:
    """``Program.<kind>(**args)``, its arguments in the order written."""
    return Call(kind, tuple(args.items()))


@dataclass(frozen=True)
class Block:
    """One block: its kind, the description's layers it computes, its kernel calls."""

    kind: str
    layers: tuple[str, ...]
    calls: tuple[Call, ...] = ()  # what the kernels' program adds; none for a pytorch block
    drop: tuple[tuple[int, ...], float] | None = None  # dropout: nn.Dropout's shape, rate
    conv: tuple[int, int, int, int] | None = None  # conv_pool_relu: padded H, W, kh, kw
    pads: tuple[int, ...] = ()  # conv_pool_relu: 'same' padding (top, bottom, left, right)

    def pooled(self) -> tuple[int, int]:
        """A ``conv_pool_relu`` block's pooled rows and columns (its last call's)."""
        conv = self.calls[-1]
        assert conv.kind == "conv_pool_relu"
        return int(conv["pooled_h"]), int(conv["pooled_w"])


@dataclass(frozen=True)
class Plan:
    blocks: tuple[Block, ...]
    folded: tuple[str, ...]  # a final softmax: computed by the loss, not by a block

    @property
    def native(self) -> bool:
        """Whether every block has a kernel (the whole step can run in C++)."""
        return bool(self.blocks) and all(b.kind != PYTORCH for b in self.blocks)

    def calls(self) -> tuple[Call, ...]:
        """The kernels' program: every block's calls, in order."""
        return tuple(c for b in self.blocks for c in b.calls)


def _conv_pool(layer: L.Layer, nxt: L.Layer | None, in_shape: tuple[int, ...]) -> bool:
    if not (exact(layer, L.Conv) and exact(nxt, L.Pool) and layer.rank == 2):
        return False
    kh, kw = layer.kernel_size
    if layer.padding == "same":  # the kernel sees the padded map
        in_shape = (in_shape[0] + kh - 1, in_shape[1] + kw - 1)
    return (
        layer.strides == (1, 1)
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


def _pads(
    in_shape: tuple[int, ...], size: tuple[int, ...], strides: tuple[int, ...],
    dilation: tuple[int, ...], padding: str,
) -> tuple[int, ...]:  # fmt: skip
    """(top, bottom, left, right): TensorFlow's ``same`` padding, or none."""
    pairs = [
        padding_amounts(n, k, stride=s, padding=padding, dilation=d)
        for n, k, s, d in zip(in_shape[:2], size, strides, dilation, strict=True)
    ]
    return (*pairs[0], *pairs[1])


def _2d(values: tuple[int, ...]) -> tuple[int, ...]:
    """A 1-D layer's sizes as a 2-D layer's over (1, L) maps: a height of 1 first."""
    return (1, *values) if len(values) == 1 else values


def _general(
    layer: L.Layer, nxt: L.Layer | None, shape: tuple[int, ...], relu_before: bool, rank: int
) -> Block | None:
    """The block of a layer on ``rank``-D maps (1 or 2: a 1-D map is a (1, L) image) that
    ``csrc/layers.cpp`` computes, if it has one.

    ``relu_before``: the previous block is a ReLU convolution whose ReLU was left out, for
    this block (max pooling) to apply after pooling."""
    name = (layer.name,)
    hw = _2d(shape[:-1])  # the map's (H, W)
    if exact(layer, L.Conv) and layer.rank == rank and layer.activation in ACTIVATIONS:
        act = layer.activation
        if act == "relu" and _max_pool(nxt, rank):
            act = "linear"  # the ReLU goes after the pooling (the pool block's relu_after)
        (sh, sw), (dh, dw) = _2d(layer.strides), _2d(layer.dilation_rate)
        top, bottom, left, right = _pads(hw, _2d(layer.kernel_size), (sh, sw), (dh, dw),
                                         layer.padding)  # fmt: skip
        conv = call("conv", stride_h=sh, stride_w=sw, dilation_h=dh, dilation_w=dw,
                    pad_top=top, pad_bottom=bottom, pad_left=left, pad_right=right,
                    activation=act, bias=bool(layer.use_bias))  # fmt: skip
        return Block("conv", name, (conv,))
    if exact(layer, L.Pool) and layer.rank == rank:
        size, (sh, sw) = _2d(layer.pool_size), _2d(layer.strides)
        top, bottom, left, right = _pads(hw, size, (sh, sw), (1, 1), layer.padding)
        pool = call("pool", mode="max" if layer.kind == "max" else "average",
                    size_h=size[0], size_w=size[1], stride_h=sh, stride_w=sw, pad_top=top,
                    pad_bottom=bottom, pad_left=left, pad_right=right,
                    relu_after=_max_pool(layer, rank) and relu_before)  # fmt: skip
        return Block("pool", name, (pool,))
    if exact(layer, L.Activation) and layer.activation in ACTIVATIONS:
        return Block("activation", name, (call("activation", function=layer.activation),))
    if exact(layer, L.ReLU) and layer.activation_name == "relu":
        # only a plain max(x, 0): the kernel has no max_value, negative_slope or threshold
        return Block("activation", name, (call("activation", function="relu"),))
    if exact(layer, L.BatchNormalization) and len(shape) == rank + 1 and hw[0] * hw[1] >= 2:
        norm = call("batch_norm", scale=bool(layer.scale), center=bool(layer.center),
                    epsilon=float(layer.epsilon), momentum=float(layer.momentum))  # fmt: skip
        return Block("batch_norm", name, (norm,))
    if exact(layer, L.GlobalPool) and layer.rank == rank:
        if layer.kind == "average":
            return Block("global_average", name, (call("global_average"),))
        return Block("global_max", name, (call("global_max"),))
    if exact(layer, L.ZeroPadding) and layer.rank == rank:
        pairs = ((0, 0), *layer.padding) if rank == 1 else layer.padding
        (top, bottom), (left, right) = pairs
        return Block("pad", name, (call("pad", top=top, bottom=bottom, left=left, right=right),))
    return None


def _max_pool(layer: L.Layer | None, rank: int = 2) -> bool:
    return exact(layer, L.Pool) and layer.kind == "max" and layer.rank == rank


def plan(desc: ModelDescription) -> Plan:
    """The blocks of ``desc``: each with a kernel where its kind has one, else ``pytorch``.

    A chain's blocks follow one another (the whole step may run in C++); in a graph only
    ``conv_pool_relu`` blocks run through kernels, inside a step of PyTorch operations.
    """
    lp = desc.logits  # the final softmax goes with the loss
    if not desc.is_chain:
        return Plan(_graph_blocks(desc), lp.folded)
    infos = [desc.by_name[x.name] for x in lp.layers]
    layers = list(lp.layers)  # a final Dense's linear copy, where its softmax is folded
    rank = len(desc.input_shape) - 1  # the kernels take 2-D maps, and 1-D ones as (1, L)
    image = rank == 2
    maps = rank in (1, 2)
    blocks: list[Block] = []
    i = 0
    while i < len(infos):
        info, layer = infos[i], layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        prev = layers[i - 1] if i > 0 else None
        shape = info.in_shape
        # a one-channel convolution's kernels give no input gradient: only below every weight
        conv_fits = shape[-1] > 1 or not any(b.kind in WEIGHTED for b in blocks)
        if image and _conv_pool(layer, nxt, shape) and conv_fits:
            assert isinstance(layer, L.Conv) and nxt is not None
            blocks.append(_conv_pool_block(layer, nxt, shape))
            i += 2
            continue
        relu_before = (  # a "conv" block that left its ReLU to this max pooling
            exact(prev, L.Conv) and prev.activation == "relu" and blocks[-1].kind == "conv"
        )
        general = _general(layer, nxt, shape, relu_before, rank) if maps else None
        if general is not None and (conv_fits or not exact(layer, L.Conv)):
            blocks.append(general)
        elif maps and exact(layer, L.Rescaling):
            scale = call("rescale", scale=float(layer.scale), offset=float(layer.offset))
            blocks.append(Block("rescale", (layer.name,), (scale,)))
        elif maps and exact(layer, L.Flatten):
            blocks.append(Block("flatten", (layer.name,), (call("flatten"),)))
        elif maps and exact(layer, L.Dropout) and layer.rate < 1:
            torch_shape = (shape[-1], *shape[:-1]) if len(shape) > 1 else shape  # (C, H, W)
            drop = (tuple(torch_shape), layer.rate)
            blocks.append(Block("dropout", (layer.name,), (call("dropout"),), drop=drop))
        elif maps and _dense(layer, shape):
            assert isinstance(layer, L.Dense)
            dense = call("dense", activation=layer.activation)
            blocks.append(Block("dense", (layer.name,), (dense,)))
        else:
            blocks.append(Block(PYTORCH, (layer.name,)))
        i += 1
    return Plan(_crop(blocks), lp.folded)


def _conv_pool_block(layer: L.Conv, pool: L.Layer, shape: tuple[int, ...]) -> Block:
    kh, kw = layer.kernel_size
    pads = _pads(shape, layer.kernel_size, (1, 1), (1, 1), layer.padding)
    h, w = shape[0] + pads[0] + pads[1], shape[1] + pads[2] + pads[3]
    conv = call("conv_pool_relu", pooled_h=(h - kh + 1) // 2, pooled_w=(w - kw + 1) // 2)
    if not any(pads):
        return Block("conv_pool_relu", (layer.name, pool.name), (conv,), conv=(h, w, kh, kw))
    top, bottom, left, right = pads
    zeros = call("pad", top=top, bottom=bottom, left=left, right=right)  # first, in the block
    return Block("conv_pool_relu", (layer.name, pool.name), (zeros, conv),
                 conv=(h, w, kh, kw), pads=pads)  # fmt: skip


def _graph_blocks(desc: ModelDescription) -> tuple[Block, ...]:
    """A graph's blocks: a convolution and the max pooling that alone reads it as one
    ``conv_pool_relu`` block where they fit (above a one-channel input only if first), every
    other layer a ``pytorch`` block."""
    layers = list(desc.logits.layers)
    blocks: list[Block] = []
    i = 0
    while i < len(layers):
        layer, info = layers[i], desc.by_name[layers[i].name]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        alone = nxt is not None and desc.consumers[layer.name] == (nxt.name,)
        fits = info.in_shape[-1] > 1 or info.inputs == (L.INPUT,)
        if desc.rank == 2 and alone and fits and _conv_pool(layer, nxt, info.in_shape):
            assert isinstance(layer, L.Conv) and nxt is not None
            blocks.append(_conv_pool_block(layer, nxt, info.in_shape))
            i += 2
            continue
        blocks.append(Block(PYTORCH, (layer.name,)))
        i += 1
    return tuple(blocks)


def _dense(layer: L.Layer, in_shape: tuple[int, ...]) -> bool:
    return (
        exact(layer, L.Dense)
        and layer.use_bias
        and len(in_shape) == 1
        and layer.activation in ACTIVATIONS
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
        ph, pw = b.pooled()
        if need is not None:
            ph, pw = min(ph, need[0]), min(pw, need[1])
            conv = call("conv_pool_relu", pooled_h=ph, pooled_w=pw)
            out[j] = replace(b, calls=(*b.calls[:-1], conv))
        need = (2 * ph + b.conv[2] - 1, 2 * pw + b.conv[3] - 1)
        if b.pads:  # the rows and columns of the unpadded map under those
            need = (need[0] - b.pads[0], need[1] - b.pads[2])
    return tuple(out)


def mixed_kernel(b: Block) -> bool:
    """Whether a block runs through its kernel in a step that mixes kernels and PyTorch
    operations (an unpadded ``conv_pool_relu``; the other blocks run as PyTorch there)."""
    return b.kind == "conv_pool_relu" and not b.pads


def where(desc: ModelDescription, kernels: bool) -> dict[str, str]:
    """Which layers run in cnnlab's kernels and which in PyTorch operations, by layer name.

    ``kernels``: whether the kernels run here (fast engine, CPU, built). A final softmax
    goes with the loss: in the kernels when the whole step is.
    """
    p = plan(desc)
    out: dict[str, str] = {}
    for b in p.blocks:
        runs = kernels and (p.native or mixed_kernel(b))
        out.update(dict.fromkeys(b.layers, KERNEL if runs else PYTORCH))
    out.update(dict.fromkeys(p.folded, KERNEL if kernels and p.native else PYTORCH))
    return out

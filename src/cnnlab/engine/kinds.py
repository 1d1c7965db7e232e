"""The kernels' vocabulary: which layer becomes which block, and the calls that build it.

One layer (or a Conv2D with the max pooling that alone reads it) becomes one :class:`Block`
of a kind ``csrc/program.h`` declares, with the :class:`Call` that adds it to the kernels'
``Program``, or a ``pytorch`` block where its kind has no kernel. :mod:`cnnlab.engine.plan`
orders the blocks of a chain or a graph and lists the kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeGuard, TypeVar

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


def conv_pool_fits(layer: L.Layer, nxt: L.Layer | None, in_shape: tuple[int, ...]) -> bool:
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


def same_pads(
    in_shape: tuple[int, ...], size: tuple[int, ...], strides: tuple[int, ...],
    dilation: tuple[int, ...], padding: str,
) -> tuple[int, ...]:  # fmt: skip
    """(top, bottom, left, right): TensorFlow's ``same`` padding, or none."""
    pairs = [
        padding_amounts(n, k, stride=s, padding=padding, dilation=d)
        for n, k, s, d in zip(in_shape[:2], size, strides, dilation, strict=True)
    ]
    return (*pairs[0], *pairs[1])


def as_2d(values: tuple[int, ...]) -> tuple[int, ...]:
    """A 1-D layer's sizes as a 2-D layer's over (1, L) maps: a height of 1 first."""
    return (1, *values) if len(values) == 1 else values


def general_block(
    layer: L.Layer, nxt: L.Layer | None, shape: tuple[int, ...], relu_before: bool, rank: int
) -> Block | None:
    """The block of a layer on ``rank``-D maps (1 or 2: a 1-D map is a (1, L) image) that
    ``csrc/layers.cpp`` computes, if it has one.

    ``relu_before``: the previous block is a ReLU convolution whose ReLU was left out, for
    this block (max pooling) to apply after pooling."""
    name = (layer.name,)
    hw = as_2d(shape[:-1])  # the map's (H, W)
    if exact(layer, L.Conv) and layer.rank == rank and layer.activation in ACTIVATIONS:
        act = layer.activation
        if act == "relu" and max_pool(nxt, rank):
            act = "linear"  # the ReLU goes after the pooling (the pool block's relu_after)
        (sh, sw), (dh, dw) = as_2d(layer.strides), as_2d(layer.dilation_rate)
        top, bottom, left, right = same_pads(hw, as_2d(layer.kernel_size), (sh, sw), (dh, dw),
                                         layer.padding)  # fmt: skip
        conv = call("conv", stride_h=sh, stride_w=sw, dilation_h=dh, dilation_w=dw,
                    pad_top=top, pad_bottom=bottom, pad_left=left, pad_right=right,
                    activation=act, bias=bool(layer.use_bias))  # fmt: skip
        return Block("conv", name, (conv,))
    if exact(layer, L.Pool) and layer.rank == rank:
        size, (sh, sw) = as_2d(layer.pool_size), as_2d(layer.strides)
        top, bottom, left, right = same_pads(hw, size, (sh, sw), (1, 1), layer.padding)
        pool = call("pool", mode="max" if layer.kind == "max" else "average",
                    size_h=size[0], size_w=size[1], stride_h=sh, stride_w=sw, pad_top=top,
                    pad_bottom=bottom, pad_left=left, pad_right=right,
                    relu_after=max_pool(layer, rank) and relu_before)  # fmt: skip
        return Block("pool", name, (pool,))
    if exact(layer, L.Activation) and layer.activation in ACTIVATIONS:
        return Block("activation", name, (call("activation", function=layer.activation),))
    if exact(layer, L.ReLU) and layer.activation_name == "relu":
        # only a plain max(x, 0): the kernel has no max_value, negative_slope or threshold
        return Block("activation", name, (call("activation", function="relu"),))
    if norm_fits(layer, shape, rank):
        return norm_block(layer, None, None)
    if exact(layer, L.GlobalPool) and layer.rank == rank:
        if layer.kind == "average":
            return Block("global_average", name, (call("global_average"),))
        return Block("global_max", name, (call("global_max"),))
    if exact(layer, L.ZeroPadding) and layer.rank == rank:
        pairs = ((0, 0), *layer.padding) if rank == 1 else layer.padding
        (top, bottom), (left, right) = pairs
        return Block("pad", name, (call("pad", top=top, bottom=bottom, left=left, right=right),))
    return None


def norm_fits(layer: L.Layer, shape: tuple[int, ...], rank: int) -> TypeGuard[L.BatchNormalization]:
    """BatchNormalization over the channels of a ``rank``-D map of two values or more."""
    hw = as_2d(shape[:-1])
    return exact(layer, L.BatchNormalization) and len(shape) == rank + 1 and hw[0] * hw[1] >= 2


def plain_relu(layer: L.Layer | None) -> bool:
    """A ReLU with nothing else: ``Activation('relu')`` or ``ReLU()`` with its defaults."""
    return (exact(layer, L.Activation) and layer.activation == "relu") or (
        exact(layer, L.ReLU) and layer.activation_name == "relu"
    )


def tiling_pool(layer: L.Layer | None, shape: tuple[int, ...], rank: int) -> bool:
    """Max pooling whose windows tile the map (strides = pool size, 'valid'), at least one."""
    if not (max_pool(layer, rank) and layer.padding == "valid"):
        return False
    size, hw = as_2d(layer.pool_size), as_2d(shape[:-1])
    return (
        as_2d(layer.strides) == size
        and size[0] * size[1] <= 255
        and hw[0] >= size[0]
        and hw[1] >= size[1]
    )


def norm_block(
    layer: L.BatchNormalization,
    relu: L.Layer | None,
    pool: L.Layer | None,
    add: tuple[L.Layer, int] | None = None,
) -> Block:
    """BatchNormalization, with the ReLU that alone reads it and the max pooling that alone
    reads that (:func:`tiling_pool`) fused in: one block over those layers. ``add``: a
    residual block's Add between the batch norm and its ReLU, and the slot of its other map."""
    size = as_2d(pool.pool_size) if isinstance(pool, L.Pool) else (1, 1)
    norm = call("batch_norm", scale=bool(layer.scale), center=bool(layer.center),
                epsilon=float(layer.epsilon), momentum=float(layer.momentum),
                relu=relu is not None, pool_h=size[0], pool_w=size[1],
                add_slot=add[1] if add else -1)  # fmt: skip
    names = tuple(x.name for x in (layer, add[0] if add else None, relu, pool) if x is not None)
    return Block("batch_norm", names, (norm,))


def fused_norm(
    layer: L.Layer, relu: L.Layer | None, pool: L.Layer | None, shape: tuple[int, ...], rank: int
) -> Block | None:
    """The fused batch-norm block of ``layer`` when it is a BatchNormalization on maps and
    ``relu`` a plain ReLU (each read by the one after it alone: the caller's to check), with
    ``pool`` when it tiles the map; None otherwise."""
    if not (norm_fits(layer, shape, rank) and plain_relu(relu)):
        return None
    return norm_block(layer, relu, pool if tiling_pool(pool, shape, rank) else None)


def max_pool(layer: L.Layer | None, rank: int = 2) -> TypeGuard[L.Pool]:
    return exact(layer, L.Pool) and layer.kind == "max" and layer.rank == rank


def layer_block(
    layer: L.Layer,
    nxt: L.Layer | None,
    shape: tuple[int, ...],
    relu_before: bool,
    rank: int,
    conv_fits: bool,
) -> Block:
    """The block of one layer on ``shape`` (its input), with a kernel where it has one.
    ``conv_fits``: a convolution here may run as a kernel (see :func:`plan`)."""
    maps = rank in (1, 2)
    general = general_block(layer, nxt, shape, relu_before, rank) if maps else None
    if general is not None and (conv_fits or not exact(layer, L.Conv)):
        return general
    if maps and exact(layer, L.Rescaling):
        scale = call("rescale", scale=float(layer.scale), offset=float(layer.offset))
        return Block("rescale", (layer.name,), (scale,))
    if maps and exact(layer, L.Flatten):
        return Block("flatten", (layer.name,), (call("flatten"),))
    if maps and exact(layer, L.Dropout) and layer.rate < 1:
        torch_shape = (shape[-1], *shape[:-1]) if len(shape) > 1 else shape  # (C, H, W)
        drop = (tuple(torch_shape), layer.rate)
        return Block("dropout", (layer.name,), (call("dropout"),), drop=drop)
    if maps and dense_fits(layer, shape):
        assert isinstance(layer, L.Dense)
        return Block("dense", (layer.name,), (call("dense", activation=layer.activation),))
    return Block(PYTORCH, (layer.name,))


def conv_pool_block(layer: L.Conv, pool: L.Layer, shape: tuple[int, ...]) -> Block:
    kh, kw = layer.kernel_size
    pads = same_pads(shape, layer.kernel_size, (1, 1), (1, 1), layer.padding)
    h, w = shape[0] + pads[0] + pads[1], shape[1] + pads[2] + pads[3]
    conv = call("conv_pool_relu", pooled_h=(h - kh + 1) // 2, pooled_w=(w - kw + 1) // 2)
    if not any(pads):
        return Block("conv_pool_relu", (layer.name, pool.name), (conv,), conv=(h, w, kh, kw))
    top, bottom, left, right = pads
    zeros = call("pad", top=top, bottom=bottom, left=left, right=right)  # first, in the block
    return Block("conv_pool_relu", (layer.name, pool.name), (zeros, conv),
                 conv=(h, w, kh, kw), pads=pads)  # fmt: skip


def dense_fits(layer: L.Layer, in_shape: tuple[int, ...]) -> bool:
    return (
        exact(layer, L.Dense)
        and layer.use_bias
        and len(in_shape) == 1
        and layer.activation in ACTIVATIONS
    )

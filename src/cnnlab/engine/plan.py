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
  takes its ReLU after the pooling; ``activation``; ``global_max`` (``csrc/layers.cpp``,
  over MKL-DNN's convolution and ATen's channels-last pooling loops);
- ``batch_norm`` on maps (Keras' moving statistics), with the ReLU that alone reads it and
  the max pooling that alone reads that fused in (``csrc/norm.cpp``), and in a graph a
  residual block's Add and ReLU after it (:func:`_residual_norm`);
- ``flatten``, ``dropout`` (nn.Dropout's masks, bit for bit), ``dense`` (bias, any of
  those activations), ``global_average``, ``pad`` (ZeroPadding2D), ``rescale``
  (Rescaling);
- anything else is a ``pytorch`` block: the network's own module.

1-D networks (time series) run through the same blocks: a (L, C) map is a (1, L, C) image,
a Conv1D a Conv2D with a (1, k) kernel. Graphs (residual blocks, branches read from one map)
run in the description's order on one running map, with ``store``, ``load`` calls for the
maps read again, ``add`` for Keras' ``Add`` and ``concat`` for ``Concatenate`` on the
channels (:func:`_graph_program`).

When every block has a kernel, a training step is one call (:class:`cnnlab.engine.blocks.
NativeStep`). Otherwise the step runs with autograd, the ``conv_pool_relu`` blocks through
their kernels and the rest as PyTorch operations (:func:`where` says which ran where;
``config.json`` records it).
"""

from __future__ import annotations

from dataclasses import replace

from cnnlab.engine.kinds import (
    ACTIVATIONS,
    KERNEL,
    PYTORCH,
    WEIGHTED,
    Arg,
    Block,
    Call,
    Plan,
    call,
    conv_pool_block,
    conv_pool_fits,
    exact,
    fused_norm,
    layer_block,
    max_pool,
    norm_block,
    norm_fits,
    plain_relu,
)
from cnnlab.models import ModelDescription
from cnnlab.models import layers as L

__all__ = ["ACTIVATIONS", "KERNEL", "PYTORCH", "Arg", "Block", "Call", "Plan", "call", "exact",
           "mixed_kernel", "plan", "where"]  # fmt: skip


def plan(desc: ModelDescription) -> Plan:
    """The blocks of ``desc``: each with a kernel where its kind has one, else ``pytorch``.

    A chain's blocks follow one another. A graph's follow the description's order, with the
    calls that keep and bring back its other maps (:func:`_graph_program`); where one of its
    layers has no kernel, only its ``conv_pool_relu`` blocks run through kernels, inside a
    step of PyTorch operations (:func:`_graph_blocks`).
    """
    lp = desc.logits  # the final softmax goes with the loss
    if not desc.is_chain:
        return Plan(_graph_program(desc) or _graph_blocks(desc), lp.folded)
    infos = [desc.by_name[x.name] for x in lp.layers]
    layers = list(lp.layers)  # a final Dense's linear copy, where its softmax is folded
    rank = len(desc.input_shape) - 1  # the kernels take 2-D maps, and 1-D ones as (1, L)
    image = rank == 2
    blocks: list[Block] = []
    i = 0
    while i < len(infos):
        info, layer = infos[i], layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        prev = layers[i - 1] if i > 0 else None
        shape = info.in_shape
        # a one-channel convolution's kernels give no input gradient: only below every weight
        conv_fits = shape[-1] > 1 or not any(b.kind in WEIGHTED for b in blocks)
        if image and conv_pool_fits(layer, nxt, shape) and conv_fits:
            assert isinstance(layer, L.Conv) and nxt is not None
            blocks.append(conv_pool_block(layer, nxt, shape))
            i += 2
            continue
        after = layers[i + 2] if i + 2 < len(layers) else None
        fused = fused_norm(layer, nxt, after, shape, rank)
        if fused is not None:  # BatchNormalization, its ReLU (and max pooling) as one block
            blocks.append(fused)
            i += len(fused.layers)
            continue
        relu_before = (  # a "conv" block that left its ReLU to this max pooling
            exact(prev, L.Conv) and prev.activation == "relu" and blocks[-1].kind == "conv"
        )
        blocks.append(layer_block(layer, nxt, shape, relu_before, rank, conv_fits))
        i += 1
    return Plan(_crop(blocks), lp.folded)


def _graph_program(desc: ModelDescription) -> tuple[Block, ...] | None:
    """A graph's blocks for the whole step in C++, or None where a layer has no kernel.

    The layers run in the description's order on one running map. Before a layer, slot
    calls (``csrc/program.h``) keep the running map where a later layer reads it again
    (``store``) and bring back the map the layer reads (``load``); Keras' ``Add`` adds the
    kept maps to the running one (``add``), ``Concatenate`` on the channels joins them to it
    (``concat``, its first input running). Each block carries its layer's slot calls first.
    """
    lp, rank = desc.logits, desc.rank
    if rank not in (1, 2):
        return None
    layers = list(lp.layers)
    pending = {L.INPUT: 0, **{x.name: 0 for x in layers}}  # reads still to come
    for x in layers:
        for source in desc.by_name[x.name].inputs:
            pending[source] += 1
    slots: dict[str, int] = {}
    graded = {L.INPUT: False}  # the maps that depend on a weight (they need gradients)
    current, relu_left = L.INPUT, ""  # the running map; a conv whose ReLU its pool applies
    blocks: list[Block] = []

    def keep(name: str, pre: list[Call]) -> None:
        if name not in slots:
            slots[name] = len(slots)
            pre.append(call("store", slot=slots[name]))

    i = 0
    while i < len(layers):
        layer, info = layers[i], desc.by_name[layers[i].name]
        pre: list[Call] = []
        # Concatenate on the channels: the running map must be its first input
        joins = exact(layer, L.Concatenate) and layer.axis in (-1, len(info.in_shape))
        others = list(info.inputs)
        run_in = current if current in others and not joins else others[0]
        others.remove(run_in)
        if run_in != current:
            if pending[current] > 0:
                keep(current, pre)
            pre.append(call("load", slot=slots[run_in]))
        for source in info.inputs:
            pending[source] -= 1
        if pending[run_in] > 0 or run_in in others:  # read again, later or by this layer
            keep(run_in, pre)
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        alone = nxt if nxt is not None and desc.consumers[layer.name] == (nxt.name,) else None
        # a one-channel convolution's kernels give no input gradient: none may be needed
        conv_fits = info.in_shape[-1] > 1 or not any(graded[x] for x in info.inputs)
        if exact(layer, L.Merge) and layer.op == "Add":
            block = Block("add", (layer.name,), tuple(call("add", slot=slots[o]) for o in others))
        elif joins:
            joined = tuple(call("concat", slot=slots[o]) for o in others)
            block = Block("concat", (layer.name,), joined)
        elif len(others) > 0:
            return None  # another merge of several maps: no kernel
        elif (res := _residual_norm(desc, i, slots, rank)) is not None:
            add, ends, other = res  # BatchNormalization, the Add after it, the Add's ReLU
            assert isinstance(layer, L.BatchNormalization)
            block = norm_block(layer, ends, None, (add, slots[other]))
            for name in (layer.name, other, add.name):  # read by the Add, the Add, the ReLU
                pending[name] -= 1
            i += 2
        elif (fused := fused_norm(layer, alone, _alone(desc, alone, i + 2), info.in_shape,
                                  rank)) is not None:  # fmt: skip
            block = fused  # its ReLU and pooling read only the layer before them
            for name in fused.layers[:-1]:
                pending[name] -= 1
            i += len(fused.layers) - 1
        elif rank == 2 and alone and conv_fits and conv_pool_fits(layer, alone, info.in_shape):
            assert isinstance(layer, L.Conv) and alone is not None
            block = conv_pool_block(layer, alone, info.in_shape)
            pending[layer.name] -= 1
            i += 1
        else:
            relu_before = info.inputs == (relu_left,)
            block = layer_block(layer, alone, info.in_shape, relu_before, rank, conv_fits)
            if block.kind == PYTORCH:
                return None
            relu = exact(layer, L.Conv) and layer.activation == "relu" and max_pool(alone, rank)
            relu_left = layer.name if relu and block.kind == "conv" else ""
        blocks.append(replace(block, calls=(*pre, *block.calls)))
        weighted = block.kind in WEIGHTED or any(graded[x] for x in info.inputs)
        graded.update(dict.fromkeys(block.layers, weighted))
        current = block.layers[-1]
        i += 1
    return tuple(blocks) if current == lp.output else None


def _residual_norm(
    desc: ModelDescription, i: int, slots: dict[str, int], rank: int
) -> tuple[L.Layer, L.Layer, str] | None:
    """A residual block's end: the logits' layer ``i`` a BatchNormalization with a weight on
    maps, read only by an Add (the next layer) of it and one kept map, which only a plain ReLU
    (the one after) reads: (the Add, the ReLU, the kept map's name); else None."""
    layers = desc.logits.layers
    if i + 2 >= len(layers):
        return None
    layer, add, relu = layers[i], layers[i + 1], layers[i + 2]
    info = desc.by_name[layer.name]
    if not (norm_fits(layer, info.in_shape, rank) and (layer.scale or layer.center)):
        return None
    if not (exact(add, L.Merge) and add.op == "Add" and plain_relu(relu)):
        return None
    inputs = desc.by_name[add.name].inputs
    others = [x for x in inputs if x != layer.name]
    if len(inputs) != 2 or len(others) != 1 or others[0] not in slots:
        return None
    if desc.consumers[layer.name] != (add.name,) or desc.consumers[add.name] != (relu.name,):
        return None
    return add, relu, others[0]


def _alone(desc: ModelDescription, layer: L.Layer | None, j: int) -> L.Layer | None:
    """The logits' layer ``j`` when it alone reads ``layer`` (and comes right after it)."""
    layers = desc.logits.layers
    if layer is None or j >= len(layers):
        return None
    return layers[j] if desc.consumers[layer.name] == (layers[j].name,) else None


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
        if desc.rank == 2 and alone and fits and conv_pool_fits(layer, nxt, info.in_shape):
            assert isinstance(layer, L.Conv) and nxt is not None
            blocks.append(conv_pool_block(layer, nxt, info.in_shape))
            i += 2
            continue
        blocks.append(Block(PYTORCH, (layer.name,)))
        i += 1
    return tuple(blocks)


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

"""Templates: networks beyond the chapter that build themselves for the data's shape and classes.

Each takes ``(input_shape, classes)`` (channels last, no batch axis) and is registered with
:func:`cnnlab.models.registry.register_model`:

- time series (T, C): ``fcn1d`` and ``fcn1d_small`` (Wang et al. 2017's fully convolutional
  network), ``resnet1d`` (their ResNet), ``inception1d`` (an InceptionTime-style network);
- images (H, W, C): ``smallcnn`` (a plain chain of convolution blocks) and ``resnet_small``
  (residual blocks with 1x1 shortcuts where the shape changes);
- clips (T, H, W, C): ``moving3d`` (Conv3D) and ``perframe2d`` (its per-frame baseline).

Graphs are written as lists of named layers with their inputs (:class:`Graph`), the same data
a user's YAML file holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.models.compact import parse_compact
from cnnlab.models.description import ModelDescription
from cnnlab.models.registry import register_model

Shape = tuple[int, ...]
UCR_DEFAULT: Shape = (150, 1)  # GunPoint: 150 steps, 1 channel, 2 classes
IMAGE_DEFAULT: Shape = (32, 32, 3)  # a small RGB image
CLIP_DEFAULT: Shape = (8, 40, 40, 1)  # moving digits: 8 frames of 40x40
# BatchNormalization momentum 0.9, not Keras' 0.99, in the time-series networks: a UCR
# training set gives 2-15 steps an epoch, and with 0.99 the moving statistics lag the weights
# by ~30 epochs; the network then scores chance in inference mode while it fits in training
# mode (GunPoint, seed 0, 150 epochs: 46% validation accuracy, 100% once the statistics are
# recomputed).
SERIES_BN = {"momentum": 0.9}

WANT = {1: "(T, C): a time series", 2: "(H, W, C): an image", 3: "(T, H, W, C): a clip"}


def _shape(shape: Shape, rank: int, model: str) -> list[int]:
    if len(shape) != rank + 1 or min(shape) < 1:
        got = "x".join(map(str, shape))
        raise CnnlabError(f"{model} takes inputs of {WANT[rank]}, got {got}")
    return [int(s) for s in shape]


def _classes(classes: int, model: str) -> int:
    if int(classes) < 2:
        raise CnnlabError(f"{model} needs at least 2 classes, got {classes}")
    return int(classes)


class Graph:
    """A network written layer by layer, each named and reading the layers it names."""

    def __init__(self, name: str, input_shape: list[int]) -> None:
        self.name, self.input_shape = name, input_shape
        self.layers: list[dict[str, Any]] = []

    def add(self, cls: str, name: str, inputs: str | list[str], **args: Any) -> str:
        ins = [inputs] if isinstance(inputs, str) else inputs
        self.layers.append({"class_name": cls, "name": name, "inputs": ins, **args})
        return name

    def conv_bn(
        self, name: str, src: str, rank: int, filters: int, kernel: int, **args: Any
    ) -> str:
        """Conv (same padding, no activation), then BatchNormalization."""
        conv = self.add(f"Conv{rank}D", f"{name}_conv", src, filters=filters,
                        kernel_size=kernel, padding="same", **args)  # fmt: skip
        return self.add(
            "BatchNormalization", f"{name}_bn", conv, **(SERIES_BN if rank == 1 else {})
        )

    def build(self) -> ModelDescription:
        data = {"name": self.name, "input_shape": self.input_shape, "layers": self.layers}
        return ModelDescription.from_dict(data)


def _conv1d_blocks(widths: tuple[int, ...], kernels: tuple[int, ...]) -> str:
    return " ".join(
        f"Conv1D({w},{k},same,name=conv{i}) BatchNormalization(momentum=0.9,name=bn{i}) "
        f"ReLU(name=relu{i})"
        for i, (w, k) in enumerate(zip(widths, kernels, strict=True), start=1)
    )


def _fcn(name: str, widths: tuple[int, ...]) -> Callable[..., ModelDescription]:
    def build(input_shape: Shape = UCR_DEFAULT, classes: int = 2) -> ModelDescription:
        shape = ",".join(map(str, _shape(input_shape, 1, name)))
        return parse_compact(
            f"Input({shape}) {_conv1d_blocks(widths, (8, 5, 3))} "
            f"GlobalAveragePooling1D(name=gap) Dense({_classes(classes, name)},softmax,name=dense)",
            name,
        )

    return build


fcn1d = register_model("fcn1d", template=True)(_fcn("fcn1d", (128, 256, 128)))
fcn1d.__doc__ = """Wang et al. (2017)'s fully convolutional network for time series: three
blocks of Conv1D + BatchNormalization + ReLU (128, 256, 128 filters; kernels 8, 5, 3;
``same``), global average pooling over time, a Dense softmax. Its class activation map is
exact."""
fcn1d_small = register_model("fcn1d_small", template=True)(_fcn("fcn1d_small", (32, 64, 32)))
fcn1d_small.__doc__ = """fcn1d at a quarter of the width (32, 64, 32 filters): about 1/14 of
the parameters."""


@register_model("resnet1d", template=True)
def resnet1d(input_shape: Shape = UCR_DEFAULT, classes: int = 2) -> ModelDescription:
    """Wang et al. (2017)'s ResNet for time series: three residual blocks of 64, 128, 128
    filters, each three Conv1D + BatchNormalization (kernels 8, 5, 3; ReLU after the first two)
    added to a shortcut (a 1x1 Conv1D + BatchNormalization where the width changes, else
    BatchNormalization alone, as their code), then ReLU; global average pooling over time and a
    Dense softmax. Its class activation map is exact, as fcn1d's."""
    g = Graph("resnet1d", _shape(input_shape, 1, "resnet1d"))
    h, width = "input", int(input_shape[-1])
    for b, filters in enumerate((64, 128, 128), start=1):
        x = h
        for j, kernel in enumerate((8, 5, 3), start=1):
            x = g.conv_bn(f"block{b}_{j}", x, 1, filters, kernel)
            if j < 3:
                x = g.add("ReLU", f"block{b}_{j}_relu", x)
        if width != filters:
            short = g.conv_bn(f"block{b}_shortcut", h, 1, filters, 1)
        else:
            short = g.add("BatchNormalization", f"block{b}_shortcut_bn", h, **SERIES_BN)
        added = g.add("Add", f"block{b}_add", [x, short])
        h, width = g.add("ReLU", f"block{b}_out", added), filters
    g.add("GlobalAveragePooling1D", "gap", h)
    g.add("Dense", "dense", "gap", units=_classes(classes, "resnet1d"), activation="softmax")
    return g.build()


@register_model("inception1d", template=True)
def inception1d(input_shape: Shape = UCR_DEFAULT, classes: int = 2) -> ModelDescription:
    """An InceptionTime-style network (Ismail Fawaz et al. 2020), one residual block deep:
    three Inception modules, each a 1x1 bottleneck (32 maps) into Conv1D branches of kernels
    39, 19 and 9 beside a max-pooled 1x1 branch (32 maps each), joined by Concatenate, then
    BatchNormalization and ReLU; a 1x1 Conv1D + BatchNormalization shortcut around the three,
    added, ReLU; global average pooling and a Dense softmax."""
    g = Graph("inception1d", _shape(input_shape, 1, "inception1d"))
    h = "input"
    for m in range(1, 4):
        neck = h
        if m > 1 or input_shape[-1] > 1:  # no bottleneck on a single channel, as theirs
            neck = g.add("Conv1D", f"inc{m}_neck", h, filters=32, kernel_size=1,
                         padding="same", use_bias=False)  # fmt: skip
        branches = [
            g.add("Conv1D", f"inc{m}_k{k}", neck, filters=32, kernel_size=k, padding="same",
                  use_bias=False)
            for k in (39, 19, 9)
        ]  # fmt: skip
        pool = g.add("MaxPooling1D", f"inc{m}_pool", h, pool_size=3, strides=1, padding="same")
        branches.append(g.add("Conv1D", f"inc{m}_k1", pool, filters=32, kernel_size=1,
                              use_bias=False))  # fmt: skip
        joined = g.add("Concatenate", f"inc{m}_concat", branches)
        normed = g.add("BatchNormalization", f"inc{m}_bn", joined, **SERIES_BN)
        h = g.add("ReLU", f"inc{m}_relu", normed)
    short = g.conv_bn("shortcut", "input", 1, 128, 1, use_bias=False)
    added = g.add("Add", "residual", [h, short])
    out = g.add("ReLU", "residual_relu", added)
    g.add("GlobalAveragePooling1D", "gap", out)
    g.add("Dense", "dense", "gap", units=_classes(classes, "inception1d"), activation="softmax")
    return g.build()


def _blocks(h: int, w: int, most: int) -> int:
    """2x2-pooled blocks while the maps stay at least 4x4 (at least one, at most ``most``)."""
    n = 1
    while n < most and min(h, w) >> n >= 8:
        n += 1
    return n


@register_model("smallcnn", template=True)
def smallcnn(input_shape: Shape = IMAGE_DEFAULT, classes: int = 2) -> ModelDescription:
    """A small CNN for any H x W x C image, the chapter's blocks carried to larger images: a
    3x3 ReLU convolution (``same``) and 2x2 max pooling per block, 32, 64, 128 and 128 filters,
    as many blocks as the size allows (the maps stay at least 4x4: 28x28 gets two, 64x64
    four), then global average pooling, dropout 0.25 and a Dense softmax."""
    h, w, c = _shape(input_shape, 2, "smallcnn")
    k = _classes(classes, "smallcnn")
    blocks = " ".join(
        f"Conv2D({f},3,same,relu,name=conv{b}) MaxPooling2D(2,name=pool{b})"
        for b, f in enumerate((32, 64, 128, 128)[: _blocks(h, w, 4)], start=1)
    )
    return parse_compact(
        f"Input({h},{w},{c}) {blocks} GlobalAveragePooling2D(name=gap) "
        f"Dropout(0.25,name=dropout) Dense({k},softmax,name=dense)",
        "smallcnn",
    )


@register_model("resnet_small", template=True)
def resnet_small(input_shape: Shape = IMAGE_DEFAULT, classes: int = 2) -> ModelDescription:
    """A small residual network for any H x W x C image: a 3x3 stem of 16 maps, then residual
    blocks of two 3x3 Conv2D + BatchNormalization (16, 32, 64 maps; the second and third
    halve the size with stride 2) added to their input, through a 1x1 strided Conv2D +
    BatchNormalization where the shape changes, each followed by ReLU; global average pooling
    and a Dense softmax."""
    shape = _shape(input_shape, 2, "resnet_small")
    g = Graph("resnet_small", shape)
    h = g.add("ReLU", "stem_relu", g.conv_bn("stem", "input", 2, 16, 3))
    width = 16
    for b, filters in enumerate((16, 32, 64)[: _blocks(shape[0], shape[1], 3)], start=1):
        stride = 1 if b == 1 else 2
        x = g.add(
            "ReLU", f"block{b}_1_relu", g.conv_bn(f"block{b}_1", h, 2, filters, 3, strides=stride)
        )
        x = g.conv_bn(f"block{b}_2", x, 2, filters, 3)
        short = h
        if stride > 1 or width != filters:
            short = g.conv_bn(f"block{b}_shortcut", h, 2, filters, 1, strides=stride)
        h, width = (
            g.add("ReLU", f"block{b}_out", g.add("Add", f"block{b}_add", [x, short])),
            filters,
        )
    g.add("GlobalAveragePooling2D", "gap", h)
    g.add("Dense", "dense", "gap", units=_classes(classes, "resnet_small"), activation="softmax")
    return g.build()


def _clip_net(name: str, t: int, widths: tuple[int, int, int]) -> Callable[..., ModelDescription]:
    # Three Conv3D blocks with kernels t x 3 x 3 (t = 1: each frame alone), 2x2 spatial
    # pooling after the first two, global average pooling over time and space, a Dense.
    def build(input_shape: Shape = CLIP_DEFAULT, classes: int = 2) -> ModelDescription:
        shape = ",".join(map(str, _shape(input_shape, 3, name)))
        k = _classes(classes, name)
        w1, w2, w3 = widths
        return parse_compact(
            f"Input({shape}) "
            f"Conv3D({w1},{t}x3x3,same,relu,name=conv1) MaxPooling3D(1x2x2,name=pool1) "
            f"Conv3D({w2},{t}x3x3,same,relu,name=conv2) MaxPooling3D(1x2x2,name=pool2) "
            f"Conv3D({w3},{t}x3x3,same,relu,name=conv3) "
            f"GlobalAveragePooling3D(name=gap) Dense({k},softmax,name=dense)",
            name,
        )

    return build


moving3d = register_model("moving3d", template=True)(_clip_net("moving3d", 3, (8, 16, 16)))
moving3d.__doc__ = """A small 3-D CNN for clips: Conv3D kernels of 3 frames x 3 x 3 pixels read
motion (the order of frames), then global average pooling and a Dense softmax."""
perframe2d = register_model("perframe2d", template=True)(_clip_net("perframe2d", 1, (16, 24, 32)))
perframe2d.__doc__ = """moving3d's per-frame baseline of similar size: kernels 1 x 3 x 3, so each
frame is processed alone (a 2-D CNN applied frame by frame), then global average pooling
over time and space and a Dense. The Dense is affine and the pooling a mean over frames of
per-frame means, so the logits are the mean over frames of the per-frame 2-D CNN's logits."""

"""The model registry: networks chosen by name, every consumer reads this one table.

The chapter's three cases and the speedrun network are written here in the description
language, layer for layer as the chapter's Keras code (section 14.3). Users' own
networks come from files or one-line descriptions through :func:`resolve`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.models.compact import looks_compact, parse_compact
from cnnlab.models.description import ModelDescription
from cnnlab.models.files import SUFFIXES, load_description


def _features(c1: int, c2: int) -> str:
    # the chapter's feature extractor: two 3x3 ReLU convolutions, each max-pooled 2x2
    return (
        f"Input(28,28,1) Conv2D({c1},3,relu,name=conv1) MaxPooling2D(2,name=pool1) "
        f"Conv2D({c2},3,relu,name=conv2) MaxPooling2D(2,name=pool2)"
    )


def case1() -> ModelDescription:
    """Case 1: the flattened feature maps into two Dense layers, with dropout 0.25."""
    return parse_compact(
        _features(16, 64) + " Flatten(name=flatten) Dropout(0.25,name=dropout1) "
        "Dense(32,relu,name=dense1) Dropout(0.25,name=dropout2) Dense(10,softmax,name=dense2)",
        "case1",
    )


def case2() -> ModelDescription:
    """Case 2: the last convolution has 10 filters, then global average pooling and softmax."""
    return parse_compact(
        _features(32, 10) + " GlobalAveragePooling2D(name=gap) Softmax(name=softmax)", "case2"
    )


def case3() -> ModelDescription:
    """Case 3: global average pooling of 64 maps, then a Dense layer of 10."""
    return parse_compact(
        _features(16, 64) + " GlobalAveragePooling2D(name=gap) Dense(10,softmax,name=dense)",
        "case3",
    )


MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the training images, the usual constants


def speedrun(width1: int = 32, width2: int = 64) -> ModelDescription:
    """The speedrun network (:mod:`cnnlab.train.speedrun`), inputs normalised inside."""
    scale, offset = 1 / MNIST_STD, -MNIST_MEAN / MNIST_STD
    return parse_compact(
        f"Input(28,28,1) Rescaling({scale!r},{offset!r},name=normalise) "
        f"ZeroPadding2D(2,name=pad1) Conv2D({width1},5,2,name=conv1) MaxPooling2D(2,name=pool1) "
        f"ReLU(name=relu1) Conv2D({width2},3,same,use_bias=false,name=conv2) "
        "MaxPooling2D(2,name=pool2) BatchNormalization(epsilon=1e-5,momentum=0.9,name=bn2) "
        "ReLU(name=relu2) Flatten(name=flatten) Dense(10,softmax,name=dense)",
        "speedrun",
    )


# Templates: networks that adapt to the data. Each takes (input_shape, classes) and writes
# Input(*input_shape) ... Dense(classes); the CLI resolves them once the dataset is loaded
# (:func:`resolve_for`). Called without arguments they build for a default dataset, so
# ``resolve("fcn1d")`` and ``cnnlab summary --model fcn1d`` work without data.
Shape = tuple[int, ...]
UCR_DEFAULT: Shape = (150, 1)  # GunPoint: 150 steps, 1 channel, 2 classes
CLIP_DEFAULT: Shape = (8, 40, 40, 1)  # moving digits: 8 frames of 40x40


def _input(shape: Shape, rank: int, model: str) -> str:
    if len(shape) != rank + 1 or min(shape) < 1:
        want = {1: "(T, C): a time series", 3: "(T, H, W, C): a clip"}[rank]
        got = "x".join(map(str, shape))
        raise CnnlabError(f"{model} takes inputs of {want}, got {got}")
    return f"Input({','.join(str(int(s)) for s in shape)})"


def _check_classes(classes: int, model: str) -> int:
    if int(classes) < 2:
        raise CnnlabError(f"{model} needs at least 2 classes, got {classes}")
    return int(classes)


def _conv1d_blocks(widths: tuple[int, ...], kernels: tuple[int, ...]) -> str:
    # BatchNormalization momentum 0.9, not Keras' 0.99: a UCR training set gives 2-15 steps
    # an epoch, and with 0.99 the moving statistics lag the weights by ~30 epochs; the
    # network then scores chance in inference mode while it fits in training mode (GunPoint,
    # seed 0, 150 epochs: 46% validation accuracy, 100% once the statistics are recomputed).
    return " ".join(
        f"Conv1D({w},{k},same,name=conv{i}) BatchNormalization(momentum=0.9,name=bn{i}) "
        f"ReLU(name=relu{i})"
        for i, (w, k) in enumerate(zip(widths, kernels, strict=True), start=1)
    )


def fcn1d(input_shape: Shape = UCR_DEFAULT, classes: int = 2) -> ModelDescription:
    """Wang et al. (2017)'s fully convolutional network for time series: three blocks of
    Conv1D + BatchNormalization + ReLU (128, 256, 128 filters; kernels 8, 5, 3; ``same``),
    global average pooling over time, a Dense softmax. Its class activation map is exact."""
    k = _check_classes(classes, "fcn1d")
    return parse_compact(
        f"{_input(input_shape, 1, 'fcn1d')} {_conv1d_blocks((128, 256, 128), (8, 5, 3))} "
        f"GlobalAveragePooling1D(name=gap) Dense({k},softmax,name=dense)",
        "fcn1d",
    )


def fcn1d_small(input_shape: Shape = UCR_DEFAULT, classes: int = 2) -> ModelDescription:
    """fcn1d at a quarter of the width (32, 64, 32 filters): about 1/14 of the parameters."""
    k = _check_classes(classes, "fcn1d_small")
    return parse_compact(
        f"{_input(input_shape, 1, 'fcn1d_small')} {_conv1d_blocks((32, 64, 32), (8, 5, 3))} "
        f"GlobalAveragePooling1D(name=gap) Dense({k},softmax,name=dense)",
        "fcn1d_small",
    )


def _clip_net(name: str, t: int, widths: tuple[int, int, int]) -> Callable[..., ModelDescription]:
    # Three Conv3D blocks with kernels t x 3 x 3 (t = 1: each frame alone), 2x2 spatial
    # pooling after the first two, global average pooling over time and space, a Dense.
    def build(input_shape: Shape = CLIP_DEFAULT, classes: int = 2) -> ModelDescription:
        k = _check_classes(classes, name)
        w1, w2, w3 = widths
        return parse_compact(
            f"{_input(input_shape, 3, name)} "
            f"Conv3D({w1},{t}x3x3,same,relu,name=conv1) MaxPooling3D(1x2x2,name=pool1) "
            f"Conv3D({w2},{t}x3x3,same,relu,name=conv2) MaxPooling3D(1x2x2,name=pool2) "
            f"Conv3D({w3},{t}x3x3,same,relu,name=conv3) "
            f"GlobalAveragePooling3D(name=gap) Dense({k},softmax,name=dense)",
            name,
        )

    return build


moving3d = _clip_net("moving3d", 3, (8, 16, 16))
moving3d.__doc__ = """A small 3-D CNN for clips: Conv3D kernels of 3 frames x 3 x 3 pixels read
motion (the order of frames), then global average pooling and a Dense softmax."""
perframe2d = _clip_net("perframe2d", 1, (16, 24, 32))
perframe2d.__doc__ = """moving3d's per-frame baseline of similar size: kernels 1 x 3 x 3, so each
frame is processed alone (a 2-D CNN applied frame by frame), then global average pooling
over time and space and a Dense. The Dense is affine and the pooling a mean over frames of
per-frame means, so the logits are the mean over frames of the per-frame 2-D CNN's logits."""

TEMPLATES: dict[str, Callable[..., ModelDescription]] = {
    "fcn1d": fcn1d,
    "fcn1d_small": fcn1d_small,
    "moving3d": moving3d,
    "perframe2d": perframe2d,
}

REGISTRY: dict[str, Callable[[], ModelDescription]] = {
    "case1": case1,
    "case2": case2,
    "case3": case3,
    "speedrun": speedrun,
    **TEMPLATES,
}
CASES = ("case1", "case2", "case3")


def case_name(case: str | int) -> str:
    """Normalise ``1``, ``"1"`` or ``"case1"`` to a chapter case's name; ValueError otherwise."""
    name = f"case{case}" if str(case).isdigit() else str(case)
    if name not in CASES:
        raise ValueError(f"unknown case {case!r}; choose one of 1, 2, 3")
    return name


def get(name: str) -> ModelDescription:
    """The registered description ``name``; CnnlabError listing the names if unknown."""
    if name not in REGISTRY:
        raise CnnlabError(f"unknown model {name!r}; registered: {', '.join(REGISTRY)}")
    return REGISTRY[name]()


def resolve(spec: str) -> ModelDescription:
    """A registry name, a ``.json``/``.yaml`` file, or a one-line description."""
    if spec in REGISTRY:
        return get(spec)
    if looks_compact(spec):
        return parse_compact(spec, "model")
    path = Path(spec)
    if path.suffix.lower() in SUFFIXES or path.exists():
        return load_description(path)
    raise CnnlabError(
        f"unknown model {spec!r}: not a registered name ({', '.join(REGISTRY)}), "
        "a .json/.yaml file, or a one-line description such as 'Input(28,28,1) ...'"
    )


def resolve_for(spec: str, input_shape: Shape, classes: int) -> ModelDescription:
    """:func:`resolve`, with a template (``fcn1d``, ``moving3d``, ...) built for the data:
    ``Input(*input_shape)`` and ``Dense(classes)``. Fixed networks are returned as they are."""
    if spec in TEMPLATES:
        return TEMPLATES[spec](tuple(int(s) for s in input_shape), int(classes))
    return resolve(spec)

"""The model registry: networks chosen by name, each registered where it is written.

The chapter's three cases and the speedrun network are written in the description language,
layer for layer as the chapter's Keras code (section 14.3). *Templates* build themselves for
the data: they take ``(input_shape, classes)`` and write ``Input(*input_shape) ...
Dense(classes)``; the CLI and ``fit`` resolve them once the dataset is loaded
(:func:`resolve_for`). Called without arguments they build for a default dataset, so
``resolve("fcn1d")`` and ``cnnlab summary --model fcn1d`` work without data. Users' own
networks come from files or one-line descriptions through :func:`resolve`.

Every builder is registered by :func:`register_model` on its definition; nothing lists them
again (:mod:`cnnlab.models.zoo` holds the templates beyond the chapter; the package imports
it, so the registry is complete once ``cnnlab.models`` is).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cnnlab.errors import CnnlabError
from cnnlab.models.compact import looks_compact, parse_compact
from cnnlab.models.description import ModelDescription
from cnnlab.models.files import SUFFIXES, load_description

Builder = Callable[..., ModelDescription]
B = TypeVar("B", bound=Builder)
REGISTRY: dict[str, Builder] = {}  # name -> builder (no arguments: the default build)
TEMPLATES: dict[str, Builder] = {}  # the builders that take (input_shape, classes)
CASES = ("case1", "case2", "case3")
Shape = tuple[int, ...]


def register_model(name: str, *, template: bool = False) -> Callable[[B], B]:
    """Decorator: ``builder`` is the network ``name``; ``template``: it takes
    ``(input_shape, classes)`` and builds for the data."""

    def add(builder: B) -> B:
        if name in REGISTRY:
            raise AssertionError(f"model {name!r} registered twice")
        REGISTRY[name] = builder
        if template:
            TEMPLATES[name] = builder
        return builder

    return add


def _features(c1: int, c2: int) -> str:
    # the chapter's feature extractor: two 3x3 ReLU convolutions, each max-pooled 2x2
    return (
        f"Input(28,28,1) Conv2D({c1},3,relu,name=conv1) MaxPooling2D(2,name=pool1) "
        f"Conv2D({c2},3,relu,name=conv2) MaxPooling2D(2,name=pool2)"
    )


@register_model("case1")
def case1() -> ModelDescription:
    """Case 1: the flattened feature maps into two Dense layers, with dropout 0.25."""
    return parse_compact(
        _features(16, 64) + " Flatten(name=flatten) Dropout(0.25,name=dropout1) "
        "Dense(32,relu,name=dense1) Dropout(0.25,name=dropout2) Dense(10,softmax,name=dense2)",
        "case1",
    )


@register_model("case2")
def case2() -> ModelDescription:
    """Case 2: the last convolution has 10 filters, then global average pooling and softmax."""
    return parse_compact(
        _features(32, 10) + " GlobalAveragePooling2D(name=gap) Softmax(name=softmax)", "case2"
    )


@register_model("case3")
def case3() -> ModelDescription:
    """Case 3: global average pooling of 64 maps, then a Dense layer of 10."""
    return parse_compact(
        _features(16, 64) + " GlobalAveragePooling2D(name=gap) Dense(10,softmax,name=dense)",
        "case3",
    )


MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the training images, the usual constants


@register_model("speedrun")
def speedrun(width1: int = 32, width2: int = 64) -> ModelDescription:
    """The speedrun network (:mod:`cnnlab.train.speedrun`), raw pixels normalised inside:
    ``Rescaling(1 / (255 std), -mean / std)`` first, so it takes 0-255 pixels, as a Keras
    network beginning with Rescaling does (cnnlab.data.scaling)."""
    scale, offset = 1 / (255 * MNIST_STD), -MNIST_MEAN / MNIST_STD
    return parse_compact(
        f"Input(28,28,1) Rescaling({scale!r},{offset!r},name=normalise) "
        f"ZeroPadding2D(2,name=pad1) Conv2D({width1},5,2,name=conv1) MaxPooling2D(2,name=pool1) "
        f"ReLU(name=relu1) Conv2D({width2},3,same,use_bias=false,name=conv2) "
        "MaxPooling2D(2,name=pool2) BatchNormalization(epsilon=1e-5,momentum=0.9,name=bn2) "
        "ReLU(name=relu2) Flatten(name=flatten) Dense(10,softmax,name=dense)",
        "speedrun",
    )


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


def is_template(spec: str) -> bool:
    return spec in TEMPLATES


def resolve_for(spec: str, input_shape: Shape, classes: int) -> ModelDescription:
    """:func:`resolve`, with a template (``fcn1d``, ``resnet1d``, ``smallcnn``, ...) built for
    the data: ``Input(*input_shape)`` and ``Dense(classes)``. Fixed networks are returned as
    they are."""
    if is_template(spec):
        return TEMPLATES[spec](tuple(int(s) for s in input_shape), int(classes))
    return resolve(spec)

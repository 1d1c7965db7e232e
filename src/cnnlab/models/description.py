"""A network as data: a typed, serialisable, shape-checked sequential CNN description.

A :class:`ModelDescription` is an input shape (channels-last, without the batch axis) and
a list of layers from :mod:`cnnlab.models.layers`. It is written

- in Python: ``ModelDescription.build("net", (28, 28, 1), [("Conv2D", {...}), ...])``;
- as JSON or YAML: ``{"name": ..., "input_shape": [28, 28, 1], "layers": [...]}``, each layer
  either ``{"class_name": "Conv2D", "filters": 16, ...}`` or ``{"Conv2D": {"filters": 16}}``;
- in one line (:mod:`cnnlab.models.compact`): ``"Input(28,28,1) Conv2D(16,3,relu) ..."``.

Shapes are inferred, and every layer validated, when the description is made: an error
names the layer and the problem (``layer 4 (MaxPooling2D): input 1x1 is smaller than
pool_size 2x2``). Everything else in cnnlab (the PyTorch module, the summary, the NumPy
engine, receptive fields, explain, Keras import and ONNX export) derives from it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from cnnlab.models import layers as L
from cnnlab.models.layers import DescriptionError, Layer

FORMAT = "cnnlab-model-1"
MAX_LAYERS = 256
MAX_UNITS = 1 << 27  # values in one example's activation (512 MiB of float32)
MAX_PARAMS = 1 << 27
Shape = tuple[int, ...]


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


@dataclass(frozen=True)
class LayerInfo:
    """What shape inference knows of one layer: its input and output shape, its weights."""

    index: int  # 1-based position in the description (Input not counted)
    layer: Layer
    in_shape: Shape
    out_shape: Shape
    trainable: int  # trainable parameters
    non_trainable: int  # e.g. BatchNormalization's moving mean and variance

    @property
    def where(self) -> str:
        return f"layer {self.index} ({self.layer.class_name})"


@dataclass(frozen=True)
class ModelDescription:
    """A sequential CNN: ``input_shape`` (channels-last) and ``layers``; validated on creation."""

    name: str
    input_shape: Shape
    layers: tuple[Layer, ...]
    info: tuple[LayerInfo, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "info", tuple(infer(self.input_shape, self.layers)))

    # ------------------------------------------------------------ construction

    @classmethod
    def build(
        cls, name: str, input_shape: Sequence[int], layers: Iterable[tuple[str, Mapping[str, Any]]]
    ) -> ModelDescription:
        """From Python: ``layers`` holds (Keras class name, arguments) pairs."""
        items = [{"class_name": c, **dict(a)} for c, a in layers]
        return cls.from_dict({"name": name, "input_shape": list(input_shape), "layers": items})

    @classmethod
    def from_dict(cls, data: Any, default_name: str = "model") -> ModelDescription:
        """From the JSON/YAML form (see the module docstring); DescriptionError if malformed."""
        if not isinstance(data, Mapping):
            raise DescriptionError(f"a model description is a mapping, got {type(data).__name__}")
        unknown = set(data) - {"format", "name", "input_shape", "layers"}
        if unknown:
            raise DescriptionError(
                f"unknown key {sorted(unknown)[0]!r} in the model description "
                "(it takes name, input_shape and layers)"
            )
        if data.get("format", FORMAT) != FORMAT:
            raise DescriptionError(f"unsupported model description format {data.get('format')!r}")
        name = data.get("name", default_name)
        if not isinstance(name, str) or not L.NAME_PATTERN.match(name):
            raise DescriptionError(f"model name must be a short identifier, got {name!r}")
        raw = data.get("layers")
        if not isinstance(raw, list) or not raw:
            raise DescriptionError("a model description needs a non-empty list of layers")
        if len(raw) > MAX_LAYERS + 1:
            raise DescriptionError(f"too many layers ({len(raw)}; at most {MAX_LAYERS})")
        items = [_split(item, i) for i, item in enumerate(raw)]
        shape = data.get("input_shape")
        if items and items[0][0] in ("Input", "InputLayer"):
            cls_name, args, _ = items.pop(0)
            if shape is not None:
                raise DescriptionError("give the input shape once: input_shape or an Input layer")
            unknown = set(args) - {"shape"}
            if unknown:
                raise DescriptionError(f"Input: unknown argument {sorted(unknown)[0]!r}")
            shape = args.get("shape")
        input_shape = _input_shape(shape)
        built: list[Layer] = []
        taken: set[str] = set()
        for i, (cls_name, args, given) in enumerate(items, start=1):
            where = f"layer {i} ({cls_name})"
            layer_name = given if given is not None else L.default_name(str(cls_name), taken)
            if not isinstance(layer_name, str) or not L.NAME_PATTERN.match(layer_name):
                raise DescriptionError(
                    f"{where}: name must be a short identifier (letters, digits, _ and -), "
                    f"got {given!r}"
                )
            if layer_name in L.RESERVED_NAMES or hasattr(nn_module_attributes(), layer_name):
                raise DescriptionError(f"{where}: the name {layer_name!r} is reserved")
            if layer_name in taken:
                raise DescriptionError(f"{where}: the name {layer_name!r} is used twice")
            taken.add(layer_name)
            built.append(L.parse_layer(cls_name, args, layer_name, where))
        return cls(name, input_shape, tuple(built))

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON form: every argument explicit, every layer named."""
        return {
            "format": FORMAT,
            "name": self.name,
            "input_shape": list(self.input_shape),
            "layers": [layer.to_dict() for layer in self.layers],
        }

    def renamed(self, name: str) -> ModelDescription:
        return ModelDescription(name, self.input_shape, self.layers)

    # ------------------------------------------------------------ derived facts

    @property
    def output_shape(self) -> Shape:
        return self.info[-1].out_shape if self.info else self.input_shape

    @property
    def rank(self) -> int:
        """Spatial axes of the input: 1 (series), 2 (images) or 3 (videos, volumes)."""
        return len(self.input_shape) - 1

    @property
    def params(self) -> int:
        return sum(i.trainable + i.non_trainable for i in self.info)

    @property
    def trainable_params(self) -> int:
        return sum(i.trainable for i in self.info)

    @property
    def classes(self) -> int:
        """Number of classes of a classifier (a flat softmax output); DescriptionError if not."""
        out = self.output_shape
        last = self.layers[-1] if self.layers else None
        softmax = isinstance(last, L.Softmax) or (
            isinstance(last, L.Dense | L.Activation) and last.activation == "softmax"
        )
        if len(out) != 1 or not softmax:
            raise DescriptionError(
                f"model {self.name!r} is not a classifier: its last layer must give flat "
                f"class probabilities (a Dense with activation softmax, or Softmax), "
                f"it gives {_fmt(out)}"
            )
        return out[0]


@cache
def nn_module_attributes() -> object:
    """A plain ``torch.nn.Sequential``: layer names must not shadow its attributes."""
    from torch import nn

    return nn.Sequential()


def _split(item: Any, i: int) -> tuple[str, dict[str, Any], Any]:
    """(class name, arguments, given name) from either layer form."""
    where = f"layer {i}" if i else "first layer"
    if not isinstance(item, Mapping):
        raise DescriptionError(f"{where}: a layer is a mapping, got {type(item).__name__}")
    if "class_name" in item:
        if not isinstance(item["class_name"], str):
            raise DescriptionError(
                f"{where}: a layer needs a class name, got {item['class_name']!r}"
            )
        args = {k: v for k, v in item.items() if k not in ("class_name", "name")}
        return item["class_name"], args, item.get("name")
    if len(item) == 1:
        ((cls_name, args),) = item.items()
        args = {} if args is None else args
        if not isinstance(args, Mapping):
            raise DescriptionError(f"{where} ({cls_name}): arguments must be a mapping")
        rest = {k: v for k, v in args.items() if k != "name"}
        return str(cls_name), rest, args.get("name")
    raise DescriptionError(f"{where}: give class_name, or one key naming the layer class")


def _input_shape(shape: Any) -> Shape:
    if not isinstance(shape, list | tuple) or not 1 <= len(shape) <= 4:
        raise DescriptionError(
            f"input_shape must list 1 to 4 sizes (channels last, no batch axis), got {shape!r}"
        )
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise DescriptionError(f"input_shape must hold positive whole numbers, got {shape!r}")
    if math.prod(shape) > MAX_UNITS:
        raise DescriptionError(f"input_shape {_fmt(shape)} is too large")
    return tuple(int(s) for s in shape)


# ---------------------------------------------------------------- shape inference


def _spatial(where: str, layer: Layer, shape: Shape, rank: int) -> None:
    if len(shape) != rank + 1:
        raise DescriptionError(
            f"{where}: needs a {rank}-D input with channels ({rank + 1} axes), got {_fmt(shape)}"
            + (" (flattened already?)" if len(shape) == 1 else "")
        )


def _window(where: str, n: Shape, k: Shape, s: Shape, d: Shape, pad: str, what: str) -> Shape:
    out = []
    for size, kk, ss, dd in zip(n, k, s, d, strict=True):
        eff = (kk - 1) * dd + 1
        if pad == "same":
            out.append(-(-size // ss))
        elif size < eff:
            dilated = f" (dilated: {_fmt([(x - 1) * y + 1 for x, y in zip(k, d, strict=True)])})"
            raise DescriptionError(
                f"{where}: input {_fmt(n)} is smaller than {what} {_fmt(k)}"
                + (dilated if max(d) > 1 else "")
            )
        else:
            out.append((size - eff) // ss + 1)
    return tuple(out)


def _step(where: str, layer: Layer, shape: Shape) -> tuple[Shape, int, int]:
    """(output shape, trainable, non-trainable parameters) of ``layer`` on ``shape``."""
    if isinstance(layer, L.Conv):
        _spatial(where, layer, shape, layer.rank)
        spatial = _window(
            where,
            shape[:-1],
            layer.kernel_size,
            layer.strides,
            layer.dilation_rate,
            layer.padding,
            "the kernel",
        )
        weights = math.prod(layer.kernel_size) * shape[-1] * layer.filters
        return (*spatial, layer.filters), weights + layer.filters * layer.use_bias, 0
    if isinstance(layer, L.Pool):
        _spatial(where, layer, shape, layer.rank)
        ones = (1,) * layer.rank
        spatial = _window(
            where, shape[:-1], layer.pool_size, layer.strides, ones, layer.padding, "pool_size"
        )
        return (*spatial, shape[-1]), 0, 0
    if isinstance(layer, L.GlobalPool):
        _spatial(where, layer, shape, layer.rank)
        return (shape[-1],), 0, 0
    if isinstance(layer, L.ZeroPadding):
        _spatial(where, layer, shape, layer.rank)
        padded = tuple(n + a + b for n, (a, b) in zip(shape[:-1], layer.padding, strict=True))
        return (*padded, shape[-1]), 0, 0
    if isinstance(layer, L.Flatten):
        return (math.prod(shape),), 0, 0
    if isinstance(layer, L.Dense):
        if len(shape) != 1:
            raise DescriptionError(
                f"{where}: needs a flat input, got {_fmt(shape)}; add Flatten or a global "
                "pooling layer before it"
            )
        return (layer.units,), shape[0] * layer.units + layer.units * layer.use_bias, 0
    if isinstance(layer, L.BatchNormalization):
        c = shape[-1]
        return shape, c * (layer.center + layer.scale), 2 * c
    return shape, 0, 0  # Dropout, Activation, ReLU, Softmax, Rescaling


def infer(input_shape: Shape, layers: Sequence[Layer]) -> list[LayerInfo]:
    """Shape inference and validation, layer by layer; DescriptionError names the layer."""
    out: list[LayerInfo] = []
    shape = input_shape
    total = 0
    for i, layer in enumerate(layers, start=1):
        where = f"layer {i} ({layer.class_name})"
        new, trainable, fixed = _step(where, layer, shape)
        if math.prod(new) > MAX_UNITS:
            raise DescriptionError(f"{where}: output {_fmt(new)} is too large")
        total += trainable + fixed
        if total > MAX_PARAMS:
            raise DescriptionError(f"{where}: the network has too many parameters ({total:,})")
        out.append(LayerInfo(i, layer, shape, new, trainable, fixed))
        shape = new
    return out

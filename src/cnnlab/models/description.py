"""A network as data: a typed, serialisable, shape-checked graph of named layers.

A :class:`ModelDescription` is an input shape (channels-last, without the batch axis), a list
of layers from :mod:`cnnlab.models.layers`, each with the names of the layers it reads
(``"input"``: the network's input), and the layer whose output is the network's. A chain,
every layer reading the one before, is the short form, and what most networks are. It is
written

- in Python: ``ModelDescription.build("net", (28, 28, 1), [("Conv2D", {...}), ...])``;
- as JSON or YAML: ``{"name": ..., "input_shape": [28, 28, 1], "layers": [...]}``, each layer
  either ``{"class_name": "Conv2D", "filters": 16, ...}`` or ``{"Conv2D": {"filters": 16}}``;
  a layer may add ``name:`` and ``inputs: [a, b]`` (default: the layer before it), and the
  description ``outputs: [name]`` (default: the last layer);
- in one line (:mod:`cnnlab.models.compact`): ``"Input(28,28,1) Conv2D(16,3,relu) ..."``.

The graph and every layer are validated, and shapes inferred, when the description is made:
an error names the layer and the problem (``layer 4 (MaxPooling2D): input 1x1 is smaller
than pool_size 2x2``; a cycle, a missing input, merge inputs of different shapes, an unused
layer, a name used twice). Everything else in cnnlab derives from it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Any

from cnnlab.errors import short
from cnnlab.models import graph
from cnnlab.models import layers as L
from cnnlab.models.layers import INPUT, DescriptionError, Layer
from cnnlab.models.layers.base import fmt

FORMAT = "cnnlab-model-1"
MAX_LAYERS = 256
MAX_UNITS = 1 << 27  # values in one example's activation (512 MiB of float32)
MAX_PARAMS = 1 << 27
Shape = tuple[int, ...]


@dataclass(frozen=True)
class LayerInfo:
    """What shape inference knows of one layer: its inputs and their shapes, its output
    shape, its weights."""

    index: int  # 1-based position in the description (Input not counted)
    layer: Layer
    inputs: tuple[str, ...]  # the layers it reads, by name; "input" is the network's input
    in_shapes: tuple[Shape, ...]
    out_shape: Shape
    trainable: int  # trainable parameters
    non_trainable: int  # e.g. BatchNormalization's moving mean and variance

    @property
    def in_shape(self) -> Shape:
        """The (first) input's shape."""
        return self.in_shapes[0]

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def where(self) -> str:
        return f"layer {self.index} ({self.layer.class_name})"


@dataclass(frozen=True)
class LogitPlan:
    """How the network's logits are computed: the final softmax goes with the loss.

    A final ``Softmax`` or ``Activation("softmax")`` layer is not computed (``folded``), the
    logits are its input; a final layer with a softmax ``activation`` (a Dense) is computed
    with a linear one. One rule, read by the PyTorch module, the NumPy engine and the fast
    engine alike.
    """

    layers: tuple[Layer, ...]  # computed, in order; the linear copy where one is needed
    output: str  # the layer whose output is the logits ("input" for no layer at all)
    folded: tuple[str, ...]  # layers left out: the softmax the loss computes


@dataclass(frozen=True)
class ModelDescription:
    """A CNN as a graph of named layers (a chain by default); validated on creation."""

    name: str
    input_shape: Shape
    layers: tuple[Layer, ...]
    # per layer, the names of the layers it reads; None: a chain
    inputs: tuple[tuple[str, ...], ...] | None = None
    output: str | None = None  # the layer whose output is the network's; None: the last
    info: tuple[LayerInfo, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.layers:
            raise DescriptionError("a model description needs at least one layer")
        names = [layer.name for layer in self.layers]
        inputs = self.inputs if self.inputs is not None else graph.chain_inputs(names)
        output = self.output if self.output is not None else names[-1]
        arity = [type(x).N_INPUTS for x in self.layers]
        order = graph.check(names, inputs, output, arity, [x.class_name for x in self.layers])
        if order != list(range(len(names))):  # listed out of order: run them in an order
            layers = tuple(self.layers[i] for i in order)
            inputs = tuple(inputs[i] for i in order)
            object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "inputs", tuple(tuple(i) for i in inputs))
        object.__setattr__(self, "output", output)
        object.__setattr__(self, "info", tuple(infer(self.input_shape, self.layers, inputs)))

    # ------------------------------------------------------------ construction

    @classmethod
    def build(
        cls, name: str, input_shape: Sequence[int], layers: Iterable[tuple[str, Mapping[str, Any]]]
    ) -> ModelDescription:
        """From Python: ``layers`` holds (Keras class name, arguments) pairs (a chain; add
        ``name`` and ``inputs`` to an argument mapping for a graph)."""
        items = [{"class_name": c, **dict(a)} for c, a in layers]
        return cls.from_dict({"name": name, "input_shape": list(input_shape), "layers": items})

    @classmethod
    def from_dict(cls, data: Any, default_name: str = "model") -> ModelDescription:
        """From the JSON/YAML form (see the module docstring); DescriptionError if malformed."""
        if not isinstance(data, Mapping):
            raise DescriptionError(f"a model description is a mapping, got {type(data).__name__}")
        unknown = set(data) - {"format", "name", "input_shape", "layers", "outputs"}
        if unknown:
            raise DescriptionError(
                f"unknown key {short(sorted(map(str, unknown))[0], 64)} in the model "
                "description (it takes name, input_shape, layers and outputs)"
            )
        if data.get("format", FORMAT) != FORMAT:
            raise DescriptionError(
                f"unsupported model description format {short(str(data.get('format')), 64)}"
            )
        name = data.get("name", default_name)
        if not isinstance(name, str) or not L.NAME_PATTERN.match(name):
            raise DescriptionError(f"model name must be a short identifier, got {short(name)}")
        raw = data.get("layers")
        if not isinstance(raw, list) or not raw:
            raise DescriptionError("a model description needs a non-empty list of layers")
        if len(raw) > MAX_LAYERS + 1:
            raise DescriptionError(f"too many layers ({len(raw)}; at most {MAX_LAYERS})")
        items = [graph.split_item(item, i) for i, item in enumerate(raw)]
        shape, alias = data.get("input_shape"), None
        if items and items[0].class_name in ("Input", "InputLayer"):
            first = items.pop(0)
            if shape is not None:
                raise DescriptionError("give the input shape once: input_shape or an Input layer")
            unknown_args = set(first.args) - {"shape"}
            if unknown_args:
                # keys may mix ints and strings (YAML's 1: and a:): sort their text
                first_key = sorted(map(str, unknown_args))[0]
                raise DescriptionError(f"Input: unknown argument {short(first_key, 64)}")
            shape, alias = first.args.get("shape"), first.name
        input_shape = _input_shape(shape)
        built: list[Layer] = []
        taken: set[str] = set()
        for i, item in enumerate(items, start=1):
            where = f"layer {i} ({str(item.class_name)[:64]})"
            if item.class_name not in L.LAYERS:  # before a default name is made from it
                L.parse_layer(item.class_name, {}, "layer", where)  # raises, with a hint
            layer_name = _layer_name(item.name, item.class_name, taken, where)
            taken.add(layer_name)
            built.append(L.parse_layer(item.class_name, item.args, layer_name, where))
        inputs = graph.resolve_inputs(items, [b.name for b in built], alias)
        output = graph.resolve_output(data.get("outputs"), [b.name for b in built])
        if all(i.inputs is None for i in items) and output == built[-1].name:
            return cls(name, input_shape, tuple(built))
        return cls(name, input_shape, tuple(built), inputs, output)

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON form: every argument explicit, every layer named; ``inputs``
        where a layer reads anything but the layer before it, ``outputs`` where the output
        is not the last layer (a chain's form is unchanged)."""
        layers = []
        previous = INPUT
        for info in self.info:
            item = info.layer.to_dict()
            if info.inputs != (previous,):
                item["inputs"] = list(info.inputs)
            layers.append(item)
            previous = info.layer.name
        out: dict[str, Any] = {
            "format": FORMAT,
            "name": self.name,
            "input_shape": list(self.input_shape),
            "layers": layers,
        }
        if self.output != self.layers[-1].name:
            out["outputs"] = [self.output]
        return out

    def renamed(self, name: str) -> ModelDescription:
        return ModelDescription(name, self.input_shape, self.layers, self.inputs, self.output)

    # ------------------------------------------------------------ the graph

    @cached_property
    def is_chain(self) -> bool:
        """Whether every layer reads the layer before it and the last one is the output."""
        names = [x.name for x in self.layers]
        return self.inputs == graph.chain_inputs(names) and self.output == names[-1]

    @cached_property
    def by_name(self) -> dict[str, LayerInfo]:
        return {i.layer.name: i for i in self.info}

    @cached_property
    def consumers(self) -> dict[str, tuple[str, ...]]:
        """For the input and each layer, the layers that read it, in order."""
        out: dict[str, list[str]] = {INPUT: [], **{x.name: [] for x in self.layers}}
        for info in self.info:
            for source in dict.fromkeys(info.inputs):
                out[source].append(info.layer.name)
        return {k: tuple(v) for k, v in out.items()}

    # ------------------------------------------------------------ derived facts

    @property
    def output_info(self) -> LayerInfo:
        return self.by_name[str(self.output)]

    @property
    def output_shape(self) -> Shape:
        return self.output_info.out_shape

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
        out, last = self.output_shape, self.output_info.layer
        if len(out) != 1 or last.activation_name != "softmax":
            raise DescriptionError(
                f"model {self.name!r} is not a classifier: its output layer must give flat "
                f"class probabilities (a Dense with activation softmax, or Softmax), "
                f"it gives {fmt(out)}"
            )
        return out[0]

    @cached_property
    def logits(self) -> LogitPlan:
        """What computes the logits (see :class:`LogitPlan`)."""
        last = self.output_info
        layer = last.layer
        if layer.activation_name == "softmax" and isinstance(layer, L.Softmax | L.Activation):
            keep = tuple(x for x in self.layers if x.name != layer.name)
            return LogitPlan(keep, last.inputs[0], (layer.name,))
        if layer.activation_name == "softmax":
            linear = dataclasses.replace(layer, **{"activation": "linear"})
            swapped = tuple(linear if x.name == layer.name else x for x in self.layers)
            return LogitPlan(swapped, layer.name, ())
        return LogitPlan(self.layers, layer.name, ())


@cache
def nn_module_attributes() -> object:
    """A plain ``torch.nn.Sequential``: layer names must not shadow its attributes."""
    from torch import nn

    return nn.Sequential()


def _layer_name(given: Any, class_name: Any, taken: set[str], where: str) -> str:
    name = given if given is not None else L.default_name(str(class_name), taken)
    if not isinstance(name, str) or not L.NAME_PATTERN.match(name):
        raise DescriptionError(
            f"{where}: name must be a short identifier (letters, digits, _ and -), "
            f"got {short(name)}"
        )
    if name in L.RESERVED_NAMES or hasattr(nn_module_attributes(), name):
        raise DescriptionError(f"{where}: the name {name!r} is reserved")
    if name in taken:
        raise DescriptionError(f"{where}: the name {name!r} is used twice")
    return name


def _input_shape(shape: Any) -> Shape:
    if not isinstance(shape, list | tuple) or not 1 <= len(shape) <= 4:
        got = f"{len(shape):,} sizes" if isinstance(shape, list | tuple) else short(shape)
        raise DescriptionError(
            f"input_shape must list 1 to 4 sizes (channels last, no batch axis), got {got}"
        )
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise DescriptionError(f"input_shape must hold positive whole numbers, got {short(shape)}")
    if math.prod(shape) > MAX_UNITS:
        raise DescriptionError(f"input_shape {fmt(shape)} is too large")
    return tuple(int(s) for s in shape)


# ---------------------------------------------------------------- shape inference


def infer(
    input_shape: Shape, layers: Sequence[Layer], inputs: Sequence[Sequence[str]]
) -> list[LayerInfo]:
    """Shape inference and validation, layer by layer (in an order where every layer's
    inputs come first); DescriptionError names the layer."""
    out: list[LayerInfo] = []
    shapes: dict[str, Shape] = {INPUT: input_shape}
    total = 0
    for i, (layer, names) in enumerate(zip(layers, inputs, strict=True), start=1):
        where = f"layer {i} ({layer.class_name})"
        in_shapes = tuple(shapes[n] for n in names)
        new = layer.output_shape(in_shapes, where)
        if math.prod(new) > MAX_UNITS:
            raise DescriptionError(f"{where}: output {fmt(new)} is too large")
        weights = layer.weights(in_shapes)
        trainable = sum(w.size for w in weights if w.trainable)
        fixed = sum(w.size for w in weights if not w.trainable)
        total += trainable + fixed
        if total > MAX_PARAMS:
            raise DescriptionError(f"{where}: the network has too many parameters ({total:,})")
        out.append(LayerInfo(i, layer, tuple(names), in_shapes, new, trainable, fixed))
        shapes[layer.name] = new
    return out
